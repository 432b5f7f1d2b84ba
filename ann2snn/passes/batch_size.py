"""Take a reshape's batch size from the tensor being reshaped (``h.view(x.size(0), -1)`` ->
``h.view(h.size(0), -1)``).

In layer mode under direct encoding the input and the layers before the first neuron run once
on ``B`` rows, the layers after it on ``T*B`` rows (time folded into the batch). A reshape of a
post-neuron ``h`` to ``x.size(0)`` rows, with ``x`` the input, then asks for ``B`` rows of a
``T*B``-row tensor. Wherever the graph proves that ``h`` has as many rows as ``x`` in the CNN
(every op between their common origin and each of them keeps dim 0), ``h.size(0)`` is the same
number in the CNN and the right one in every mode, so the pass uses it. A reshape whose rows it
cannot prove equal (a genuinely batch-changing reshape) is left as written, and warned about
where it would fail (``h`` after a neuron, ``x`` before).

Layer mode also runs the batch in slices, and its folded rows are ordered step by step, so an op
that computes the batch itself (``h.view(x.shape[0] // 2, -1)``, ``h.reshape(2, -1, C)``, a slice,
``torch.cat`` or a sum along dim 0, a permute that moves it) would mix time steps and examples there.
The pass finds them (``batch_arithmetic``) and records the first in the graph's
``meta[LAYER_MODE_BLOCKER]``: the network then runs in step mode only, which computes the CNN's
batch arithmetic as written, once per step. A join of examples with no batch arithmetic in the
graph (``h.reshape(-1, 2 * F)``) shows only when run: the time loop probes for it, running one
example and two (``batch_probe_blocker`` says why).
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Optional

import torch
from torch import fx, nn

from ..analysis import constant_like, describe, module_of, split_static
from ..errors import ConversionWarning
from ..neurons import SpikingNeuron
from ..qcfs import QCFS
from ..report import ConversionReport
from ..temporal import TemporalModule, TimeBroadcast
from ._util import arg, finish, where

#: Modules whose output has as many rows (dim 0) as their input.
_ROW_MODULES: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.dropout._DropoutNd,
    nn.modules.padding._ConstantPadNd,
    nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd,
    nn.modules.padding._CircularPadNd,
    nn.Identity,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.Hardswish,
    nn.Mish,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    QCFS,
    SpikingNeuron,
)

#: Functions and methods (by name, without leading/trailing underscores) that keep the rows of
#: their first argument whatever their other arguments.
_ROW_CALLS = frozenset(
    """relu relu6 hardtanh clamp clip clamp_min clamp_max sigmoid tanh gelu silu elu leaky_relu
    hardswish hardsigmoid softplus mish abs exp log neg pos add radd sub rsub mul rmul div truediv
    rtruediv true_divide multiply divide subtract contiguous float double half to type_as clone
    detach dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout batch_norm
    layer_norm group_norm instance_norm local_response_norm normalize conv1d conv2d conv3d
    conv_transpose1d conv_transpose2d conv_transpose3d linear max_pool1d max_pool2d max_pool3d
    avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
    adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d interpolate upsample
    upsample_nearest upsample_bilinear pad pixel_shuffle pixel_unshuffle channel_shuffle softmax
    log_softmax""".split()
)
#: Calls that keep the rows when their ``dim`` argument (position 1) is given and avoids dim 0.
_DIM_CALLS = frozenset("sum mean amax amin std var logsumexp unsqueeze squeeze cat concat concatenate stack cumsum".split())
#: Reshapes and expansions whose first size may be a batch size read from another tensor.
_RESHAPE_METHODS = frozenset({"view", "reshape", "expand"})
#: Calls that join or split tensors along ``dim`` (position 1, default 0).
_JOIN_SPLIT = {"cat": "concatenates", "concat": "concatenates", "concatenate": "concatenates", "stack": "stacks", "chunk": "splits", "split": "splits", "tensor_split": "splits", "unbind": "splits"}
#: Reductions and scans along ``dim`` (position 1): along dim 0 they mix examples.
_REDUCTIONS = frozenset("sum mean amax amin max min median prod std var logsumexp cumsum cumprod".split())
#: Calls that move dimensions (their dimension arguments follow the tensor).
_MOVES = frozenset({"transpose", "swapaxes", "swapdims", "permute", "movedim", "moveaxis"})
#: Key in a converted graph's ``meta``: why it cannot run in layer mode (None: it can).
LAYER_MODE_BLOCKER = "ann2snn_layer_mode_blocker"


def _name(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    return target.strip("_")


def _positive_dims(value: Any) -> bool:
    """Whether a dim argument names only dimensions after the batch (non-negative, not 0)."""
    dims = value if isinstance(value, (tuple, list)) else (value,)
    return bool(dims) and all(isinstance(d, int) and d >= 1 for d in dims)


def size_source(value: Any) -> Optional[fx.Node]:
    """The tensor ``x`` whose batch size a node reads (``x.size(0)``, ``x.shape[0]``,
    ``x.size()[0]``), else None."""
    if not isinstance(value, fx.Node):
        return None
    if value.op == "call_method" and value.target == "size":
        dim = value.args[1] if len(value.args) > 1 else value.kwargs.get("dim")
        return value.args[0] if dim == 0 else None
    if value.op != "call_function" or value.target is not operator.getitem or value.args[1] != 0:
        return None
    shape = value.args[0]
    if not isinstance(shape, fx.Node):
        return None
    if shape.op == "call_method" and shape.target == "size" and len(shape.args) == 1 and not shape.kwargs:
        return shape.args[0]
    if shape.op == "call_function" and shape.target is getattr and shape.args[1] == "shape":
        return shape.args[0]
    return None


def _sizes(node: fx.Node) -> tuple[Optional[fx.Node], Optional[int]]:
    """(the tensor reshaped, index in ``node.args`` of its first size) of a reshape, else (None, None).
    The sizes may be given one by one (``h.view(b, -1)``) or as one tuple (``h.view((b, -1))``)."""
    if node.op == "call_method" and node.target in _RESHAPE_METHODS and len(node.args) > 1:
        return node.args[0], 1
    if node.op == "call_function" and node.target is torch.reshape and len(node.args) > 1:
        return node.args[0], 1
    return None, None


def _first_size(node: fx.Node, index: int) -> Any:
    value = node.args[index]
    return value[0] if isinstance(value, (tuple, list)) and value else value


def _replace_first_size(node: fx.Node, index: int, new: fx.Node) -> None:
    args = list(node.args)
    value = args[index]
    args[index] = type(value)((new, *value[1:])) if isinstance(value, (tuple, list)) else new
    node.args = tuple(args)


class RowOrigins:
    """Per node, the node its rows (dim 0) come from in the CNN: itself for an op that may change
    them, the origin of its activation input for one that keeps them, None for constants."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.origin: dict[fx.Node, Optional[fx.Node]] = {}
        self.memo: dict = {}

    def __getitem__(self, node: fx.Node) -> Optional[fx.Node]:
        return self.origin.get(node, node)

    def same_rows(self, a: fx.Node, b: fx.Node) -> bool:
        """Whether ``a`` and ``b`` provably have as many rows in the CNN."""
        return self[a] is not None and self[a] is self[b]

    def record(self, node: fx.Node) -> None:
        """Compute ``node``'s origin (its inputs' must be known: call in graph order)."""
        if constant_like(node, self.memo):
            self.origin[node] = None
            return
        activations = [a for a in node.all_input_nodes if not constant_like(a, self.memo)]
        origins = {self[a] for a in activations}
        keeps = len(origins) == 1 and self._keeps_rows(node)
        self.origin[node] = origins.pop() if keeps else node

    def _keeps_rows(self, node: fx.Node) -> bool:
        module = module_of(self.gm, node)
        if module is not None:
            return self._module_keeps_rows(module)
        if node.op not in ("call_function", "call_method"):
            return False
        name = _name(node)
        if name in _ROW_CALLS:
            return True
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if name in _DIM_CALLS:
            return dim is not None and _positive_dims(dim)
        if name == "flatten":
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            return _positive_dims(start)
        if name in ("view", "reshape", "expand") and len(node.args) > 1:
            source = size_source(_first_size(node, 1))
            return source is not None and self.same_rows(source, node.args[0]) or name == "expand" and _first_size(node, 1) == -1
        if name in ("view_as", "reshape_as", "expand_as"):
            return False  # rows of the other tensor: a new origin
        if name == "getitem":
            index = node.args[1]
            first = index[0] if isinstance(index, tuple) and index else None
            return first == slice(None)
        return False

    @staticmethod
    def _module_keeps_rows(module: nn.Module) -> bool:
        if isinstance(module, nn.Flatten):
            return _positive_dims(module.start_dim)
        if isinstance(module, nn.Unflatten):
            return _positive_dims(module.dim)
        if isinstance(module, TemporalModule):
            return not isinstance(module, TimeBroadcast)
        return isinstance(module, _ROW_MODULES)


