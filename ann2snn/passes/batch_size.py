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
example and the whole batch (``batch_probe_blocker`` says why), and looks again for batch
arithmetic with the shapes of one example recorded in the graph (negative dimensions resolved,
tuples told from tensors: ``batch_arithmetic``).
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Optional

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

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
_JOIN_SPLIT = {"cat": "concatenates", "concat": "concatenates", "concatenate": "concatenates", "chunk": "splits", "split": "splits", "tensor_split": "splits", "unbind": "splits"}
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


def batch_arithmetic_blocker(gm: fx.GraphModule) -> Optional[str]:
    """Why layer mode cannot run ``gm`` (its first op found by ``batch_arithmetic``), or None."""
    found = batch_arithmetic(gm)
    return _blocker_message(gm, *found[0]) if found else None


def batch_arithmetic(gm: fx.GraphModule) -> list[tuple[fx.Node, str]]:
    """(node, what it does) of every op on activations that computes the batch dimension
    itself rather than keeping it or reduces over it (see the module docstring), in graph order.

    Where the nodes carry shapes (``analysis.propagate_shapes``, as the time loop runs once per
    input shape) negative dimensions are resolved and indexing a tuple is told from indexing a
    tensor; without them such an op counts only where the graph alone shows what it does. A new
    leading dimension (``torch.stack([a, b])``, ``h.unsqueeze(0)``, ``h[None]``) moves the batch
    to dim 1: ops along that leading dimension are fine, and a sum, mean or index over it brings
    the batch back to dim 0 (branch fusion ``torch.stack([a, b]).sum(0)``)."""
    memo: dict = {}
    batch_dims: dict[fx.Node, int] = {}
    found = []
    for node in gm.graph.nodes:
        if node.op == "output":
            found += [(value, _LEFT_AT_ONE) for value in node.all_input_nodes if batch_dims.get(value, 0)]
            continue
        activations = [a for a in node.all_input_nodes if not constant_like(a, memo)]
        if node.op not in ("call_function", "call_method", "call_module") or not activations:
            continue
        module = module_of(gm, node)
        dims = {batch_dims.get(a, 0) for a in activations}
        if dims == {0}:
            reason, batch_dims[node] = _module_batch_change(node, module) if module is not None else _batch_change(gm, node)
        elif dims == {1}:
            reason, batch_dims[node] = _stacked_batch_change(gm, node, module)
        else:
            reason = "combines tensors whose batch dimension is at different places (one stacked or unsqueezed at dim 0)"
        if reason:
            found.append((node, reason))
            batch_dims[node] = 0  # reported here: the ops after it are judged as if it kept the batch
    return found


#: Reductions along ``dim`` (position 1; none given: every dimension, the batch included).
_REDUCTIONS = frozenset("sum mean amax amin max min median nanmedian prod std var logsumexp nansum nanmean all any argmax argmin count_nonzero std_mean var_mean aminmax norm".split())
#: Scans along ``dim`` (position 1): each entry mixes those before it along that dimension.
_SCANS = frozenset("cumsum cumprod logcumsumexp cummax cummin".split())
#: Other calls that compute along a dimension argument: (its position, its default; None: every
#: dimension, the tensor flattened). Position 9: the call takes none.
_ALONG = {
    "roll": (2, None),
    "flip": (1, None),
    "flipud": (9, 0),
    "index_select": (1, None),
    "narrow": (1, None),
    "select": (1, None),
    "gather": (1, None),
    "take": (9, None),
    "take_along_dim": (2, None),
    "repeat_interleave": (2, None),
    "sort": (1, -1),
    "argsort": (1, -1),
    "topk": (2, -1),
    "kthvalue": (2, -1),
    "softmax": (1, -1),
    "log_softmax": (1, -1),
    "softmin": (1, -1),
}
#: Calls that return a tuple of tensors (never indexed along the batch by ``[i]``).
_TUPLE_CALLS = frozenset("split chunk unbind tensor_split max min median sort topk kthvalue aminmax std_mean var_mean lstm gru rnn".split())
#: Elementwise calls: they keep every dimension where it is.
_ELEMENTWISE = frozenset(
    """relu relu6 hardtanh clamp clip clamp_min clamp_max sigmoid tanh gelu silu elu leaky_relu
    hardswish hardsigmoid softplus mish abs exp log neg pos add radd sub rsub mul rmul div truediv
    rtruediv true_divide multiply divide subtract contiguous float double half to type_as clone
    detach dropout""".split()
)
#: Elementwise modules (ReLU has become a neuron by then, which runs along time: not one of them).
_ELEMENTWISE_MODULES = (nn.Identity, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Hardswish, nn.Mish, nn.Softplus, nn.modules.dropout._DropoutNd)
_LEFT_AT_ONE = "leaves the batch dimension at dim 1 (after a stack or unsqueeze at dim 0) in the network's output"
_NOT_RESTORED = "takes a tensor whose batch dimension is at dim 1 (after a stack or unsqueeze at dim 0) and does not bring it back to dim 0 (as a sum, mean or index over dim 0 does)"


