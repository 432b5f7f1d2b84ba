"""fx graph <-> networkx: analysis, structural checks in tests, drawing."""

from __future__ import annotations

from collections import Counter
from typing import Optional

import networkx as nx
from torch import fx, nn

from .analysis import module_kind, module_of, node_kind
from .temporal import NeuronPool


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """The data-flow graph of ``gm``: one vertex per fx node (named like it), with attributes
    ``op``, ``target``, ``kind``, ``module_type`` and ``shape`` (where shape propagation left one).
    A neuron fused with the pool that reads it (``NeuronPool``) is drawn as what it computes: two
    vertices ``<node>.neuron`` -> ``<node>.pool``."""
    graph = nx.DiGraph()
    vertex: dict[fx.Node, str] = {}  # the vertex that carries each node's output
    for node in gm.graph.nodes:
        module = module_of(gm, node)
        sources = [vertex[source] for source in node.all_input_nodes]
        if isinstance(module, NeuronPool):
            neuron = _add_module_vertex(graph, f"{node.name}.neuron", f"{node.target}.neuron", module.neuron, _shape(node.args[0]), sources)
            vertex[node] = _add_module_vertex(graph, f"{node.name}.pool", f"{node.target}.pool", module.pool, _shape(node), [neuron])
            continue
        graph.add_node(
            node.name,
            op=node.op,
            target=str(node.target),
            kind=node_kind(gm, node),
            module_type=type(module).__name__ if module is not None else None,
            shape=_shape(node),
        )
        graph.add_edges_from((source, node.name) for source in sources)
        vertex[node] = node.name
    return graph


def _shape(value: object) -> Optional[tuple[int, ...]]:
    """The shape shape propagation left on a node, if any."""
    meta = value.meta.get("tensor_meta") if isinstance(value, fx.Node) else None
    return tuple(meta.shape) if hasattr(meta, "shape") else None


def _add_module_vertex(graph: nx.DiGraph, name: str, target: str, module: nn.Module, shape: Optional[tuple[int, ...]], sources: list[str]) -> str:
    """A vertex for one submodule of a fused node, fed by ``sources``; returns its name."""
    graph.add_node(name, op="call_module", target=target, kind=module_kind(module), module_type=type(module).__name__, shape=shape)
    graph.add_edges_from((source, name) for source in sources)
    return name


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
