"""A description of a module tree as plain data, and its rebuilding without running code from the file.

``describe(module)`` walks every module's ``__dict__`` (parameters, buffers, submodules and plain
attributes, whatever they are called; for ann2snn's own classes, what ``__getstate__`` returns) and returns a JSON text plus the list of tensors it refers
to; ``rebuild(text, tensors)`` makes the modules again with ``cls.__new__`` and ``__setstate__``,
as unpickling would, and rebuilds each ``torch.fx.GraphModule`` from its node list with
``GraphModule.graph = graph`` (fx generates the code; nothing stored is executed).

What ``rebuild`` accepts from the text, and nothing else:

- modules of classes defined in ``torch.nn.modules`` and ``ann2snn``, and ``torch.fx.GraphModule``,
  each named ``module:Class`` where it is defined (no attribute chains, no aliases);
- the dataclasses in ``DATACLASSES`` (a network's report) and the class references in
  ``CLASS_REFERENCES`` (a GraphModule's tracer class), nothing else of their kind;
- plain values: None, bool, int, float (inf and nan included), str, tuple, list, dict, set,
  slice, ``torch.Size``, ``torch.dtype``, ``torch.device``, tensors, and references to modules of
  the same tree;
- graph nodes that call tensor operations (``torch``, ``torch.nn.functional`` functions that
  ``torch.overrides`` lists), ``operator`` and ``math`` functions, ``getattr`` of a tensor's data
  attributes (``shape``, ``dtype``...), and public tensor methods other than those that reach
  storage, hooks or numpy; their arguments only nodes, plain constants (``ARGUMENT_TYPES``) and
  tuples, lists, dicts and slices of them, since fx pastes each argument's ``repr`` into the code.
  The code fx generates is checked too (``check_generated_code``) before it is compiled.

``describe`` raises ``Undescribable`` for anything outside these (a hook, a lambda, a class of
another package): ``ann2snn.save`` then stores a pickle instead, which only
``ann2snn.load(..., trust_pickle=True)`` reads.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import json
import keyword
import math
import operator
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name
from torch.overrides import get_overridable_functions

#: Where the modules of a stored tree may come from (``module:Class``, the class defined there).
MODULE_CLASS_PREFIXES = ("torch.nn.modules.", "ann2snn.")
GRAPH_MODULE = "torch.fx.graph_module:GraphModule"
#: The dataclasses ``describe`` writes (a network's report) and the classes it refers to (a
#: GraphModule's tracer class): nothing else of that kind is rebuilt.
DATACLASSES = frozenset({"ann2snn.report:ConversionReport", "ann2snn.report:Entry"})
CLASS_REFERENCES = frozenset({"ann2snn.trace:ConversionTracer", "torch.fx._symbolic_trace:Tracer"})
#: Constants a graph node's arguments may hold besides nodes and containers of them.
ARGUMENT_TYPES = (type(None), bool, int, float, str, type(Ellipsis), torch.dtype, torch.device, torch.memory_format, torch.layout)
#: Modules the code fx generates for a stored graph may name (fx's own globals among them).
CODE_MODULES = frozenset({"torch", "math", "operator", "_operator", "builtins", "torch.fx._pytree", "torch.utils._pytree"})
#: Builtins the code fx generates may call (``getattr(self.layers, "0")``, ``slice(...)``).
CODE_BUILTINS = frozenset({"getattr", "slice", "Ellipsis"})
#: Python syntax the code fx generates from a stored graph may use: assignments of calls,
#: operators, subscripts and constants, nothing that branches, loops, defines or imports.
CODE_SYNTAX = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Assign, ast.Return, ast.Expr, ast.Call, ast.keyword, ast.Name,
    ast.Attribute, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Slice, ast.Subscript, ast.Starred, ast.UnaryOp, ast.BinOp,
    ast.Compare, ast.expr_context, ast.operator, ast.unaryop, ast.cmpop,
)  # fmt: skip
#: Graph-module state that ``GraphModule.recompile`` derives from the graph: not stored.
DERIVED_GRAPH_STATE = ("_graph", "_code", "_lineno_map", "_prologue_start")
FX_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
#: Tensor methods a stored graph may not call: they reach storage, files, hooks, numpy or callables.
DENIED_METHODS = frozenset(
    {
        "apply_",
        "map_",
        "map2_",
        "backward",
        "numpy",
        "register_hook",
        "register_post_accumulate_grad_hook",
        "set_",
        "share_memory_",
        "storage",
        "untyped_storage",
        "storage_type",
        "pin_memory",
        "data_ptr",
        "tolist",
    }
)


class Undescribable(Exception):
    """The module tree holds something the safe format cannot describe (the message says what)."""


class DamagedDescription(Exception):
    """The stored description asks for something ``rebuild`` refuses (the message says what)."""


# -- allowlists --------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def graph_functions() -> dict[str, Callable]:
    """The functions a stored graph may call, by fx's qualified name."""
    overridable = get_overridable_functions()
    functions = [f for namespace in (torch, torch.functional, F) for f in overridable.get(namespace, [])]
    functions += [f for name, f in vars(operator).items() if not name.startswith("_") and type(f).__name__ == "builtin_function_or_method" and name != "call"]
    functions += [f for name, f in vars(math).items() if not name.startswith("_") and callable(f)]
    functions.append(getattr)
    return {_get_qualified_name(f): f for f in functions}