def batch_size_from_reshaped(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Rewrite ``h.view(x.size(0), ...)`` (also ``x.shape[0]``, ``reshape``, ``torch.reshape``,
    ``expand``) into ``h.view(h.size(0), ...)`` where ``h`` provably has ``x``'s rows in the CNN;
    warn about those it cannot prove and that would fail in layer mode. Record in
    ``gm.meta[LAYER_MODE_BLOCKER]`` why layer mode cannot run the graph, if it cannot."""
    origins = RowOrigins(gm)
    static, dynamic = split_static(gm)
    blockers = []
    for node in list(gm.graph.nodes):
        target, index = _sizes(node)
        source = size_source(_first_size(node, index)) if index is not None else None
        if isinstance(target, fx.Node) and source is not None and source is not target:
            if origins.same_rows(source, target):
                _use_own_rows(gm, node, target, source, index, report)
            elif target in dynamic and source in static:
                _warn_batch_mismatch(gm, node, target, source, report)
                blockers.append((node, f"reshapes `{target.name}`, computed after a spiking neuron, to the batch size of `{source.name}`, computed before any"))
        origins.record(node)
    blockers += batch_arithmetic(gm)
    for node, reason in blockers:
        report.add(node.name, f"{describe(gm, node)}: {reason}", "kept as written; layer mode refused (step mode only)", "carried", where(node))
    gm.meta[LAYER_MODE_BLOCKER] = _blocker_message(gm, *blockers[0]) if blockers else None
    return finish(gm)


def batch_arithmetic(gm: fx.GraphModule) -> list[tuple[fx.Node, str]]:
    """(node, what it does) of every op on activations that computes the batch dimension
    itself rather than keeping it or reduces over it (see the module docstring), in graph order."""
    memo: dict = {}
    found = []
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method", "call_module") and any(not constant_like(a, memo) for a in node.all_input_nodes):
            module = module_of(gm, node)
            reason = _module_batch_change(module) if module is not None else _batch_change(node)
            if reason:
                found.append((node, reason))
    return found


def _module_batch_change(module: nn.Module) -> Optional[str]:
    """How a flatten or unflatten module changes the batch dimension, if it does."""
    if isinstance(module, nn.Flatten):
        return _flatten_change(module.start_dim, module.end_dim)
    if isinstance(module, nn.Unflatten) and module.dim == 0:
        return "unflattens the batch dimension (dim 0)"
    return None


def _flatten_change(start: Any, end: Any) -> Optional[str]:
    """How ``flatten(start, end)`` changes the batch dimension: merging the batch with the next
    dimension only (``flatten(0, 1)``: more rows, each from one example) keeps it."""
    return "flattens the batch dimension (dim 0) into the features" if start == 0 and end != 1 else None


def _batch_change(node: fx.Node) -> Optional[str]:
    """How ``node`` computes the batch dimension of an activation it reads, if it does."""
    name = _name(node)
    target, index = _sizes(node)
    if index is not None:
        first = _first_size(node, index)
        if isinstance(first, int) and first != -1:
            return f"reshapes `{target.name}` to a leading size of {first}, not the batch"
        read = _batch_size_read(first) if isinstance(first, fx.Node) and size_source(first) is None else None
        return f"reshapes `{target.name}` to a leading size computed from the batch size of `{read.name}`" if read is not None else None
    if name in _JOIN_SPLIT:
        dim = arg(node, 2 if name in ("split", "chunk", "tensor_split") else 1, "dim", 0)
        return f"{_JOIN_SPLIT[name]} along the batch dimension (dim 0)" if dim == 0 else None
    if name == "getitem":
        index = node.args[1]
        first = index[0] if isinstance(index, tuple) and index else index
        sliced = isinstance(first, slice) and first != slice(None)
        return "slices the batch dimension (dim 0)" if sliced and _is_tensor_op(node.args[0]) else None
    if name == "flatten":
        return _flatten_change(arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1))
    if name == "unflatten":
        return "unflattens the batch dimension (dim 0)" if arg(node, 1, "dim") == 0 else None
    if name in _REDUCTIONS:
        dim = arg(node, 1, "dim")
        return "reduces over the batch dimension (dim 0)" if dim == 0 or isinstance(dim, (tuple, list)) and 0 in dim else None
    if name in _MOVES:
        dims = [d for a in node.args[1:] for d in (a if isinstance(a, (tuple, list)) else (a,))]
        moved = dims[0] != 0 if name == "permute" and dims else 0 in dims
        return "moves the batch dimension (dim 0)" if moved else None
    return None


def _is_tensor_op(node: Any) -> bool:
    """Whether a node yields one tensor (not a tuple of them, as ``split`` and ``max(dim)`` do)."""
    return isinstance(node, fx.Node) and (node.op in ("call_module", "placeholder") or _name(node) not in ("split", "chunk", "unbind", "tensor_split", "max", "min", "sort", "topk", "lstm", "gru"))


def _batch_size_read(value: fx.Node) -> Optional[fx.Node]:
    """The tensor whose batch size (``x.size(0)``, ``x.shape[0]``) a size expression reads, if any."""
    todo, seen = [value], set()
    while todo:
        node = todo.pop()
        if size_source(node) is not None:
            return size_source(node)
        if node not in seen and node.op in ("call_function", "call_method"):
            seen.add(node)
            todo.extend(node.all_input_nodes)
    return None


def _blocker_message(gm: fx.GraphModule, node: fx.Node, reason: str) -> str:
    """Why layer mode cannot run ``gm`` because of ``node``, and the ways out."""
    return (
        f"{describe(gm, node)} at node `{node.name}` ({where(node) or 'top level'}) {reason}: layer mode folds the T time steps "
        f"into the batch and runs the batch in slices, so there it would mix time steps and examples. Use "
        f"mode='step' (convert(..., mode='step'): the network then runs once per step on the whole batch, as the CNN does), or keep the batch "
        f"dimension in every layer (do that batch arithmetic on the network's input or output, outside the model)"
    )


def batch_probe_blocker(gm: fx.GraphModule, node: fx.Node) -> str:
    """Why layer mode cannot run ``gm``, whose ``node`` fails on one example but not on two."""
    return _blocker_message(gm, node, "fails on one example but runs on two: the network computes with its batch (as `h.reshape(-1, 2 * F)` joins pairs of examples)")


def _use_own_rows(gm: fx.GraphModule, node: fx.Node, target: fx.Node, source: fx.Node, index: int, report: ConversionReport) -> None:
    with gm.graph.inserting_before(node):
        rows = gm.graph.call_method("size", (target, 0))
    rows.meta = dict(node.meta)
    _replace_first_size(node, index, rows)
    report.add(node.name, f"{describe(gm, node)} to `{source.name}`.size(0) rows", f"`{target.name}`.size(0) rows (the same number in the CNN)", "carried", where(node))


def _warn_batch_mismatch(gm: fx.GraphModule, node: fx.Node, target: fx.Node, source: fx.Node, report: ConversionReport) -> None:
    message = (
        f"{describe(gm, node)} at node `{node.name}` ({where(node) or 'top level'}) reshapes `{target.name}`, computed after a "
        f"spiking neuron, to the batch size of `{source.name}`, computed before any: in layer mode `{target.name}` has T times "
        f"as many rows, so this reshape fails there (mode='step' runs it as written); if the batch is unchanged, write "
        f"`{target.name}.size(0)` or `.flatten(1)` instead"
    )
    report.warn(message)
    warnings.warn(message, ConversionWarning, stacklevel=4)


__all__ = ["LAYER_MODE_BLOCKER", "RowOrigins", "batch_arithmetic", "batch_probe_blocker", "batch_size_from_reshaped", "size_source"]