def _module_batch_change(node: fx.Node, module: nn.Module) -> tuple[Optional[str], int]:
    """(how a flatten or unflatten module changes the batch dimension, if it does; where the batch then is)."""
    if isinstance(module, nn.Flatten):
        return _flatten_change(node, module.start_dim, module.end_dim), 0
    if isinstance(module, nn.Unflatten) and module.dim == 0:
        return "unflattens the batch dimension (dim 0)", 0
    return None, 0


def _flatten_change(node: fx.Node, start: Any, end: Any) -> Optional[str]:
    """How ``flatten(start, end)`` changes the batch dimension: merging the batch with the next
    dimension only (``flatten(0, 1)``: more rows, each from one example) keeps it, and so does a
    flatten of all dimensions whose result is only the network's output (as ``view(-1)``)."""
    rank = _rank(node.args[0])
    end = end + rank if isinstance(end, int) and end < 0 and rank is not None else end
    if start != 0 or end == 1 or end == (-1 if rank is None else rank - 1) and all(user.op == "output" for user in node.users):
        return None
    return "flattens the batch dimension (dim 0) into the features"


def _batch_change(gm: fx.GraphModule, node: fx.Node) -> tuple[Optional[str], int]:
    """(how ``node`` computes the batch dimension of an activation it reads, if it does; where the
    batch then is: 1 after a new leading dimension)."""
    name = _name(node)
    target, index = _sizes(node)
    rank = _rank(node.args[0]) if node.args else None
    if index is not None:
        first = _first_size(node, index)
        if isinstance(first, int) and first != -1:
            return f"reshapes `{target.name}` to a leading size of {first}, not the batch", 0
        read = _batch_size_read(first) if isinstance(first, fx.Node) and size_source(first) is None else None
        return (f"reshapes `{target.name}` to a leading size computed from the batch size of `{read.name}`" if read is not None else None), 0
    if name == "stack":
        tensors = arg(node, 0, "tensors", ())
        rank = _rank(tensors[0]) if isinstance(tensors, (tuple, list)) and tensors else None
        return None, int(_covers(arg(node, 1, "dim", 0), 0, None if rank is None else rank + 1))
    if name in _JOIN_SPLIT:
        dim = arg(node, 2 if name in ("split", "chunk", "tensor_split") else 1, "dim", 0)
        return (f"{_JOIN_SPLIT[name]} along the batch dimension (dim 0)" if _covers(dim, 0, rank) else None), 0
    if name == "unsqueeze":
        return None, int(_covers(arg(node, 1, "dim"), 0, None if rank is None else rank + 1))
    if name == "getitem":
        return _index_change(gm, node)
    if name == "flatten":
        return _flatten_change(node, arg(node, 1, "start_dim", 0), arg(node, 2, "end_dim", -1)), 0
    if name == "unflatten":
        return ("unflattens the batch dimension (dim 0)" if arg(node, 1, "dim") == 0 else None), 0
    if name in _MOVES:
        dims = [d + rank if isinstance(d, int) and d < 0 and rank is not None else d for a in node.args[1:] for d in (a if isinstance(a, (tuple, list)) else (a,))]
        moved = dims[0] != 0 if name == "permute" and dims else 0 in dims
        return ("moves the batch dimension (dim 0)" if moved else None), 0
    return _along_change(node, name, 0, rank), 0