@lru_cache(maxsize=1)
def tensor_methods() -> frozenset[str]:
    """Public tensor methods a stored graph may call (``call_method`` targets)."""
    names = {name for name in dir(torch.Tensor) if not name.startswith("_") and callable(getattr(torch.Tensor, name))}
    return frozenset(names - DENIED_METHODS)


@lru_cache(maxsize=1)
def tensor_attributes() -> frozenset[str]:
    """Data attributes of a tensor (``shape``, ``dtype``...) that ``getattr`` nodes may read."""
    return frozenset(n for n in dir(torch.Tensor) if not n.startswith("_") and not callable(getattr(torch.Tensor, n)) and n not in ("grad_fn", "data", "grad"))


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def is_module_class(name: str) -> bool:
    """True for the ``module:Class`` names of modules the safe format may create."""
    return name == GRAPH_MODULE or name.startswith(MODULE_CLASS_PREFIXES)


def resolve_class(name: Any) -> type:
    """The class ``Class`` defined in ``module`` (``name`` is ``module:Class``, no attribute chain),
    only for module classes (``is_module_class``), ``DATACLASSES`` and ``CLASS_REFERENCES``."""
    module, _, qualname = str(name).partition(":")
    if not (is_module_class(str(name)) or name in DATACLASSES or name in CLASS_REFERENCES) or not _dotted_name(module) or not qualname.isidentifier():
        raise DamagedDescription(f"class {name!r} is not one the safe format may create (only torch.nn and ann2snn modules, GraphModule and ann2snn's report)")
    try:
        target: Any = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError) as error:
        raise DamagedDescription(f"class {name!r} does not exist here: {error}") from error
    if not isinstance(target, type):
        raise DamagedDescription(f"{name!r} is not a class")
    if class_name(target) != name:
        raise DamagedDescription(f"class {name!r} is {class_name(target)}, defined elsewhere; the safe format names classes where they are defined")
    return target


def argument_problem(value: Any) -> str:
    """What in a graph node's arguments ``value`` is not a node, a plain constant (``ARGUMENT_TYPES``)
    or a tuple, list, dict, slice or ``torch.Size`` of them ('' if nothing): fx pastes each
    argument's ``repr`` into the code it generates, so an object with a crafted ``repr`` would be code."""
    if isinstance(value, fx.Node) or type(value) in ARGUMENT_TYPES:
        return ""
    if type(value) is torch.Size:
        return "" if all(type(i) is int for i in value) else "a torch.Size of other things than integers"
    if type(value) in (tuple, list, fx.immutable_collections.immutable_list):
        items: Any = value
    elif type(value) in (dict, OrderedDict, fx.immutable_collections.immutable_dict):
        items = [*value.keys(), *value.values()]
    elif type(value) is slice:
        items = (value.start, value.stop, value.step)
    else:
        return f"a {type(value).__module__}.{type(value).__qualname__}"
    return next((problem for problem in map(argument_problem, items) if problem), "")


def _dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _graph_module_class(cls: type) -> type:
    """The class a GraphModule instance was made from (fx gives each instance its own subclass)."""
    return next(c for c in cls.__mro__ if c.__qualname__.split(".")[-1] != "GraphModuleImpl")


