"""torch.fx tracing with the right leaf modules, and errors that name the culprit line."""

from __future__ import annotations

import re
import traceback
from typing import Any, Iterable, Optional

import torch
from torch import fx, nn

from .errors import ConversionError
from .qcfs import QCFS
from .temporal import TemporalModule

_LIBRARY_PATH = re.compile(r"[/\\](torch|ann2snn|norse)[/\\]")


class ConversionTracer(fx.Tracer):
    """An fx tracer that keeps temporal modules, QCFS activations and user-chosen modules as single calls."""

    def __init__(self, leaf_modules: Iterable[type | str] = ()) -> None:
        super().__init__()
        self.record_stack_traces = True
        leaves = list(leaf_modules)
        self.leaf_types = tuple(x for x in leaves if isinstance(x, type))
        self.leaf_names = {x for x in leaves if isinstance(x, str)}
        self.current_module = ""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (TemporalModule, QCFS)) or isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        outer, self.current_module = self.current_module, self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.current_module = outer


def user_frame(frames: list[traceback.FrameSummary]) -> Optional[traceback.FrameSummary]:
    """The innermost frame that is the user's code rather than torch's or ours."""
    for frame in reversed(frames):
        if not _LIBRARY_PATH.search(frame.filename):
            return frame
    return None


def describe_frame(frame: Optional[traceback.FrameSummary]) -> str:
    if frame is None:
        return "unknown location"
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f"{frame.filename}:{frame.lineno} in {frame.name}{code}"


def source_of(node: fx.Node) -> str:
    """``file:line: code`` of the user's line that created an fx node, from its stack trace."""
    trace = node.stack_trace or ""
    matches = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n(?:    (.*))?', trace)
    for filename, lineno, name, code in reversed(matches):
        if not _LIBRARY_PATH.search(filename):
            return f"{filename}:{lineno}" + (f": `{code.strip()}`" if code else "")
    return ""


def module_path_of(node: fx.Node) -> str:
    """The dotted path of the module a node belongs to ('' for the top level)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack.values()))[0] if stack else ""


def trace(
    model: nn.Module,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: Optional[dict[str, Any]] = None,
) -> fx.GraphModule:
    """Symbolically trace ``model`` into a GraphModule, or raise a ConversionError that names the
    cause, the module and the source line, and the two fixes (leaf modules, concrete args)."""
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise ConversionError(
            f"{type(model).__name__} is a TorchScript module (made by torch.jit.script or torch.jit.trace): torch.fx "
            "cannot trace compiled TorchScript. Convert the original Python nn.Module instead: build it from its class "
            "and load the weights, e.g. net.load_state_dict(torch.jit.load(path).state_dict())"
        )
    tracer = ConversionTracer(leaf_modules)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as error:  # fx raises TraceError, TypeError, RuntimeError... for untraceable code
        frame = user_frame(traceback.extract_tb(error.__traceback__))
        where = f" in module `{tracer.current_module}`" if tracer.current_module else ""
        raise ConversionError(
            f"cannot trace {type(model).__name__}{where} at {describe_frame(frame)}: {error}. "
            "torch.fx cannot follow Python control flow that depends on tensor values "
            "(if/for/while on a tensor, len() of a tensor, ...). Fix: pass "
            "leaf_modules=[<that submodule's class or dotted name>] to keep it as one opaque call "
            "(with allow_analog=True it then stays analog), or concrete_args={'<argument>': value} "
            "to fix a non-tensor argument (a flag or mode, never the input tensor) that drives the branch, "
            "or rewrite it without data-dependent branching."
        ) from error
    for node in graph.nodes:
        node.type = None  # string annotations (``from __future__ import annotations``) break pickling
    check_input_used(graph, type(model).__name__, concrete_args)
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _reaches_output(graph: fx.Graph, start: fx.Node) -> bool:
    seen, frontier = {start}, [start]
    while frontier:
        for user in frontier.pop().users:
            if user.op == "output":
                return True
            if user not in seen:
                seen.add(user)
                frontier.append(user)
    return False


def check_input_used(graph: fx.Graph, name: str, concrete_args: Optional[dict[str, Any]] = None) -> None:
    """Refuse a traced graph whose output does not depend on its input (the first placeholder):
    it would return the same output for every input. This happens when ``concrete_args`` fixes the
    input tensor itself (fx then bakes the example into the graph as a constant)."""
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if not placeholders or _reaches_output(graph, placeholders[0]):
        return
    argument = str(placeholders[0].target).removesuffix("_1")
    fixed = [k for k, v in (concrete_args or {}).items() if isinstance(v, torch.Tensor)]
    cause = (
        f"concrete_args fixed the tensor argument{'s' * (len(fixed) > 1)} {', '.join(map(repr, fixed))}, so fx traced the example value as a constant"
        if fixed
        else "its forward does not use it, or returns constants"
    )
    raise ConversionError(
        f"the traced {name} ignores its input `{argument}`: its output would be the same for every input ({cause}). "
        "concrete_args is for non-tensor arguments that steer control flow (flags, modes); never pass the input "
        "tensor there. To get past a check on the input's rank or shape in forward (`if x.dim() == 2: ...`): "
        "remove the check (reshape the input before calling the network), convert the submodule after the check "
        "(e.g. model.body), or make the module that holds the check a leaf (leaf_modules=[...]) with allow_analog=True."
    )
