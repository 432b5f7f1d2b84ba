"""Small helpers shared by the passes."""

from __future__ import annotations

from typing import Any, Optional

from torch import fx, nn

from ..trace import module_path_of, source_of


def module_of(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    """The module a ``call_module`` node calls, else None."""
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """A call argument given either positionally or by keyword."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """A short human name of what a node computes: module class, function or method name."""
    module = module_of(gm, node)
    if module is not None:
        return f"{type(module).__name__} `{node.target}`"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    if node.op == "call_function":
        target = node.target
        owner = getattr(target, "__module__", None) or ""
        if owner.startswith("torch.nn.functional") or owner == "torch._C._nn":
            owner = "F"
        elif owner == "_operator":
            owner = "operator"
        elif owner == "torch" or owner.startswith("torch."):
            owner = "torch"
        elif owner not in ("_operator", "operator", "builtins"):
            owner = owner.split(".")[0]  # torchvision.ops.stochastic_depth -> torchvision
        return f"{owner}.{getattr(target, '__name__', str(target))}".lstrip(".")
    return node.op


def where(node: fx.Node) -> str:
    """Module path and source line of a node, for reports and error messages."""
    path, line = module_path_of(node), source_of(node)
    parts = [f"module `{path}`" if path else "", line]
    return ", ".join(p for p in parts if p)


def unique_name(gm: fx.GraphModule, base: str) -> str:
    """A submodule name not yet taken in ``gm``."""
    name, k = base, 1
    while hasattr(gm, name):
        name, k = f"{base}_{k}", k + 1
    return name


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