# -- describing ---------------------------------------------------------------------------------------
class _Describer:
    """Turns values into tagged JSON data; tensors go to ``self.tensors``, modules become paths."""

    def __init__(self, root: nn.Module) -> None:
        self.tensors: list[torch.Tensor] = []
        self._tensor_keys: dict[int, int] = {}
        self._kept: list[torch.Tensor] = []  # keeps ids stable while describing
        self.paths = {id(m): path for path, m in root.named_modules(remove_duplicate=True)}

    def tensor(self, t: torch.Tensor) -> dict:
        if type(t) not in (torch.Tensor, nn.Parameter):
            raise Undescribable(f"a tensor of type {type(t).__name__}")
        if id(t) not in self._tensor_keys:
            self._tensor_keys[id(t)] = len(self.tensors)
            self.tensors.append(t.detach())
            self._kept.append(t)
        return {"$tensor": self._tensor_keys[id(t)], "parameter": isinstance(t, nn.Parameter), "requires_grad": t.requires_grad and t.is_leaf}

    def value(self, v: Any, where: str) -> Any:
        if v is None or isinstance(v, (bool, str)) or type(v) in (int, float):
            return v
        if isinstance(v, torch.Tensor):
            return self.tensor(v)
        if isinstance(v, nn.Module):
            if id(v) not in self.paths:
                raise Undescribable(f"{where} refers to a module outside the network")
            return {"$module": self.paths[id(v)]}
        if isinstance(v, fx.Node):
            return {"$node": v.name}
        if type(v) is list:
            return [self.value(x, where) for x in v]
        if type(v) in (tuple, torch.Size, set, frozenset):
            return {f"${type(v).__name__}": [self.value(x, where) for x in v]}
        if type(v) in (dict, OrderedDict, fx.immutable_collections.immutable_dict):
            return {"$dict": [[self.value(k, where), self.value(x, where)] for k, x in v.items()], "ordered": type(v) is OrderedDict}
        if type(v) is fx.immutable_collections.immutable_list:
            return [self.value(x, where) for x in v]
        if isinstance(v, (torch.dtype, torch.memory_format, torch.layout)):
            return {"$torch": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"$device": str(v)}
        if isinstance(v, slice):
            return {"$slice": [self.value(x, where) for x in (v.start, v.stop, v.step)]}
        if v is Ellipsis:
            return {"$ellipsis": None}
        if isinstance(v, type) and class_name(v) in CLASS_REFERENCES:
            return {"$class": class_name(v)}
        if dataclasses.is_dataclass(v) and class_name(type(v)) in DATACLASSES:
            return {"$dataclass": class_name(type(v)), "fields": self.value(dict(vars(v)), where)}
        if callable(v) and graph_functions().get(_qualified_name(v)) is v:
            return {"$function": _qualified_name(v)}
        raise Undescribable(f"{where} holds a {type(v).__module__}.{type(v).__qualname__} ({v!r:.60})")

    def module(self, path: str, module: nn.Module) -> dict:
        cls = type(module)
        entry: dict[str, Any] = {"path": path}
        state = dict(module.__getstate__() if class_name(cls).startswith("ann2snn.") else module.__dict__)  # ours may shed derived state
        if isinstance(module, fx.GraphModule):
            cls = _graph_module_class(cls)
            entry["class_name"] = type(module).__name__
            entry["graph"] = self.graph(module.graph, path)
            for key in DERIVED_GRAPH_STATE:
                state.pop(key, None)
        if not is_module_class(class_name(cls)):
            raise Undescribable(f"module {path or '(root)'} is a {class_name(cls)}, not a torch.nn or ann2snn module or a GraphModule")
        entry["class"] = class_name(cls)
        entry["state"] = {key: self.value(v, f"{path or '(root)'}.{key}") for key, v in state.items()}
        return entry

    def graph(self, graph: fx.Graph, path: str) -> list[dict]:
        if type(graph._codegen) is not fx.graph.CodeGen:
            raise Undescribable(f"the graph of {path or '(root)'} uses {type(graph._codegen).__name__} code generation")
        nodes = []
        for node in graph.nodes:
            where = f"node {node.name} of {path or '(root)'}"
            target: Any = node.target
            if node.op == "call_function":
                if graph_functions().get(_qualified_name(target)) is not target:
                    raise Undescribable(f"{where} calls {_qualified_name(target)}, not a tensor, operator or math function")
                target = {"$function": _qualified_name(target)}
            for value in (node.args, node.kwargs):
                if argument_problem(value):
                    raise Undescribable(f"{where} has an argument that is {argument_problem(value)}")
            nodes.append({"op": node.op, "name": node.name, "target": target, "args": self.value(node.args, where), "kwargs": self.value(dict(node.kwargs), where)})
        try:
            check_generated_code(graph, f"the graph of {path or '(root)'}")  # what load would refuse
        except DamagedDescription as problem:
            raise Undescribable(str(problem)) from None
        return nodes


