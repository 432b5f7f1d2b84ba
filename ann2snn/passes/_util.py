"""Small helpers shared by the passes."""

from __future__ import annotations

from typing import Any

from torch import fx

from ..analysis import fresh_name
from ..trace import module_path_of, source_of


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """A call argument given either positionally or by keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def where(node: fx.Node) -> str:
    """Module path and source line of a node, for reports and error messages."""
    path, line = module_path_of(node), source_of(node)
    parts = [f"module `{path}`" if path else "", line]
    return ", ".join(p for p in parts if p)


def unique_name(gm: fx.GraphModule, base: str) -> str:
    """A submodule name not yet taken in ``gm``."""
    return fresh_name(base, lambda name: hasattr(gm, name))


def replace_with_input(node: fx.Node) -> None:
    """Remove a node whose output equals its first input (dropout, identity, softmax readout)."""
    node.replace_all_uses_with(node.args[0])
    node.graph.erase_node(node)


def is_in_place(node: fx.Node) -> bool:
    """An in-place call (``x.relu_()``, ``F.relu(x, inplace=True)``): unused result, live effect."""
    if node.op == "call_module":
        return getattr(node.graph.owning_module.get_submodule(str(node.target)), "inplace", False) is True
    name = getattr(node.target, "__name__", node.target)
    in_place_name = isinstance(name, str) and name.endswith("_") and not name.startswith("_")
    return node.op in ("call_method", "call_function") and (in_place_name or node.kwargs.get("inplace") is True)


def finish(gm: fx.GraphModule) -> fx.GraphModule:
    """Clean up after a rewrite: drop dead nodes (keeping in-place calls) and unused submodules,
    check, regenerate code."""
    gm.graph.eliminate_dead_code(is_impure_node=lambda n: n.is_impure() or is_in_place(n))
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return gm
