"""Max pooling of spike trains, per ``maxpool=``: "gated" or "avg".

Max pooling commutes with ReLU, so a max pool followed only by a ReLU is first swapped behind
it (``relu(max(x)) == max(relu(x))``): the pool then sees spikes. A max pool on the input path
(before any neuron) sees time-invariant analog values and stays a plain max pool.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConversionError
from ..neurons import SpikingNeuron
from ..report import ConversionReport
from ..temporal import GatedMaxPool
from ._util import arg, describe, finish, module_of, unique_name, where

MAXPOOL_MODES = ("gated", "avg")
_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, torch.max_pool1d: 1, torch.max_pool2d: 2}


def _pool_settings(gm: fx.GraphModule, node: fx.Node) -> Optional[dict]:
    """Kernel, stride, padding, dilation, ceil mode and dimensionality of a max pool node."""
    module = module_of(gm, node)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        if module.return_indices:
            return None
        return dict(
            dims=1 if isinstance(module, nn.MaxPool1d) else 2, kernel_size=module.kernel_size, stride=module.stride,
            padding=module.padding, dilation=module.dilation, ceil_mode=module.ceil_mode,
        )
    if node.op == "call_function" and node.target in _FUNCTIONS:
        if arg(node, 6, "return_indices", False):
            return None
        kernel = arg(node, 1, "kernel_size")
        stride = arg(node, 2, "stride") or kernel
        return dict(
            dims=_FUNCTIONS[node.target], kernel_size=kernel, stride=stride, padding=arg(node, 3, "padding", 0),
            dilation=arg(node, 4, "dilation", 1), ceil_mode=bool(arg(node, 5, "ceil_mode", False)),
        )
    return None


def _is_neuron(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(module_of(gm, node), SpikingNeuron)


def _swap_behind_neuron(gm: fx.GraphModule, pool: fx.Node) -> fx.Node:
    """``neuron(pool(x))`` -> ``pool(neuron(x))``; returns the new pool node."""
    (neuron,) = pool.users
    with gm.graph.inserting_before(neuron):
        new_neuron = gm.graph.call_module(str(neuron.target), (pool.args[0],))
        new_pool = gm.graph.create_node(pool.op, pool.target, (new_neuron, *pool.args[1:]), dict(pool.kwargs))
    new_neuron.meta, new_pool.meta = dict(neuron.meta), dict(pool.meta)
    neuron.replace_all_uses_with(new_pool)
    gm.graph.erase_node(neuron)
    gm.graph.erase_node(pool)
    return new_pool


def _downstream_of_neurons(gm: fx.GraphModule) -> set[fx.Node]:
    temporal: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if _is_neuron(gm, node) or any(i in temporal for i in node.all_input_nodes):
            temporal.add(node)
    return temporal


def _avg_pool(settings: dict, node: fx.Node) -> nn.Module:
    if settings["dilation"] not in (1, (1,), (1, 1)):
        raise ConversionError(f"maxpool='avg' cannot replace the dilated max pool at node `{node.name}` ({where(node)}); use maxpool='gated'")
    cls = nn.AvgPool1d if settings["dims"] == 1 else nn.AvgPool2d
    return cls(settings["kernel_size"], settings["stride"], settings["padding"], settings["ceil_mode"], count_include_pad=False)


def rewrite_max_pooling(gm: fx.GraphModule, report: ConversionReport, maxpool: str) -> fx.GraphModule:
    """Rewrite every max pool that sees spikes into a gated max pool or an average pool."""
    if maxpool not in MAXPOOL_MODES:
        raise ConversionError(f"maxpool={maxpool!r} is not one of {MAXPOOL_MODES}")
    for node in list(gm.graph.nodes):
        if _pool_settings(gm, node) is not None and len(node.users) == 1 and _is_neuron(gm, next(iter(node.users))):
            _swap_behind_neuron(gm, node)
    temporal = _downstream_of_neurons(gm)
    for node in list(gm.graph.nodes):
        settings = _pool_settings(gm, node)
        if settings is None:
            continue
        before, location = describe(gm, node), where(node)
        if node not in temporal:
            report.add(node.name, before, "kept: max pool on the input path, before any neuron", "carried", location)
            continue
        pool = GatedMaxPool(**settings) if maxpool == "gated" else _avg_pool(settings, node)
        name = unique_name(gm, f"{node.name}_{maxpool}")
        gm.add_submodule(name, pool)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        after = "gated max pool (by running spike count)" if maxpool == "gated" else "average pool"
        report.add(node.name, before, f"{after} `{name}`", "pool", location)
    return finish(gm)