def _qualified_name(f: Any) -> str:
    try:
        return _get_qualified_name(f)
    except Exception:  # objects without a usable __name__ / __module__
        return repr(f)


def describe(root: nn.Module) -> tuple[str, list[torch.Tensor]]:
    """The module tree as JSON text and the tensors it refers to (by index)."""
    describer = _Describer(root)
    modules = [describer.module(path, m) for path, m in root.named_modules(remove_duplicate=True)]
    return json.dumps({"modules": modules}), describer.tensors


# -- rebuilding ---------------------------------------------------------------------------------------
class _Builder:
    """Turns tagged JSON data back into values, refusing anything outside the allowlists."""

    def __init__(self, tensors: list[torch.Tensor], modules: dict[str, nn.Module]) -> None:
        self.tensors = tensors
        self.modules = modules
        self._made: dict[int, torch.Tensor] = {}
        self.nodes: dict[str, fx.Node] = {}

    def tensor(self, data: dict) -> torch.Tensor:
        key = data["$tensor"]
        if type(key) is not int or not 0 <= key < len(self.tensors):
            raise DamagedDescription(f"no tensor {key!r} in the file")
        if key not in self._made:
            t = self.tensors[key]
            if not isinstance(t, torch.Tensor):
                raise DamagedDescription(f"tensor {key} is a {type(t).__name__}")
            self._made[key] = nn.Parameter(t, requires_grad=bool(data["requires_grad"])) if data["parameter"] else t.requires_grad_(bool(data["requires_grad"]))
        return self._made[key]

    def value(self, data: Any) -> Any:
        if data is None or isinstance(data, (bool, int, float, str)):
            return data
        if isinstance(data, list):
            return [self.value(x) for x in data]
        if not isinstance(data, dict) or len([k for k in data if k.startswith("$")]) != 1:
            raise DamagedDescription(f"unexpected item {data!r:.60}")
        tag = next(k for k in data if k.startswith("$"))
        if tag not in self.TAGS:
            raise DamagedDescription(f"unknown tag {tag!r}")
        return self.TAGS[tag](self, data)

    def _items(self, data: dict, tag: str) -> list:
        items = data[tag]
        if not isinstance(items, list):
            raise DamagedDescription(f"{tag} holds {type(items).__name__}, not a list")
        return [self.value(x) for x in items]

    def _dict(self, data: dict) -> dict:
        pairs = data["$dict"]
        if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise DamagedDescription("$dict holds something other than key-value pairs")
        result = {self.value(k): self.value(v) for k, v in pairs}
        return OrderedDict(result) if data.get("ordered") else result

    def _torch_constant(self, data: dict) -> Any:
        value = getattr(torch, str(data["$torch"]), None)
        if not isinstance(value, (torch.dtype, torch.memory_format, torch.layout)):
            raise DamagedDescription(f"torch.{data['$torch']} is not a dtype, layout or memory format")
        return value

    def _module(self, data: dict) -> nn.Module:
        if data["$module"] not in self.modules:
            raise DamagedDescription(f"no module {data['$module']!r} in the network")
        return self.modules[data["$module"]]

    def _node(self, data: dict) -> fx.Node:
        if data["$node"] not in self.nodes:
            raise DamagedDescription(f"node {data['$node']!r} is used before it is defined")
        return self.nodes[data["$node"]]

    def _function(self, data: dict) -> Callable:
        name = data["$function"]
        if name not in graph_functions():
            raise DamagedDescription(f"function {name!r} is not a tensor, operator or math function")
        return graph_functions()[name]

    def _dataclass(self, data: dict) -> Any:
        name = data["$dataclass"]
        if name not in DATACLASSES:
            raise DamagedDescription(f"dataclass {name!r} is not one the safe format may create (only {', '.join(sorted(DATACLASSES))})")
        cls = resolve_class(name)
        fields = _string_keys(self.value(data["fields"]), name)
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise DamagedDescription(f"{name} has no field {sorted(unknown)[0]!r}")
        instance = cls.__new__(cls)
        instance.__dict__.update(fields)
        return instance

    def _class(self, data: dict) -> type:
        if data["$class"] not in CLASS_REFERENCES:
            raise DamagedDescription(f"class {data['$class']!r} is not one a network refers to (only {', '.join(sorted(CLASS_REFERENCES))})")
        return resolve_class(data["$class"])

    TAGS: dict[str, Callable[["_Builder", dict], Any]] = {
        "$tensor": tensor,
        "$tuple": lambda self, d: tuple(self._items(d, "$tuple")),
        "$Size": lambda self, d: torch.Size(_ints(self._items(d, "$Size"))),
        "$set": lambda self, d: set(self._items(d, "$set")),
        "$frozenset": lambda self, d: frozenset(self._items(d, "$frozenset")),
        "$dict": _dict,
        "$torch": _torch_constant,
        "$device": lambda self, d: torch.device(str(d["$device"])),
        "$slice": lambda self, d: slice(*self._items(d, "$slice")),
        "$ellipsis": lambda self, d: Ellipsis,
        "$module": _module,
        "$node": _node,
        "$class": _class,
        "$dataclass": _dataclass,
        "$function": _function,
    }


