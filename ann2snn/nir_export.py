"""Export a converted network as a NIR graph (Neuromorphic Intermediate Representation).

``export_nir(snn, "snn.nir")`` writes the rewritten fx graph of ``snn`` as a ``nir.NIRGraph``.
Node names are the fx node names (a neuron fused with the average pool that reads it, a
``NeuronPool``, becomes its two nodes again, named as before the fusion); shapes are per example
(no batch dimension), as NIR wants.

Mapping (our discrete neuron ``v[t+1] = beta*v[t] + I[t]`` with unit time step, NIR's neurons
are continuous; the Euler step with ``dt = 1`` reproduces ours exactly):

- ``beta == 1`` (integrate-and-fire): ``nir.IF`` with ``r = 1``, ``v_threshold = theta``
  (``dv/dt = R*I``, so ``v' = v + I``).
- ``beta < 1``: ``nir.LIF`` with ``tau = 1/(1-beta)``, ``r = tau``, ``v_leak = 0``,
  ``v_threshold = theta`` (``tau*dv/dt = v_leak - v + R*I``, so ``v' = (1 - 1/tau)*v + I``).
- Reset: read from the neuron (``SpikingNeuron.reset_mode``). NIR's neurons reset to
  ``v_reset``, which is 0: exactly the ``"reset-to-zero"`` model (metadata ``reset = "zero"``).
  The default model subtracts the threshold instead, which NIR cannot say: node metadata says
  ``reset = "subtract"``, and an importer that resets to a value differs.
- Initial membrane: ours starts at ``theta/2`` (or, after potential correction, at the calibrated
  ``initial * theta``); NIR has no initial state, so the value is in node metadata as ``v_init``
  (importers start at 0 unless told).
- Output-space bias correction (``neuron.bias``, added to the neuron's input) is added to the
  bias of the conv/linear layer that feeds the neuron alone (directly or through a residual
  add); where there is none, the export is refused (convert with ``correction="none"``).
- Output: our neuron emits ``spike * theta``; NIR neurons emit unit spikes. The threshold is
  folded into the weights of the conv/linear layer that reads the spikes (through average
  pooling and flatten, which commute with the scaling). Where no such layer reads them alone
  (a residual join, the graph output, another neuron), a ``nir.Scale`` node is emitted instead.
- Average pooling: 2-D as ``nir.AvgPool2d``; 1-D (no NIR primitive) as a depthwise
  ``nir.Conv1d`` with weights ``1/k`` and no bias, which is exact. Adaptive average pooling
  becomes the same when the output size divides the input size.
- Residual adds become several edges into one node (NIR sums them); ``TimeBroadcast`` nodes are
  identity. Max pooling (``GatedMaxPool``, alone or fused with its neuron in a ``NeuronPool``,
  and ``nn.MaxPool``) has no NIR primitive: refused.
- Conv2d with a non-square kernel: written with its true weight shape, its output type from
  ann2snn's own shape propagation. nir 1.0.8 types a Conv2d from ``weight.shape[2]`` alone, so
  importing this module corrects ``nir.Conv2d``'s typing in the process (only where nir has the
  fault: ``_patch_nir_conv2d``), which ``nir.read`` needs to read such a file back; a process
  without ann2snn reads it with ``nir.read(path, type_check=False)``.
- The graph runs one time step per call: feed the encoded input at every step (under direct
  encoding the same ``x`` for T steps) and average the output over T, as ``snn(x)`` does.
  Graph metadata records ``dt``, ``T``, the encoder and the readout rule.
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from .analysis import describe, fresh_name, propagate_shapes
from .atomic import atomic_path
from .errors import ConversionError
from .neurons import NorseLIFNeuron, ResetToZeroNeuron, SpikingNeuron
from .temporal import GatedMaxPool, NeuronPool, TimeBroadcast
from .timeloop import SpikingNetwork, require_network

try:  # an optional dependency: pip install 'ann2snn[nir]'
    import nir
except ImportError:  # pragma: no cover - exercised only without the extra
    nir = None


#: The neuron models whose dynamics the export writes as NIR's IF/LIF (a model defined elsewhere,
#: with its own step, would be written as one of these, silently wrong: it is refused).
NIR_NEURONS = (SpikingNeuron, ResetToZeroNeuron, NorseLIFNeuron)


def _conv2d_output_type(node: "nir.Conv2d") -> np.ndarray:
    """The output type ``[C_out, H_out, W_out]`` of a NIR Conv2d, each spatial size from its own
    kernel size (``weight.shape[2:]``), padding, dilation and stride."""
    kernel = tuple(int(k) for k in node.weight.shape[2:])
    sizes = nir.ir.utils.calculate_conv_output(tuple(int(n) for n in node.input_shape), node.padding, node.dilation, kernel, node.stride)
    return np.array([node.weight.shape[0], *sizes])


def _types_nonsquare_conv2d_wrongly() -> bool:
    """Whether ``nir.Conv2d`` types a non-square kernel with ``weight.shape[2]`` for both
    dimensions (nir 1.0.8), which makes every graph with one fail its type check."""
    probe = nir.Conv2d(input_shape=(8, 8), weight=np.zeros((1, 1, 3, 5), np.float32), stride=1, padding=0, dilation=1, groups=1, bias=np.zeros(1, np.float32))
    return not np.array_equal(probe.output_type["output"], [1, 6, 4])


def _patch_nir_conv2d() -> None:
    """Work around nir's typing of non-square Conv2d kernels (``_types_nonsquare_conv2d_wrongly``):
    after nir's own ``__post_init__``, the output type is computed per dimension. Applied once,
    only where nir has the fault, so that ``NIRGraph`` type checks and ``nir.read`` accept the
    graphs ``export_nir`` writes; square kernels are typed as before."""
    if getattr(nir.Conv2d, "_ann2snn_typed", False) or not _types_nonsquare_conv2d_wrongly():
        return
    original = nir.Conv2d.__post_init__

    def __post_init__(self) -> None:
        original(self)
        if self.input_shape is not None:
            self.output_type = {"output": _conv2d_output_type(self)}

    nir.Conv2d.__post_init__ = __post_init__
    nir.Conv2d._ann2snn_typed = True


if nir is not None:
    _patch_nir_conv2d()

#: A value of the fx graph as NIR sees it: the NIR nodes whose outputs sum to it, each with the
#: factor (broadcastable to the per-example shape) its output must be multiplied by.
Sources = list[tuple[str, np.ndarray]]

_ONE = np.array(1.0, dtype=np.float32)
_POOL_FUNCTIONS = {
    F.avg_pool1d: nn.AvgPool1d,
    F.avg_pool2d: nn.AvgPool2d,
    F.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d,
    F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d,
}


def export_nir(snn: SpikingNetwork, path: Optional[str | os.PathLike] = None, *, input_shape: Optional[tuple[int, ...]] = None) -> nir.NIRGraph:
    """Translate ``snn`` into a NIR graph and, if ``path`` is given, write it there atomically.

    ``input_shape`` (per example, every size given) is needed when ``snn.input_shape`` is unknown
    or has free (None) sizes, as after ``convert(..., input_shape=(1, None))``; it takes precedence.
    Raises ConversionError for anything NIR cannot represent exactly (max pooling, analog ops).
    """
    require_network(snn, "export_nir")
    if nir is None:
        raise ConversionError("export_nir needs the `nir` package: pip install 'ann2snn[nir]'")
    graph = _Exporter(snn, input_shape).run()
    if path is not None:
        _write_atomically(graph, Path(path))
    return graph


#: How to give export_nir a concrete shape, quoted by its refusals.
SHAPE_EXAMPLE = "ann2snn.export_nir(snn, path, input_shape=(1, 8000))"


def _export_shape(snn: SpikingNetwork, input_shape: Optional[tuple[Optional[int], ...]]) -> tuple[int, ...]:
    """The per-example input shape the NIR graph is built for: ``input_shape`` if given, else
    ``snn.input_shape``; refused unless every size is known (NIR graphs have fixed sizes)."""
    shape = input_shape if input_shape is not None else snn.input_shape
    way_out = f"pass the per-example shape (no batch dimension) with every size given, e.g. {SHAPE_EXAMPLE}"
    if shape is None:
        raise ConversionError(f"export_nir needs the input shape and the network does not know it (converted without calibration data or input_shape): {way_out}")
    if any(size is None for size in shape):
        whose = "the input_shape given" if input_shape is not None else "the network's input shape (snn.input_shape)"
        sizes = ", ".join(map(str, shape))
        raise ConversionError(f"export_nir needs the input shape with concrete sizes (a NIR graph has fixed sizes), and {whose} [{sizes}] has free (None) sizes: {way_out}")
    return tuple(int(size) for size in shape)


def _write_atomically(graph: nir.NIRGraph, path: Path) -> None:
    with atomic_path(path) as tmp:
        nir.write(tmp, graph)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float32).numpy().copy()


def _is_one(scale: np.ndarray) -> bool:
    return bool(np.all(scale == 1.0))


def _pair(value: Any) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _dense_groups(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv weight [C_out, C_in/groups, k...] as the equal dense weight [C_out, C_in, k...]
    (NIR 1.0.8 infers a grouped conv's input channels from the weight alone, wrongly)."""
    if groups == 1:
        return weight
    out_per_group, in_per_group = weight.shape[0] // groups, weight.shape[1]
    dense = np.zeros((weight.shape[0], in_per_group * groups) + weight.shape[2:], np.float32)
    for g in range(groups):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        dense[rows, g * in_per_group : (g + 1) * in_per_group] = weight[rows]
    return dense


