"""Graph analyses: what the passes, the time loop, profiling, recording, NIR export and drawing
need to know about an fx graph. Every function here reads a graph and changes nothing in it
(``propagate_shapes`` only annotates node metadata, as fx's ``ShapeProp`` does).

- which module a node calls (``module_of``) and whether it spikes (``is_spiking``);
- constants and shape arithmetic (``constant_like``);
- the static/dynamic split under direct encoding (``split_static``): the dynamic half is
  everything that depends on a neuron;
- neuron -> pool pairs (gated max or average) that can run as one node (``neuron_pool_pairs``) and the
  neurons of a graph, fused or not, by module path (``graph_neurons``);
- node names: a human description (``describe``), a coarse kind (``node_kind``), fresh names
  (``fresh_name``);
- per-node output shapes from one run (``propagate_shapes``, ``tensor_metas``).
"""

from __future__ import annotations

import operator
from typing import Any, Callable, Iterator, Optional

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from .neurons import SpikingNeuron
from .temporal import GatedMaxPool, NeuronPool, TimeBroadcast, is_average_pool

#: Arithmetic that keeps shape values (``x.size(2) // 2``) constant.
_SHAPE_ARITHMETIC = {operator.getitem, operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod, torch.mul, torch.div}

_MODULE_KINDS: list[tuple[type, str]] = [
    (SpikingNeuron, "neuron"),
    (GatedMaxPool, "gated_pool"),
    (NeuronPool, "neuron_pool"),
    (TimeBroadcast, "time_broadcast"),
    (nn.modules.conv._ConvNd, "conv"),
    (nn.Linear, "linear"),
    (nn.modules.batchnorm._BatchNorm, "batchnorm"),
    (nn.ReLU, "relu"),
    (nn.modules.pooling._MaxPoolNd, "maxpool"),
    (nn.modules.pooling._AvgPoolNd, "avgpool"),
    (nn.modules.pooling._AdaptiveAvgPoolNd, "avgpool"),
    (nn.modules.dropout._DropoutNd, "dropout"),
]
_NAMED_CALLS = {"relu": "relu", "relu_": "relu", "add": "add", "cat": "cat", "concat": "cat", "max_pool1d": "maxpool", "max_pool2d": "maxpool"}