def _ints(items: list) -> list[int]:
    if not all(type(i) is int for i in items):
        raise DamagedDescription("a torch.Size holds something other than integers")
    return items


def _string_keys(state: Any, where: str) -> dict:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DamagedDescription(f"the state of {where} is not a dict of attribute names")
    return state


def _identifiers(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text or not all(part.isidentifier() or part.isdigit() for part in text.split(".")):
        raise DamagedDescription(f"{where}: {text!r} is not a (dotted) Python name")
    return text


def _new_module(entry: dict) -> nn.Module:
    cls = resolve_class(entry["class"])
    if not issubclass(cls, nn.Module):
        raise DamagedDescription(f"{entry['class']} is not an nn.Module")
    if ("graph" in entry) != issubclass(cls, fx.GraphModule):
        raise DamagedDescription(f"{entry['class']} and its graph do not match")
    return cls.__new__(cls)


def _build_graph(builder: _Builder, module: fx.GraphModule, nodes: Any, where: str) -> fx.Graph:
    graph = fx.Graph(owning_module=module)
    builder.nodes = {}
    for data in nodes:
        op, name = data["op"], _identifiers(data["name"], where)
        if op not in FX_OPS or "." in name:
            raise DamagedDescription(f"{where}: node {name!r} has op {op!r}")
        target = _node_target(builder, module, op, data["target"], f"{where}, node {name}")
        args, kwargs = builder.value(data["args"]), _string_keys(builder.value(data["kwargs"]), f"{where}, node {name}")
        if not isinstance(args, tuple):
            raise DamagedDescription(f"{where}, node {name}: its arguments are not a tuple")
        if not all(key.isidentifier() for key in kwargs):
            raise DamagedDescription(f"{where}, node {name}: a keyword argument name is not a Python name")
        if argument_problem((args, kwargs)):
            raise DamagedDescription(f"{where}, node {name}: an argument is {argument_problem((args, kwargs))}, which a stored graph may not hold")
        if target is getattr and (len(args) != 2 or args[1] not in tensor_attributes()):
            raise DamagedDescription(f"{where}, node {name}: getattr of {args[1:]!r} is not a tensor's data attribute")
        node = graph.create_node(op, target, args, kwargs, name=name)
        if node.name != name:
            raise DamagedDescription(f"{where}: node name {name!r} is taken twice")
        builder.nodes[name] = node
    return graph


def _node_target(builder: _Builder, module: nn.Module, op: str, target: Any, where: str) -> Any:
    if op == "call_function":
        if not isinstance(target, dict):
            raise DamagedDescription(f"{where}: no function")
        return builder.value(target) if "$function" in target else _fail(f"{where}: not a function")
    if op == "call_method" and target not in tensor_methods():
        raise DamagedDescription(f"{where}: {target!r} is not a tensor method a stored graph may call")
    if op == "output" and target != "output":
        raise DamagedDescription(f"{where}: the output node has target {target!r}")
    if op == "placeholder" and not (isinstance(target, str) and target.isidentifier()):
        raise DamagedDescription(f"{where}: {target!r} is not an argument name")
    _identifiers(target, where)
    if op in ("call_module", "get_attr"):
        owner, _, attribute = target.rpartition(".")
        try:
            found = module.get_submodule(target) if op == "call_module" else getattr(module.get_submodule(owner), attribute)
        except AttributeError as error:
            raise DamagedDescription(f"{where}: {target!r} is not in the network ({error})") from error
        if op == "get_attr" and not isinstance(found, (torch.Tensor, nn.Module)):
            raise DamagedDescription(f"{where}: {target!r} is a {type(found).__name__}, not a tensor or module")
    return target


def _fail(message: str) -> Any:
    raise DamagedDescription(message)


def rebuild(text: str, tensors: list[torch.Tensor]) -> nn.Module:
    """The module tree that ``describe`` described (raises ``DamagedDescription`` on anything else)."""
    try:
        entries = json.loads(text)["modules"]
        modules = {_identifiers_or_root(e["path"]): _new_module(e) for e in entries}
        builder = _Builder(tensors, modules)
        for entry in entries:
            module = modules[entry["path"]]
            state = {key: builder.value(v) for key, v in _string_keys(entry["state"], entry["path"] or "(root)").items()}
            if any(key in state for key in DERIVED_GRAPH_STATE):
                raise DamagedDescription(f"{entry['path'] or '(root)'}: stored state holds generated graph code")
            module.__setstate__(state)
        for entry in entries:
            if "graph" in entry:
                _finish_graph_module(builder, modules[entry["path"]], entry)
    except DamagedDescription:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RecursionError, RuntimeError) as error:
        raise DamagedDescription(f"malformed description ({type(error).__name__}: {error})") from error
    return modules[""]