def _along_change(node: fx.Node, name: str, batch: int, rank: Optional[int]) -> Optional[str]:
    """How a reduction, scan or other op along a dimension mixes the examples of the batch (at dim ``batch``), if it does."""
    if name in _REDUCTIONS and not _elementwise_extremum(node):
        position = 2 if name == "norm" else 1
        dim = _dim_arg(node, position, None)
        if _covers(dim, batch, rank):
            return "reduces over every dimension, the batch included" if dim is None or isinstance(dim, bool) else f"reduces over the batch dimension (dim {batch})"
    if name in _SCANS and _covers(_dim_arg(node, 1, None), batch, rank):
        return f"scans along the batch dimension (dim {batch})"
    if name in _ALONG and _covers(_dim_arg(node, *_ALONG[name]), batch, rank):
        return f"computes along the batch dimension (dim {batch}): {name}"
    if name == "repeat" and batch == 0:
        sizes = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (tuple, list)) else node.args[1:]
        if sizes and sizes[0] != 1:
            return "repeats the batch (dim 0)"
    return None


def _stacked_batch_change(gm: fx.GraphModule, node: fx.Node, module: Optional[nn.Module]) -> tuple[Optional[str], int]:
    """(how ``node`` computes with the batch of a tensor whose batch is at dim 1, if it does; where the batch then is)."""
    if module is not None:
        return (None, 1) if isinstance(module, _ELEMENTWISE_MODULES) else (_NOT_RESTORED, 0)
    name = _name(node)
    rank = _rank(node.args[0]) if node.args else None
    if name in _ELEMENTWISE:
        return None, 1
    if name in _REDUCTIONS and not _elementwise_extremum(node) or name == "squeeze":
        dim = _dim_arg(node, 2 if name == "norm" else 1, None)
        if dim is None or _covers(dim, 1, rank):
            return _NOT_RESTORED if name == "squeeze" else "reduces over the batch dimension (dim 1 after a stack or unsqueeze at dim 0)", 0
        return None, 1 if arg(node, 2, "keepdim", False) is True or not _covers(dim, 0, rank) else 0
    if name in ("cat", "concat", "concatenate"):
        return ("concatenates along the batch dimension (dim 1 after a stack or unsqueeze at dim 0)" if _covers(arg(node, 1, "dim", 0), 1, rank) else None), 1
    if name in _SCANS or name in _ALONG:
        return _along_change(node, name, 1, rank), 1
    if name == "getitem":
        if _is_tensor(gm, node.args[0]) is False:
            return None, 1  # one tensor of a tuple
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if len(index) > 1 and index[1] not in (slice(None), Ellipsis):
            return "indexes the batch dimension (dim 1 after a stack or unsqueeze at dim 0)", 0
        return (None, 0) if _is_integer(index[0]) else (None, 1) if isinstance(index[0], slice) else (_NOT_RESTORED, 0)
    return _NOT_RESTORED, 0


def _index_change(gm: fx.GraphModule, node: fx.Node) -> tuple[Optional[str], int]:
    """(how ``h[index]`` computes with the batch, if it does; where the batch then is). A slice, an
    integer, a list or a tensor first in the index picks examples; ``None`` first adds a leading dimension."""
    index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
    first = index[0] if index else slice(None)
    tensor = _is_tensor(gm, node.args[0])
    if first is None and tensor is not False:
        second = index[1] if len(index) > 1 else slice(None)
        return ("indexes the batch dimension (dim 1 after `None` at dim 0)" if second not in (slice(None), Ellipsis) else None), 1
    if first is Ellipsis or first == slice(None):
        return None, 0
    if isinstance(first, slice):
        return ("slices the batch dimension (dim 0)" if tensor is not False else None), 0
    return ("indexes the batch dimension (dim 0)" if tensor else None), 0