def _per_channel(scale: np.ndarray, shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """The scale as one factor per channel (axis 0 of ``shape``), or None if it varies within a channel."""
    rows = np.broadcast_to(scale, shape).reshape(shape[0], -1)
    return rows[:, 0].copy() if np.all(rows == rows[:, :1]) else None


class _Exporter:
    """One walk over the fx graph, building NIR nodes and edges."""

    def __init__(self, snn: SpikingNetwork, input_shape: Optional[tuple[int, ...]]) -> None:
        self.snn = snn
        self.gm = _unfuse_average_pools(snn.network)
        self.shapes = _record_shapes(snn, self.gm, _export_shape(snn, input_shape))
        self.nodes: dict[str, nir.NIRNode] = {}
        self.edges: list[tuple[str, str]] = []
        self.values: dict[fx.Node, Sources] = {}
        self.scale_nodes: dict[str, str] = {}
        self.folded_into: set[str] = set()
        self.reserved = {n.name for n in self.gm.graph.nodes if n.op != "output"}

    # -- bookkeeping ----------------------------------------------------------------------------
    def refuse(self, node: fx.Node, why: str) -> ConversionError:
        return ConversionError(f"cannot export node `{node.name}` ({describe(self.gm, node)}) to NIR: {why}")

    def name(self, base: str) -> str:
        """A NIR node name not taken by a NIR node or an fx node."""
        return fresh_name(base, lambda name: name in self.nodes or name in self.reserved)

    def add(self, name: str, node: nir.NIRNode, sources: Sources) -> None:
        if name in self.folded_into:
            node.metadata["input_scale"] = "folded: the weights include the spike height (threshold) of the neurons upstream"
        self.nodes[name] = node
        for source, _ in sources:
            self.edges.append((source, name))

    def input_of(self, node: fx.Node, index: int = 0) -> Sources:
        value = node.args[index]
        if not isinstance(value, fx.Node) or value not in self.values:
            raise self.refuse(node, f"argument {index} is not a tensor computed from the input")
        return self.values[value]

    def unscaled(self, sources: Sources) -> Sources:
        """The same sum with every scale applied by a ``nir.Scale`` node (shared per source)."""
        out = []
        for source, scale in sources:
            if not _is_one(scale):
                if source not in self.scale_nodes:
                    shape = self.shapes[source]
                    name = self.name(f"{source}_scale")
                    scale = np.broadcast_to(scale, shape).astype(np.float32).copy()
                    self.add(name, nir.Scale(scale=scale, metadata={"represents": "the spike height (threshold) of the neurons upstream"}), [(source, scale)])
                    self.shapes[name] = shape
                    self.scale_nodes[source] = name
                source = self.scale_nodes[source]
            out.append((source, _ONE))
        return out

    # -- the walk -------------------------------------------------------------------------------
    def run(self) -> nir.NIRGraph:
        output = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    raise self.refuse(node, "NIR graphs here take a single input")
                self.add(node.name, nir.Input(input_type={"input": np.array(self.shapes[node.name])}), [])
                self.values[node] = [(node.name, _ONE)]
            elif node.op == "output":
                output = node
            elif node.op == "call_module":
                self.values[node] = self.module(node, self.gm.get_submodule(str(node.target)))
            elif node.op == "call_function":
                self.values[node] = self.function(node)
            elif node.op == "call_method":
                self.values[node] = self.method(node)
            else:
                raise self.refuse(node, "constants and parameters read by the graph (get_attr) have no NIR equivalent")
        result = output.args[0]
        if not isinstance(result, fx.Node):
            raise self.refuse(output, "NIR graphs here have a single tensor output")
        name = self.name("output")
        self.add(name, nir.Output(output_type={"output": np.array(self.shapes[result.name])}), self.unscaled(self.values[result]))
        metadata = {
            "producer": "ann2snn",
            "dt": 1.0,
            "T": self.snn.T,
            "encoder": self.snn.encoder.kind,
            "encoder_scale": float(self.snn.encoder.scale),
            "readout": "the output averaged over T steps; feed the encoded input at every step",
        }
        try:
            return nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)
        except ValueError as error:
            raise ConversionError(f"the NIR graph does not type-check: {error}") from error

    def module(self, node: fx.Node, module: nn.Module) -> Sources:
        if isinstance(module, TimeBroadcast):
            return self.input_of(node)
        if isinstance(module, SpikingNeuron):
            return self.neuron(node, module)
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            return self.conv(node, module)
        if isinstance(module, nn.Linear):
            return self.linear(node, module)
        if isinstance(module, (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return self.pool(node, module)
        if isinstance(module, nn.Flatten):
            return self.flatten(node, module.start_dim, module.end_dim)
        if isinstance(module, (GatedMaxPool, NeuronPool, nn.MaxPool1d, nn.MaxPool2d)):
            raise self.refuse(node, "max pooling has no NIR primitive; convert with maxpool='avg' to export")
        raise self.refuse(node, "no NIR equivalent for this module")

    def function(self, node: fx.Node) -> Sources:
        if node.target in (operator.add, torch.add) and len(node.args) == 2 and not node.kwargs:
            return self.join(node)
        if node.target is torch.flatten:
            return self.flatten(node, node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0), node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1))
        if node.target in _POOL_FUNCTIONS:
            return self.pool(node, _POOL_FUNCTIONS[node.target](*node.args[1:], **node.kwargs))
        raise self.refuse(node, "no NIR equivalent for this function")

    def method(self, node: fx.Node) -> Sources:
        if node.target == "contiguous":
            return self.input_of(node)
        if node.target == "flatten":
            return self.flatten(node, node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0), node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1))
        if node.target in ("view", "reshape"):
            before, after = self.shapes[node.args[0].name], self.shapes[node.name]
            if after == before:
                return self.input_of(node)
            if after == (math.prod(before),):
                return self.flatten(node, 1, -1)
            raise self.refuse(node, f"only flattening reshapes have a NIR equivalent, not {before} -> {after}")
        raise self.refuse(node, "no NIR equivalent for this method")

    # -- node kinds -----------------------------------------------------------------------------
    def join(self, node: fx.Node) -> Sources:
        sources = self.input_of(node, 0) + self.input_of(node, 1)
        names = [s for s, _ in sources]
        if len(set(names)) != len(names):
            raise self.refuse(node, "a value added to itself would need a duplicate NIR edge; scale it instead")
        return sources

    def neuron(self, node: fx.Node, neuron: SpikingNeuron) -> Sources:
        if type(neuron) not in NIR_NEURONS:
            known = ", ".join(repr(model.model_name) for model in NIR_NEURONS)
            raise self.refuse(
                node, f"is a {type(neuron).__name__} (neuron model {neuron.model_name!r}), whose dynamics NIR export does not know: it writes models {known}; convert with one of them to export"
            )
        shape = self.shapes[node.name]
        theta = _array(neuron.threshold)
        theta = theta.reshape(-1, *([1] * (len(shape) - 1))) if theta.ndim else theta
        full = lambda a: np.broadcast_to(a, shape).astype(np.float32).copy()  # noqa: E731
        beta = _array(neuron.beta)
        beta = beta.reshape(-1, *([1] * (len(shape) - 1))) if beta.ndim else beta
        initial = _array(neuron.initial)
        initial = initial.reshape(-1, *([1] * (len(shape) - 1))) if initial.ndim else initial
        metadata = {"reset": neuron.reset_mode, "v_init": full(theta * initial), "source": neuron.source, "dt": 1.0}
        sources = self.unscaled(self.input_of(node))
        if np.any(_array(neuron.bias) != 0):
            self.fold_bias(node, sources, _array(neuron.bias), shape[0])
        if np.all(beta == 1.0):
            nir_node = nir.IF(r=full(1.0), v_threshold=full(theta), v_reset=full(0.0), metadata=metadata)
        elif np.any(beta >= 1.0):
            raise self.refuse(node, "mixes integrate-and-fire (beta = 1) and leaky channels, which NIR's IF and LIF nodes cannot share")
        else:
            tau = full(1.0 / (1.0 - beta))
            nir_node = nir.LIF(tau=tau, r=tau.copy(), v_leak=full(0.0), v_threshold=full(theta), v_reset=full(0.0), metadata=metadata)
        self.add(node.name, nir_node, sources)
        return [(node.name, theta.astype(np.float32))]

    def fold_bias(self, node: fx.Node, sources: Sources, bias: np.ndarray, channels: int) -> None:
        """Add a neuron's input offset to the bias of a conv/linear NIR node that feeds only it."""
        users = {n.name: len(n.users) for n in self.gm.graph.nodes}
        for source, _ in sources:
            target = self.nodes.get(source)
            if isinstance(target, (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)) and users.get(source) == 1:
                offset = np.broadcast_to(bias, (channels,)).astype(np.float32)
                if isinstance(target, nir.Linear):
                    self.nodes[source] = nir.Affine(weight=target.weight, bias=offset.copy(), metadata=target.metadata)
                else:
                    target.bias = (target.bias + offset).astype(np.float32)
                return
        raise self.refuse(node, "its output-space bias correction has no conv or linear layer feeding it alone to go into; convert with correction='none' to export")

    def conv(self, node: fx.Node, conv: nn.Conv1d | nn.Conv2d) -> Sources:
        if conv.padding_mode != "zeros":
            raise self.refuse(node, f"padding_mode={conv.padding_mode!r} has no NIR equivalent")
        weight, sources = self.fold(node, _dense_groups(_array(conv.weight), conv.groups))
        bias = _array(conv.bias) if conv.bias is not None else np.zeros(conv.out_channels, np.float32)
        spatial = self.shapes[node.args[0].name][1:]
        padding = conv.padding if isinstance(conv.padding, str) else (conv.padding[0] if isinstance(conv, nn.Conv1d) else tuple(conv.padding))
        if isinstance(conv, nn.Conv1d):
            nir_node = nir.Conv1d(input_shape=spatial[0], weight=weight, stride=conv.stride[0], padding=padding, dilation=conv.dilation[0], groups=1, bias=bias)
        else:
            nir_node = nir.Conv2d(input_shape=tuple(spatial), weight=weight, stride=tuple(conv.stride), padding=padding, dilation=tuple(conv.dilation), groups=1, bias=bias)
            nir_node.output_type = {"output": np.array(self.shapes[node.name])}  # the shape it has, whatever nir computes
        self.add(node.name, nir_node, sources)
        return [(node.name, _ONE)]

    def linear(self, node: fx.Node, linear: nn.Linear) -> Sources:
        if len(self.shapes[node.args[0].name]) != 1:
            raise self.refuse(node, "NIR's Affine takes flat inputs; flatten before the linear layer")
        weight, sources = self.fold(node, _array(linear.weight))
        nir_node = nir.Affine(weight=weight, bias=_array(linear.bias)) if linear.bias is not None else nir.Linear(weight=weight)
        self.add(node.name, nir_node, sources)
        return [(node.name, _ONE)]

    def fold(self, node: fx.Node, weight: np.ndarray) -> tuple[np.ndarray, Sources]:
        """Multiply a single input's scale into the input channels of ``weight`` where it is
        constant over everything but channels; otherwise apply it with Scale nodes."""
        sources = self.input_of(node)
        in_shape = self.shapes[node.args[0].name]
        if len(sources) > 1 or _is_one(sources[0][1]):
            return weight, self.unscaled(sources)
        source = sources[0]
        per_channel = _per_channel(source[1], in_shape)
        if per_channel is None:
            return weight, self.unscaled(sources)
        factor = per_channel.reshape((1, -1) + (1,) * (weight.ndim - 2))
        self.folded_into.add(node.name)
        return (weight * factor).astype(np.float32), [(source[0], _ONE)]

    def pool(self, node: fx.Node, pool: nn.Module) -> Sources:
        before, after = self.shapes[node.args[0].name], self.shapes[node.name]
        dims = len(before) - 1
        if isinstance(pool, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            if any(b % a for b, a in zip(before[1:], after[1:])):
                raise self.refuse(node, f"adaptive average pooling from {before} to {after} has uneven windows; NIR pools have one window size")
            kernel = tuple(b // a for b, a in zip(before[1:], after[1:]))
            stride, padding = kernel, (0,) * dims
        else:
            if getattr(pool, "divisor_override", None):
                raise self.refuse(node, "divisor_override has no NIR equivalent")
            kernel, stride, padding = (tuple(_pair(v)[:dims]) if dims == 2 else (v[0] if isinstance(v, (tuple, list)) else v,) for v in (pool.kernel_size, pool.stride, pool.padding))
            if any(padding) and not pool.count_include_pad:
                raise self.refuse(node, "padded average pooling with count_include_pad=False divides by a varying count at the border; NIR pools cannot")
            floor = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(before[1:], kernel, stride, padding))
            if floor != after[1:]:
                raise self.refuse(node, "ceil_mode pooling gives a different shape than NIR's pooling")
        sources = self.input_of(node)
        if len(sources) > 1 or _per_channel(sources[0][1], before) is None:
            sources = self.unscaled(sources)
        if dims == 2:
            nir_node = nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))
        else:
            channels = before[0]
            weight = _dense_groups(np.full((channels, 1, kernel[0]), 1.0 / kernel[0], np.float32), channels)
            nir_node = nir.Conv1d(
                input_shape=before[1],
                weight=weight,
                stride=stride[0],
                padding=padding[0],
                dilation=1,
                groups=1,
                bias=np.zeros(channels, np.float32),
                metadata={"represents": f"{type(pool).__name__}: the mean of each channel's window"},
            )
        self.add(node.name, nir_node, sources)
        return [(node.name, sources[0][1] if len(sources) == 1 else _ONE)]

    def flatten(self, node: fx.Node, start_dim: int, end_dim: int) -> Sources:
        before = self.shapes[node.args[0].name]
        rank = len(before) + 1
        start, end = start_dim % rank, end_dim % rank
        if start == 0:
            raise self.refuse(node, "flattening the batch dimension has no NIR equivalent")
        sources = self.input_of(node)
        if len(sources) > 1:
            sources = self.unscaled(sources)
        scale = sources[0][1]
        scale = scale if scale.ndim == 0 else np.broadcast_to(scale, before).reshape(self.shapes[node.name])
        self.add(node.name, nir.Flatten(input_type={"input": np.array(before)}, start_dim=start - 1, end_dim=end - 1), sources)
        return [(node.name, scale.astype(np.float32))]