def _identifiers_or_root(path: Any) -> str:
    return "" if path == "" else _identifiers(path, "module path")


def _finish_graph_module(builder: _Builder, module: fx.GraphModule, entry: dict) -> None:
    where = f"the graph of {entry['path'] or '(root)'}"
    type(module).__name__ = _identifiers(entry["class_name"], where)
    graph = _build_graph(builder, module, entry["graph"], where)
    check_generated_code(graph, where)
    module.graph = graph  # fx generates forward() from the graph and compiles it


# -- the code fx generates ----------------------------------------------------------------------------
def check_generated_code(graph: fx.Graph, where: str) -> None:
    """Refuse (``DamagedDescription``) a graph whose generated ``forward`` does anything but call
    allowed functions, tensor methods and submodules on its nodes and constants (checked before
    fx compiles it: the second line behind the checks of targets and arguments)."""
    code = graph.python_code(root_module="self")
    problem = _global_problem(code.globals) or _syntax_problem(code.src, set(code.globals))
    if problem:
        raise DamagedDescription(f"{where}: the generated code {problem}")


def _global_problem(names: dict[str, Any]) -> str:
    """What among fx's globals for the generated code is not a module, function or constant it needs."""
    functions = {id(f) for f in graph_functions().values()}
    for name, value in names.items():
        if isinstance(value, type(math)):
            allowed = value.__name__ in CODE_MODULES
        else:
            allowed = id(value) in functions or value in (type(None), torch.device) or (type(value) is float and not math.isfinite(value))
        if not allowed:
            return f"names {name} ({type(value).__name__}), not a module, function or constant a stored graph may use"
    return ""


def _syntax_problem(source: str, global_names: set[str]) -> str:
    """What in ``source`` is not the plain straight-line code fx writes for an allowed graph ('' if nothing)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        return f"does not compile ({error.msg})"
    local = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for a in ast.walk(tree) if isinstance(a, ast.arg)}
    for node in ast.walk(tree):
        if not isinstance(node, CODE_SYNTAX):
            return f"holds a {type(node).__name__}, which fx writes for no stored graph"
        name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "arg", None) or ""
        if name.startswith("__") or keyword.iskeyword(name):  # dunders reach Python's internals
            return f"uses the name {name!r}"
        if isinstance(node, ast.Name) and name not in local | global_names | CODE_BUILTINS | {"self"}:
            return f"uses the name {name!r}, neither a node nor a global fx defined"
    return ""