def _is_integer(value: Any) -> bool:
    """Whether an index is one integer (written, or computed from sizes)."""
    return isinstance(value, int) and not isinstance(value, bool) or isinstance(value, fx.Node) and constant_like(value, {})


def _elementwise_extremum(node: fx.Node) -> bool:
    """Whether ``max``/``min`` compares two tensors elementwise (``torch.max(a, b)``) rather than reducing."""
    other = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    return isinstance(other, fx.Node) and not constant_like(other, {})


def _dim_arg(node: fx.Node, position: int, default: Any) -> Any:
    """The dimension argument of a call, given at ``position`` or as ``dim``/``dims``."""
    if len(node.args) > position:
        return node.args[position]
    return next((node.kwargs[key] for key in ("dim", "dims") if key in node.kwargs), default)


def _covers(dims: Any, axis: int, rank: Optional[int]) -> bool:
    """Whether a dimension argument (an int, a list of them; None or ``()``: every dimension) names
    ``axis``; negative dimensions count from ``rank`` where it is known."""
    if dims is None or isinstance(dims, bool):
        return True
    items = dims if isinstance(dims, (tuple, list)) else (dims,)
    if not items:
        return True
    return any(isinstance(d, int) and (d + rank if d < 0 and rank is not None else d) == axis for d in items)


def _shape_meta(node: Any) -> Any:
    """A node's recorded output (fx ``TensorMetadata``, or ``torch.export``'s example value), or None."""
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return meta if meta is not None else node.meta.get("val")


def _rank(node: Any) -> Optional[int]:
    """The number of dimensions of a node's output where its meta records it, else None."""
    meta = _shape_meta(node)
    if isinstance(meta, TensorMetadata):
        return len(meta.shape)
    return meta.dim() if isinstance(meta, torch.Tensor) else None


def _is_tensor(gm: fx.GraphModule, node: Any) -> Optional[bool]:
    """Whether a node yields one tensor (not a tuple of them, as ``split``, ``max(dim)`` or an LSTM
    do): from its recorded shape where it has one, else from the op; None: not known."""
    if not isinstance(node, fx.Node):
        return False
    meta, kind = _shape_meta(node), node.meta.get("type")
    if meta is not None or kind is not None:
        return isinstance(meta, (TensorMetadata, torch.Tensor)) or isinstance(kind, type) and issubclass(kind, torch.Tensor)
    if node.op == "placeholder":
        return True
    module = module_of(gm, node)
    if module is not None:
        if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)) or getattr(module, "return_indices", False):
            return False
        return True if isinstance(module, (*_ROW_MODULES, nn.Flatten, nn.Unflatten)) else None
    name = _name(node)
    if name in _TUPLE_CALLS and (name not in ("max", "min", "median") or len(node.args) > 1 or "dim" in node.kwargs):
        return False
    if name == "getitem":
        return True if _is_tensor(gm, node.args[0]) else None
    if node.kwargs.get("return_indices"):
        return False
    return True if name in _ROW_CALLS | _DIM_CALLS | _RESHAPE_METHODS | _MOVES | {"flatten", "unflatten", "max", "min", "median"} else None


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
    """Why layer mode cannot run ``gm``, whose ``node`` fails on one example but not on the whole batch."""
    return _blocker_message(gm, node, "fails on one example but runs on the whole batch: the network computes with its batch (as `h.reshape(-1, 2 * F)` joins pairs of examples)")


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


__all__ = ["LAYER_MODE_BLOCKER", "RowOrigins", "batch_arithmetic", "batch_arithmetic_blocker", "batch_probe_blocker", "batch_size_from_reshaped", "size_source"]