def _unfuse_average_pools(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm``'s graph with every neuron fused with an average pool (``NeuronPool``) as its two
    nodes again, named as they were before the fusion (NIR has a neuron node and a pool node);
    a new graph module sharing ``gm``'s modules: ``gm`` itself is unchanged."""
    graph, values = fx.Graph(), {}
    for node in gm.graph.nodes:
        fused = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(fused, NeuronPool) and fused.averages:
            neuron_name, pool_name = fused.node_names or (f"{node.name}_neuron", node.name)
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            neuron = graph.create_node("call_module", f"{node.target}.neuron", args, kwargs, name=neuron_name)
            values[node] = graph.create_node("call_module", f"{node.target}.pool", (neuron,), {}, name=pool_name)
        else:
            values[node] = graph.node_copy(node, values.__getitem__)
    return fx.GraphModule(gm, graph)


def _record_shapes(snn: SpikingNetwork, gm: fx.GraphModule, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Per-example output shape of every node of ``gm`` (``snn``'s network or a graph module
    sharing its modules) with a tensor output, from one analog pass on a zero input
    (``analysis.propagate_shapes``)."""
    device = next((b.device for b in snn.network.buffers()), torch.device("cpu"))
    x = torch.zeros(1, *input_shape, device=device)
    try:
        with torch.no_grad(), snn.analog_mode():
            metas = propagate_shapes(gm, x)
    except RuntimeError as error:
        raise ConversionError(f"the network fails on an input of per-example shape {input_shape}: {error}") from error
    return {name: tuple(meta.shape[1:]) for name, meta in metas.items() if isinstance(meta, TensorMetadata)}
