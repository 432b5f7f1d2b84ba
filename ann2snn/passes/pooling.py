"""Max pooling of spike trains, per ``maxpool=``: "gated" or "avg".

Covered: windowed max pooling (``nn.MaxPool1d/2d``, ``F.max_pool1d/2d``), adaptive and global max
pooling (``nn.AdaptiveMaxPool1d/2d``, ``F.adaptive_max_pool1d/2d``) and maxima over dimensions
(``torch.amax`` / ``Tensor.amax`` with ``dim``, ``torch.max`` / ``Tensor.max`` with ``dim``,
values and indices). "gated": each output passes the current input of the position whose running
input sum (running spike count) is largest so far, which converges to the max of the rates;
"avg": the same windows averaged (an approximation).

Max pooling commutes with ReLU, so a max pool followed only by a ReLU is first swapped behind
it (``relu(max(x)) == max(relu(x))``): the pool then sees spikes. A max pool on the input path
(before any neuron) sees time-invariant analog values and stays a plain max pool.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..analysis import describe, is_spiking, module_of, split_static
from ..errors import ConversionError
from ..report import ConversionReport
from ..temporal import GatedMaxPool
from ..temporal_ops import GatedAdaptiveMaxPool, GatedMaxReduce
from ._util import arg, finish, unique_name, where

MAXPOOL_MODES = ("gated", "avg")
_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, torch.max_pool1d: 1, torch.max_pool2d: 2}
_ADAPTIVE_FUNCTIONS = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2}
#: Meta key of max pools left as they are on the input path (``check_supported`` accepts them).
INPUT_PATH = "ann2snn_input_path_max"


def _pool_settings(gm: fx.GraphModule, node: fx.Node) -> Optional[dict]:
    """Kernel, stride, padding, dilation, ceil mode and dimensionality of a max pool node."""
    module = module_of(gm, node)
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d)):
        if module.return_indices:
            return None
        return dict(
            dims=1 if isinstance(module, nn.MaxPool1d) else 2,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            ceil_mode=module.ceil_mode,
        )
    if node.op == "call_function" and node.target in _FUNCTIONS:
        if arg(node, 6, "return_indices", False):
            return None
        kernel = arg(node, 1, "kernel_size")
        stride = arg(node, 2, "stride") or kernel
        return dict(
            dims=_FUNCTIONS[node.target],
            kernel_size=kernel,
            stride=stride,
            padding=arg(node, 3, "padding", 0),
            dilation=arg(node, 4, "dilation", 1),
            ceil_mode=bool(arg(node, 5, "ceil_mode", False)),
        )
    return None


def _adaptive_settings(gm: fx.GraphModule, node: fx.Node) -> Optional[dict]:
    """Dimensionality and output size of an adaptive max pool without indices."""
    module = module_of(gm, node)
    if isinstance(module, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
        if module.return_indices:
            return None
        return dict(dims=1 if isinstance(module, nn.AdaptiveMaxPool1d) else 2, output_size=module.output_size)
    if node.op == "call_function" and node.target in _ADAPTIVE_FUNCTIONS and not arg(node, 2, "return_indices", False):
        return dict(dims=_ADAPTIVE_FUNCTIONS[node.target], output_size=arg(node, 1, "output_size"))
    return None


def _reduce_settings(node: fx.Node) -> Optional[dict]:
    """Dimensions, keepdim and whether indices are returned, of a max over given dimensions other
    than the batch dimension (``torch.amax``, ``torch.max(x, dim)`` and their method forms)."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None) if node.target in (torch.amax, torch.max) else None
    if name not in ("amax", "max") or not node.args:
        return None
    dim, keepdim = arg(node, 1, "dim"), arg(node, 2, "keepdim", False)
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims) or 0 in dims or not isinstance(keepdim, bool):
        return None  # a max over everything, over the batch, or of two tensors: not a pooling
    if name == "max" and len(dims) != 1:
        return None
    return dict(dim=dims, keepdim=keepdim, with_indices=name == "max")


def max_site(gm: fx.GraphModule, node: fx.Node) -> Optional[tuple[str, dict]]:
    """("window" | "adaptive" | "reduce", settings) of a max-pooling node, or None."""
    for kind, settings in (("window", _pool_settings(gm, node)), ("adaptive", _adaptive_settings(gm, node))):
        if settings is not None:
            return kind, settings
    if node.op in ("call_function", "call_method"):
        settings = _reduce_settings(node)
        if settings is not None:
            return "reduce", settings
    return None


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


def _avg_pool(settings: dict, node: fx.Node) -> nn.Module:
    if settings["dilation"] not in (1, (1,), (1, 1)):
        raise ConversionError(f"maxpool='avg' cannot replace the dilated max pool at node `{node.name}` ({where(node)}); use maxpool='gated'")
    cls = nn.AvgPool1d if settings["dims"] == 1 else nn.AvgPool2d
    return cls(settings["kernel_size"], settings["stride"], settings["padding"], settings["ceil_mode"], count_include_pad=False)


def _replacement(kind: str, settings: dict, maxpool: str, node: fx.Node) -> tuple[Optional[nn.Module], str]:
    """The module that replaces a max pool seeing spikes (None: a ``torch.mean`` call), and its description."""
    if maxpool == "gated":
        pool = {"window": GatedMaxPool, "adaptive": GatedAdaptiveMaxPool, "reduce": GatedMaxReduce}[kind](**settings)
        return pool, "gated max pool (by running spike count)"
    if kind == "window":
        return _avg_pool(settings, node), "average pool"
    if kind == "adaptive":
        cls = nn.AdaptiveAvgPool1d if settings["dims"] == 1 else nn.AdaptiveAvgPool2d
        return cls(settings["output_size"]), "adaptive average pool"
    if settings["with_indices"]:
        raise ConversionError(
            f"maxpool='avg' cannot replace torch.max with indices at node `{node.name}` ({where(node) or 'top level'}): "
            "an average has no argmax; use maxpool='gated' (the default), or torch.amax if the indices are not needed"
        )
    return None, "mean over the same dimensions"


def rewrite_max_pooling(gm: fx.GraphModule, report: ConversionReport, maxpool: str) -> fx.GraphModule:
    """Rewrite every max pool that sees spikes into a gated max pool or an average pool."""
    if maxpool not in MAXPOOL_MODES:
        raise ConversionError(f"maxpool={maxpool!r} is not one of {MAXPOOL_MODES}")
    for node in list(gm.graph.nodes):
        site = max_site(gm, node)
        if site is not None and not site[1].get("with_indices") and len(node.users) == 1 and is_spiking(gm, next(iter(node.users))):
            _swap_behind_neuron(gm, node)
    _, temporal = split_static(gm)
    for node in list(gm.graph.nodes):
        site = max_site(gm, node)
        if site is None:
            continue
        kind, settings = site
        before, location = describe(gm, node), where(node)
        if node not in temporal:
            node.meta[INPUT_PATH] = True
            report.add(node.name, before, "kept: max pool on the input path, before any neuron", "carried", location)
            continue
        pool, after = _replacement(kind, settings, maxpool, node)
        with gm.graph.inserting_after(node):
            if pool is None:
                new = gm.graph.call_function(torch.mean, (node.args[0], settings["dim"]), {"keepdim": settings["keepdim"]})
                target = ""
            else:
                target = unique_name(gm, f"{node.name}_{maxpool}")
                gm.add_submodule(target, pool)
                new = gm.graph.call_module(target, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        report.add(node.name, before, f"{after}" + (f" `{target}`" if target else ""), "pool", location, module=target)
    return finish(gm)
