"""Lower every average pool whose windows tile its input with at most ``tiled_pool.MAX_WINDOW``
positions (``nn.AvgPool1d/2d``, ``F.avg_pool1d/2d`` with constant settings) to
``ann2snn.tiled_pool``'s strided-sum modules: the same values, faster on CPU, where the converted
network runs each pool on every time step. The modules subclass ``nn.AvgPool1d/2d``, so
everything that reads pooling settings (NIR export, analysis) sees an average pool; other pools
(padding, overlapping or larger windows, sizes computed in the graph) stay as they are."""

from __future__ import annotations

import torch.nn.functional as F
from torch import fx, nn

from ..analysis import describe, module_of
from ..report import ConversionReport
from ..tiled_pool import tiled_avg_pool
from ._util import arg, finish, unique_name, where

_FUNCTIONS = {F.avg_pool1d: 1, F.avg_pool2d: 2}  # F.avg_pool1d is torch.avg_pool1d
_AFTER = "kept: average pool, as strided sums (same values, faster)"


def _settings(gm: fx.GraphModule, node: fx.Node) -> dict | None:
    """The settings of an average pool node (module or function call), or None."""
    module = module_of(gm, node)
    if type(module) in (nn.AvgPool1d, nn.AvgPool2d):  # exactly: not a subclass (a lowered one, or the user's own)
        return dict(
            dims=1 if isinstance(module, nn.AvgPool1d) else 2,
            kernel_size=module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            ceil_mode=module.ceil_mode,
            count_include_pad=module.count_include_pad,
            divisor_override=getattr(module, "divisor_override", None),
        )
    if node.op == "call_function" and node.target in _FUNCTIONS and len(node.args) >= 1:
        if _computed_in_graph((node.args[1:], node.kwargs)):
            return None  # a setting computed in the graph (a global pool over the input's size)
        dims = _FUNCTIONS[node.target]
        return dict(
            dims=dims,
            kernel_size=arg(node, 1, "kernel_size"),
            stride=arg(node, 2, "stride") or arg(node, 1, "kernel_size"),
            padding=arg(node, 3, "padding", 0),
            ceil_mode=bool(arg(node, 4, "ceil_mode", False)),
            count_include_pad=bool(arg(node, 5, "count_include_pad", True)),
            divisor_override=arg(node, 6, "divisor_override") if dims == 2 else None,
        )
    return None


def _swap_module(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    """Put ``module`` at ``path`` (the converted copy's own module tree; the user's model is untouched)."""
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent), name, module)


def _computed_in_graph(arguments: object) -> bool:
    """Whether any value in (nested) call arguments is a graph node."""
    found: list[fx.Node] = []
    fx.node.map_arg(arguments, found.append)
    return bool(found)


def lower_tiled_avg_pools(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Replace every average pool with tiling windows by the equal strided-sum module: a module
    keeps its name, a function call becomes a call of a new module."""
    for node in list(gm.graph.nodes):
        settings = _settings(gm, node)
        if settings is None:
            continue
        pool = tiled_avg_pool(**settings)
        if pool is None:
            continue
        before, location = describe(gm, node), where(node)
        if node.op == "call_module":
            target = str(node.target)
            _swap_module(gm, target, pool)
        else:
            target = unique_name(gm, f"{node.name}_tiled")
            gm.add_submodule(target, pool)
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(target, (node.args[0],))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
        earlier = report.entry_for_module(target)  # a max pool that maxpool="avg" made this pool
        if earlier is not None:
            earlier.after += " (as strided sums)"
        else:
            report.add(node.name, before, f"{_AFTER} `{target}`", "carried", location, module=target)
    return finish(gm)
