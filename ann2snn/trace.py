"""torch.fx tracing with the right leaf modules, and errors that name the culprit line."""

from __future__ import annotations

import re
import traceback
from typing import Any, Iterable, Optional

import torch
from torch import fx, nn

from .errors import ConversionError
from .exported import ExportedModel
from .qcfs import QCFS
from .temporal import TemporalModule

#: Key in a traced GraphModule's ``meta``: True when the model was a ``torch.export`` program
#: read back by ``exported.lift_exported`` (an ``ExportedModel``: no submodules to make leaves).
EXPORTED_PROGRAM = "ann2snn_exported_program"

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
        #: The innermost submodule whose forward raised while tracing (None: none did).
        self.failed_module: Optional[str] = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (TemporalModule, QCFS)) or isinstance(m, self.leaf_types) or module_qualified_name in self.leaf_names:
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        outer, self.current_module = self.current_module, self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_module is None:
                self.failed_module = self.current_module
            raise
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


#: Hint for a module built inside ``forward`` (fx can only call the model's own submodules).
_NOT_A_SUBMODULE = (
    "A module created inside forward (e.g. `nn.MaxPool1d(4)(x)`) is not one of the model's submodules, so the tracer "
    "cannot name it. Fix: create it once in __init__ (`self.pool = nn.MaxPool1d(4)`, then `self.pool(x)` in forward), "
    "or call its functional form (`F.max_pool1d(x, 4)`)."
)
_LEN = (
    "len() of a tensor cannot be traced (its value is not known while tracing). Fix: take the batch size with "
    "`x.size(0)` or `x.shape[0]`, or drop it: `h.flatten(1)` instead of `h.reshape(len(x), -1)`."
)
_CREATED_FROM_SIZE = (
    "A tensor created from a traced size (`torch.zeros(x.shape[0], n)`, `torch.ones(...)`, `torch.full(...)`, "
    "`torch.randn(...)`) cannot be traced. Fix: create it with a batch size of 1 and let broadcasting expand it "
    "(`torch.zeros(1, n)`), or register it as a buffer in __init__ (`self.register_buffer('zeros', torch.zeros(1, n))`)."
)
_TOP_LEVEL_BRANCH = (
    "torch.fx cannot follow Python control flow that depends on tensor values (if/for/while on a tensor) in the "
    "model's own forward, and leaf_modules cannot make the top-level model a leaf. Fix: rewrite the branch without "
    "tensor values (e.g. `torch.where(cond, a, b)`), or pass concrete_args={'<argument>': value} if a non-tensor "
    "argument (a flag or mode, never the input tensor) drives it, or move the branch into a submodule and pass "
    "leaf_modules=[<that submodule's class>] (with allow_analog=True it then stays analog)."
)
_SUBMODULE_BRANCH = (
    "torch.fx cannot follow Python control flow that depends on tensor values (if/for/while on a tensor, len() of a "
    "tensor, ...). Fix: pass leaf_modules=[<that submodule's class or dotted name>] to keep it as one opaque call "
    "(with allow_analog=True it then stays analog), or concrete_args={'<argument>': value} to fix a non-tensor "
    "argument (a flag or mode, never the input tensor) that drives the branch, or rewrite it without "
    "data-dependent branching."
)


def trace_fix(error: Exception, module: str) -> str:
    """The way out of a tracing failure, by kind: a module built in forward, ``len()`` of a tensor,
    a tensor created from a traced size, or control flow (in a submodule, or in the top-level
    forward, where making a leaf cannot help)."""
    text = str(error)
    if "not installed as a submodule" in text:
        return _NOT_A_SUBMODULE
    if "'len' is not supported in symbolic tracing" in text:
        return _LEN
    if "Proxy" in text and "invalid combination of arguments" in text:
        return _CREATED_FROM_SIZE
    return _SUBMODULE_BRANCH if module else _TOP_LEVEL_BRANCH


def trace(
    model: nn.Module,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: Optional[dict[str, Any]] = None,
) -> fx.GraphModule:
    """Symbolically trace ``model`` into a GraphModule, or raise a ConversionError that names the
    cause, the module and the source line, and the fix for that kind of failure (``trace_fix``)."""
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
        module = tracer.failed_module or ""
        where = f" in module `{module}`" if module else ""
        fix = trace_fix(error, module)
        cause = str(error).split(", but expected")[0] if fix is _CREATED_FROM_SIZE else str(error)  # not torch's list of overloads
        raise ConversionError(f"cannot trace {type(model).__name__}{where} at {describe_frame(frame)}: {cause}. {fix}") from error
    for node in graph.nodes:
        node.type = None  # string annotations (``from __future__ import annotations``) break pickling
    check_input_used(graph, type(model).__name__, concrete_args)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta[EXPORTED_PROGRAM] = isinstance(model, ExportedModel)
    return gm


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
