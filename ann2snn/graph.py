"""fx graph <-> networkx: analysis, structural checks in tests, drawing."""

from __future__ import annotations

from collections import Counter

import networkx as nx
from torch import fx, nn

from .neurons import SpikingNeuron
from .temporal import GatedMaxPool, TimeBroadcast

_MODULE_KINDS: list[tuple[type, str]] = [
    (SpikingNeuron, "neuron"),
    (GatedMaxPool, "gated_pool"),
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


def node_kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """A coarse kind for a node: input, output, neuron, gated_pool, conv, linear, relu, add, ..."""
    if node.op == "placeholder":
        return "input"
    if node.op in ("output", "get_attr"):
        return "output" if node.op == "output" else "attribute"
    if node.op == "call_module":
        module = gm.get_submodule(str(node.target))
        return next((kind for cls, kind in _MODULE_KINDS if isinstance(module, cls)), type(module).__name__.lower())
    name = getattr(node.target, "__name__", str(node.target)).strip("_")
    return _NAMED_CALLS.get(name, name)


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """The data-flow graph of ``gm``: one vertex per fx node (named like it), with attributes
    ``op``, ``target``, ``kind``, ``module_type`` and ``shape`` (where shape propagation left one)."""
    graph = nx.DiGraph()
    for node in gm.graph.nodes:
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        meta = node.meta.get("tensor_meta")
        graph.add_node(
            node.name, op=node.op, target=str(node.target), kind=node_kind(gm, node),
            module_type=type(module).__name__ if module is not None else None,
            shape=tuple(meta.shape) if hasattr(meta, "shape") else None,
        )
        for source in node.all_input_nodes:
            graph.add_edge(source.name, node.name)
    return graph


def kind_counts(graph: nx.DiGraph) -> Counter:
    """How many vertices of each kind."""
    return Counter(kind for _, kind in graph.nodes(data="kind"))


def nodes_of_kind(graph: nx.DiGraph, kind: str) -> list[str]:
    return [name for name, k in graph.nodes(data="kind") if k == kind]


def has_chain(graph: nx.DiGraph, kinds: list[str]) -> bool:
    """Whether some path visits vertices of the given kinds consecutively (``conv -> neuron -> gated_pool``)."""
    def extend(vertex: str, rest: list[str]) -> bool:
        return not rest or any(graph.nodes[s]["kind"] == rest[0] and extend(s, rest[1:]) for s in graph.successors(vertex))

    return any(extend(v, kinds[1:]) for v in nodes_of_kind(graph, kinds[0]))


def joins(graph: nx.DiGraph) -> list[str]:
    """Vertices where two or more data paths meet (residual adds, concatenations)."""
    return [v for v in graph.nodes if graph.in_degree(v) >= 2 and graph.nodes[v]["kind"] in ("add", "cat")]