# -- modules and neurons ------------------------------------------------------------------------
def module_of(gm: fx.GraphModule, node: fx.Node) -> Optional[nn.Module]:
    """The module a ``call_module`` node calls, else None."""
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def is_spiking(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a node runs a spiking neuron (alone, or fused with the pool that reads it)."""
    return isinstance(module_of(gm, node), (SpikingNeuron, NeuronPool))


def graph_neurons(gm: fx.GraphModule) -> list[tuple[str, SpikingNeuron]]:
    """(module path, neuron) of every spiking neuron the graph calls, in graph order (every
    neuron after those it depends on), once each; a neuron fused with its pool is ``<fused>.neuron``."""
    out: dict[str, SpikingNeuron] = {}
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        if isinstance(module, SpikingNeuron):
            out.setdefault(str(node.target), module)
        elif isinstance(module, NeuronPool):
            out.setdefault(f"{node.target}.neuron", module.neuron)
    return list(out.items())


def neuron_pool_pairs(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    """(neuron node, pool node) wherever a pool module is the only reader of a spiking neuron's
    output: a gated max pool (``GatedMaxPool`` or a subclass) or an average pool
    (``temporal.is_average_pool``)."""
    pairs = []
    for node in gm.graph.nodes:
        if not isinstance(module_of(gm, node), SpikingNeuron) or len(node.users) != 1:
            continue
        (user,) = node.users
        pool = module_of(gm, user)
        if (isinstance(pool, GatedMaxPool) or (pool is not None and is_average_pool(pool))) and user.args == (node,) and not user.kwargs:
            pairs.append((node, user))
    return pairs


# -- constants and the static/dynamic split ---------------------------------------------------------
def constant_like(node: object, memo: dict) -> bool:
    """True for values that do not carry activations: constants, parameters (``get_attr``), values
    computed from them alone (``self.scale.exp()``) and values computed only from tensor sizes
    (``x.size(0) * 4``)."""
    if not isinstance(node, fx.Node):
        return True
    if node not in memo:
        if node.op == "get_attr":
            memo[node] = True
        elif node.op == "placeholder":
            memo[node] = False
        elif node.op == "call_method" and node.target in ("size", "dim"):
            memo[node] = True
        elif node.op == "call_function" and node.target is getattr:
            memo[node] = node.args[1] in ("shape", "ndim", "dtype", "device") or constant_like(node.args[0], memo)
        elif node.op in ("call_function", "call_method") and node.target in (*_SHAPE_ARITHMETIC, "__mul__", "__truediv__", "mul", "div"):
            memo[node] = all(constant_like(a, memo) for a in node.all_input_nodes)
        else:  # anything else is constant when nothing it reads carries activations
            memo[node] = bool(node.all_input_nodes) and all(constant_like(a, memo) for a in node.all_input_nodes) or node.op == "call_function" and not node.all_input_nodes
    return memo[node]


def split_static(gm: fx.GraphModule) -> tuple[set[fx.Node], set[fx.Node]]:
    """(static, dynamic): nodes that depend on the input and on no neuron (shape arithmetic
    excluded), the same at every step under direct encoding; and nodes that depend on a neuron."""
    dynamic: set[fx.Node] = set()
    static: set[fx.Node] = set()
    memo: dict = {}
    for node in gm.graph.nodes:
        inputs = node.all_input_nodes
        if is_spiking(gm, node) or any(i in dynamic for i in inputs):
            dynamic.add(node)
        elif node.op == "placeholder" or (any(i in static for i in inputs) and not constant_like(node, memo)):
            static.add(node)
    return static, dynamic


# -- names --------------------------------------------------------------------------------------
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


def node_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """A coarse kind for a node: input, output, neuron, gated_pool, neuron_pool, conv, linear, relu, add, ..."""
    if node.op == "placeholder":
        return "input"
    if node.op in ("output", "get_attr"):
        return "output" if node.op == "output" else "attribute"
    if node.op == "call_module":
        return module_kind(gm.get_submodule(str(node.target)))
    name = getattr(node.target, "__name__", str(node.target)).strip("_")
    return _NAMED_CALLS.get(name, name)


def module_kind(module: nn.Module) -> str:
    """The coarse kind of a module (``node_kind`` of a node calling it)."""
    return next((kind for cls, kind in _MODULE_KINDS if isinstance(module, cls)), type(module).__name__.lower())


def fresh_name(base: str, taken: Callable[[str], bool]) -> str:
    """``base``, or ``base_1``, ``base_2``, ...: the first that ``taken`` refuses."""
    name, k = base, 1
    while taken(name):
        name, k = f"{base}_{k}", k + 1
    return name


# -- shapes -------------------------------------------------------------------------------------
class _SilentShapeProp(ShapeProp):
    """fx's ShapeProp, calling each graph module's ``forward`` directly, so that the modules the
    graph calls fire no hooks (``ann2snn.profile`` counts with them; the neuron inside a fused
    ``NeuronPool`` is still called, in whatever regime the caller set)."""

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        return self.fetch_attr(target).forward(*args, **kwargs)


def propagate_shapes(gm: fx.GraphModule, example: Any) -> dict[str, Any]:
    """Run ``gm`` once on ``example`` and return, per node name, fx's ``TensorMetadata`` of its
    output (a nested tuple or dict of them for tuple and dict outputs; None for non-tensors),
    also left in each node's ``meta["tensor_meta"]``. The caller chooses the regime (analog mode,
    no gradients)."""
    _SilentShapeProp(gm).propagate(example)
    return {node.name: node.meta.get("tensor_meta") for node in gm.graph.nodes}


def tensor_metas(meta: object) -> Iterator[TensorMetadata]:
    """The TensorMetadata records in one node's annotation (nested for tuple and dict outputs)."""
    if isinstance(meta, TensorMetadata):
        yield meta
    elif isinstance(meta, (tuple, list)):
        for item in meta:
            yield from tensor_metas(item)
    elif isinstance(meta, dict):
        for item in meta.values():
            yield from tensor_metas(item)
