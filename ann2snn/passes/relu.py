"""Every ReLU form becomes its own spiking neuron (one neuron per call site).

Recognised: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms;
capped forms ``nn.ReLU6``/``F.relu6``, ``nn.Hardtanh``/``F.hardtanh`` with ``min_val=0``, and
``clamp``/``clip``/``clamp_min`` with ``min=0`` (optionally ``max=c``) become neurons whose
threshold never exceeds the cap, so their rate is capped the same way. ``ann2snn.qcfs.QCFS``
(conversion-aware training) becomes a neuron whose threshold is its learned clip, fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..analysis import describe, module_of
from ..neurons import SpikingNeuron
from ..qcfs import QCFS
from ..report import ConversionReport
from ._util import arg, finish, unique_name, where


@dataclass(frozen=True)
class ReluSite:
    """A matched ReLU-like call: its input node, rate cap, whether it works in place, and for a
    QCFS activation its quantization levels (its cap is then its learned threshold)."""

    input: fx.Node
    cap: Optional[float]
    inplace: bool
    levels: Optional[int] = None


def _zero(value: object) -> bool:
    return isinstance(value, (int, float)) and value == 0


def _cap(value: object) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) else None


def _clamp_site(node: fx.Node, inplace: bool) -> Optional[ReluSite]:
    low, high = arg(node, 1, "min"), arg(node, 2, "max")
    if not _zero(low) or (high is not None and not isinstance(high, (int, float))):
        return None
    return ReluSite(node.args[0], _cap(high), inplace)


def _hardtanh_site(node: fx.Node, low: object, high: object, inplace: bool) -> Optional[ReluSite]:
    return ReluSite(node.args[0], float(high), inplace) if _zero(low) and isinstance(high, (int, float)) else None


_FUNCTIONS: dict[Callable, Callable[[fx.Node], Optional[ReluSite]]] = {
    F.relu: lambda n: ReluSite(n.args[0], None, bool(arg(n, 1, "inplace", False))),
    torch.relu: lambda n: ReluSite(n.args[0], None, False),
    torch.relu_: lambda n: ReluSite(n.args[0], None, True),
    F.relu6: lambda n: ReluSite(n.args[0], 6.0, bool(arg(n, 1, "inplace", False))),
    F.hardtanh: lambda n: _hardtanh_site(n, arg(n, 1, "min_val", -1.0), arg(n, 2, "max_val", 1.0), bool(arg(n, 3, "inplace", False))),
    torch.clamp: lambda n: _clamp_site(n, False),
    torch.clip: lambda n: _clamp_site(n, False),
    torch.clamp_min: lambda n: ReluSite(n.args[0], None, False) if _zero(arg(n, 1, "min")) else None,
}
_METHODS: dict[str, Callable[[fx.Node], Optional[ReluSite]]] = {
    "relu": lambda n: ReluSite(n.args[0], None, False),
    "relu_": lambda n: ReluSite(n.args[0], None, True),
    "clamp": lambda n: _clamp_site(n, False),
    "clip": lambda n: _clamp_site(n, False),
    "clamp_": lambda n: _clamp_site(n, True),
    "clip_": lambda n: _clamp_site(n, True),
    "clamp_min": lambda n: ReluSite(n.args[0], None, False) if _zero(arg(n, 1, "min")) else None,
}


#: The module forms ``match_relu`` recognises, with how each converts (for the supported-ops table).
MODULE_FORMS: dict[type, str] = {
    nn.ReLU: "spiking neuron (one per call site)",
    nn.ReLU6: "spiking neuron with its threshold capped at 6",
    nn.Hardtanh: "spiking neuron with its threshold capped at max_val (when min_val=0)",
    QCFS: "spiking neuron whose threshold is the learned QCFS clip (exact at T = levels)",
}


def match_relu(gm: fx.GraphModule, node: fx.Node) -> Optional[ReluSite]:
    """The ReLU site a node is, or None."""
    module = module_of(gm, node)
    if isinstance(module, QCFS):
        return ReluSite(node.args[0], float(module.threshold.detach()), False, module.levels)
    if isinstance(module, nn.ReLU):
        return ReluSite(node.args[0], None, module.inplace)
    if isinstance(module, nn.Hardtanh):  # includes nn.ReLU6
        return _hardtanh_site(node, module.min_val, module.max_val, module.inplace)
    if node.op == "call_function" and node.target in _FUNCTIONS:
        return _FUNCTIONS[node.target](node)
    if node.op == "call_method" and node.target in _METHODS:
        return _METHODS[node.target](node)
    return None


def relu_to_neurons(gm: fx.GraphModule, report: ConversionReport, make_neuron: Callable[[Optional[float], str], SpikingNeuron]) -> fx.GraphModule:
    """Replace each ReLU call site by a call to a new neuron module from ``make_neuron(cap, source)``.

    An in-place ReLU also changed its input tensor, so later readers of that input read the
    neuron's output instead.
    """
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        site = match_relu(gm, node)
        if site is None or not isinstance(site.input, fx.Node):
            continue
        before, location = describe(gm, node), where(node)
        name = unique_name(gm, f"{node.name}_neuron")
        neuron_module = make_neuron(site.cap, before)
        if site.levels is not None:
            neuron_module.levels = site.levels
            neuron_module.set_threshold(torch.tensor(site.cap))
        gm.add_submodule(name, neuron_module)
        with gm.graph.inserting_after(node):
            neuron = gm.graph.call_module(name, (site.input,))
        neuron.meta = dict(node.meta)
        node.replace_all_uses_with(neuron)
        if site.inplace:
            site.input.replace_all_uses_with(neuron, delete_user_cb=lambda user: user is not neuron and order.get(user, math.inf) > order[node])
        gm.graph.erase_node(node)
        cap = f", rate capped at {site.cap:g}" if site.cap is not None else ""
        if site.levels is not None:
            cap = f", threshold {site.cap:.4g} from QCFS ({site.levels} levels)"
        report.add(node.name, before, f"{type(gm.get_submodule(name)).__name__} `{name}`{cap}", "spiking", location, module=name)
    return finish(gm)
