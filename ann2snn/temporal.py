"""Modules that know about time: the base class, gated max pooling (alone, and fused with the
neuron it reads) and time broadcasting.

Every temporal module runs in one of three regimes, set by the time loop:

- ``analog``: behaves like the CNN op it replaced (calibration, and graph-rewrite checks);
- step mode (``time_steps is None``): one tick per call, state kept until ``reset()``;
- layer mode (``time_steps = T``): the input holds all T steps folded into the batch,
  ``[T*B, ...]``, or, with ``broadcast_input``, one ``[B, ...]`` tensor that is the same at every
  step (direct encoding: whatever precedes the first neuron is computed once).

Layer mode may run the ``sequence_steps`` steps of a sequence in time chunks (``chunked``): each
call then holds ``time_steps`` consecutive steps, and a module that supports this
(``supports_time_chunks``) starts from the state the previous chunk left and keeps its own state
for the next one, until ``reset()``. The time loop chunks over time only when every temporal
module of the network supports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _global_backward_hooks, _global_backward_pre_hooks, _global_forward_hooks, _global_forward_pre_hooks

from .tiled_pool import TiledAvgPool1d, TiledAvgPool2d, tiled_kernel

if TYPE_CHECKING:
    from .neurons import SpikingNeuron


class TemporalModule(nn.Module):
    """Base class: holds the execution regime that the time loop sets."""

    #: Whether layer mode may run this module's sequence in time chunks (state carried between calls).
    supports_time_chunks = False
    #: Set by the time loop: layer mode runs in time chunks; carry state from call to call.
    chunked = False
    #: Set by the time loop in layer mode: the steps of the whole sequence (``time_steps`` of a chunk may be fewer).
    sequence_steps: Optional[int] = None

    def __init__(self) -> None:
        super().__init__()
        self.analog = False
        self.time_steps: Optional[int] = None
        self.broadcast_input = False
        self.static_source = False  # set at conversion: the input is time-invariant under direct encoding

    def reset(self) -> None:
        """Forget the state of the previous sequence."""


class TimeBroadcast(TemporalModule):
    """Repeats a time-invariant ``[B, ...]`` tensor to ``[T*B, ...]`` where it meets temporal data."""

    supports_time_chunks = True  # stateless: repeats over the chunk's steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.broadcast_input and self.time_steps is not None and not self.analog:
            return x.repeat(self.time_steps, *([1] * (x.dim() - 1)))
        return x


def count_dtype(dtype: torch.dtype) -> torch.dtype:
    """The type running counts and sums over time steps are kept in for values of ``dtype`` (a
    gated pool's spike counts, an analog island's sums, the readouts' sum): float32 for half
    precision, where integers above 256 (bfloat16) or 2048 (float16) are not representable and a
    count would stop growing; else ``dtype`` itself."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class GateSequence(torch.autograd.Function):
    """The gate of a ``GatedMaxPool`` over consecutive steps ``frames`` [T, B, C, ...] at once,
    returning [T, B, C, ...pooled]: what the per-step differentiable gate (``_gate``) computes, in
    value and gradient, with the gradient of each window's output reaching its leading
    position's input. It keeps only the leading indices for the backward pass (one scatter over
    all steps) instead of a graph of per-step gathers, sums and a concatenation."""

    @staticmethod
    def forward(ctx, frames: torch.Tensor, pool: "GatedMaxPool", count: torch.Tensor, steps: Optional[int]) -> torch.Tensor:
        """``count``: the running count, updated in place (float32 for half-precision ``frames``);
        ``steps``: as ``GatedMaxPool._gate``. The output has the type of ``frames``."""
        before = pool._max(count)
        out = indices = None
        for t, x in enumerate(frames.unbind(0)):
            count.add_(x)
            after, index = pool._pool(count, return_indices=True) if steps is None else pool._leading(count, steps)
            if out is None:
                out = frames.new_empty((frames.shape[0], *after.shape))
                indices = torch.empty((frames.shape[0], *index.shape), dtype=index.dtype, device=index.device)
            torch.sub(after, before, out=out[t])
            indices[t] = index
            before = after
        ctx.save_for_backward(indices)
        ctx.frames_shape = frames.shape
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (indices,) = ctx.saved_tensors
        grad = grad_out.new_zeros(ctx.frames_shape)
        grad.flatten(3).scatter_add_(3, indices.flatten(3), grad_out.flatten(3))
        return grad, None, None, None


class GatedMaxPool(TemporalModule):
    """Max pooling for spike trains: each window emits, at every step, the increase of the largest
    running input sum (for spikes: running spike count) among its positions.

    With ``M(t) = max_i sum_{s<=t} x_i(s)`` a window emits ``M(t) - M(t-1)``: for binary spikes a
    spike exactly when its leading count grows, so after t steps it has emitted exactly the
    maximum of its positions' counts, and the time average is max pooling of the firing rates at
    every T, not only as T grows. Pooling the spikes themselves over-counts (any spike in the
    window passes), and so does passing the current leader's spike on ties, which are common at
    low T. Gradients flow to the leading position's input, as through ``max_pool``.

    State: the running count (``count``; in step mode, and in layer mode between time chunks),
    in float32 for half-precision inputs (``count_dtype``); outputs have the inputs' type.
    """

    supports_time_chunks = True
    #: Step mode: the windows' largest running count so far (``None``: compute it from ``count``).
    peak: Optional[torch.Tensor] = None

    def __init__(
        self,
        dims: int,
        kernel_size: int | Sequence[int],
        stride: Optional[int | Sequence[int]] = None,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"GatedMaxPool supports 1-D and 2-D pooling, not {dims}-D")
        self.dims = dims
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode
        self.count: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return f"{self.dims}-D, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _tiled_kernel(self) -> Optional[tuple[int, ...]]:
        """The kernel, when the windows tile the input (stride = kernel, no padding, dilation 1)."""
        return tiled_kernel(self.dims, self.kernel_size, self.stride, self.padding, self.dilation)

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        """Max pooling without indices. 2-D tiling windows (the usual MaxPool2d(2)) take the
        maximum of strided slices, several times faster on CPU than ``max_pool2d``'s NCHW kernel
        (a partial last window counts only with ``ceil_mode``, which the general path handles);
        1-D pooling is ``max_pool1d``, about 3 times faster than the strided slices."""
        if self.dims == 1:
            return self._pool(x)
        kernel = self._tiled_kernel()
        spatial = x.shape[x.dim() - self.dims :]
        if kernel is None or (self.ceil_mode and any(n % k for n, k in zip(spatial, kernel))):
            return self._pool(x)
        if all(k == 1 for k in kernel):  # one-position windows: a new tensor, never ``x`` itself (callers keep both)
            return x.clone()
        for axis, k in zip(range(x.dim() - self.dims, x.dim()), kernel):
            if k == 1:
                continue
            windows = x.shape[axis] // k
            index = [slice(None)] * x.dim()
            slices = []
            for offset in range(k):
                index[axis] = slice(offset, k * windows, k)
                slices.append(x[tuple(index)])
            x = torch.maximum(slices[0], slices[1])
            for part in slices[2:]:
                torch.maximum(x, part, out=x)  # x is this function's own new tensor
        return x

    def _pool(self, x: torch.Tensor, return_indices: bool = False):
        pool = F.max_pool1d if self.dims == 1 else F.max_pool2d
        return pool(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, return_indices)

    def _leading(self, count: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``max_pool(count, return_indices=True)`` for integer counts of at most ``steps``: the
        windows' largest count and the flat index of its first position in the window's scan
        order (the lowest index, as max pooling picks), from one plain max pool of the integer
        key ``count * P + (P - 1 - position)`` (P positions per channel), several times faster
        on CPU than the index-returning kernel. Exact: the keys are integers below 2**24 in
        float32 (float64 beyond), and so ``floor(key / P)`` is exact."""
        positions = count[0, 0].numel()
        dtype = torch.float32 if (steps + 1) * positions <= 2**24 else torch.float64
        order = torch.arange(positions - 1, -1, -1, device=count.device, dtype=dtype).view(count.shape[2:])
        top = self._max(torch.add(order, count.to(dtype), alpha=positions))
        after = torch.floor(top / positions)
        index = torch.sub(positions - 1, top.sub_(after * positions)).long()
        return after.to(count.dtype), index

    def _gate(self, x: torch.Tensor, count: torch.Tensor, before: torch.Tensor, steps: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Adds ``x`` to ``count`` in place. Returns the windows' output (in the type of ``x``),
        the increase of their maximum count over ``before`` with the gradient of the leading
        position's input, and the new maximum count (in the type of ``count``, ``count_dtype``).
        ``steps``: the counts are integers of at most this (binary spikes)."""
        with torch.no_grad():
            count.add_(x.detach())
            after, index = self._pool(count, return_indices=True) if steps is None else self._leading(count, steps)
        picked = torch.gather(x.flatten(2), 2, index.flatten(2)).view_as(after)
        return (after - before).to(x.dtype) + (picked - picked.detach()), after

    def reset(self) -> None:
        self.count = None
        self.peak = None

    def _carried_count(self, like: torch.Tensor) -> torch.Tensor:
        """The running count a layer-mode call starts from: the previous time chunk's, or zeros
        (kept as ``count`` when chunked: the gates update it in place for the next chunk), in
        ``count_dtype``."""
        self.peak = None  # layer mode changes the count
        if self.chunked and self.count is not None:
            return self.count
        count = torch.zeros_like(like, dtype=count_dtype(like.dtype), requires_grad=False)
        if self.chunked:
            self.count = count
        return count

    def _running_gate(self, like: torch.Tensor, steps: Optional[int] = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable per-step gate for any input shaped like ``like`` (see the class);
        ``steps``: the inputs are binary spikes, at most this many per position in all."""
        count = self._carried_count(like)
        with torch.no_grad():
            before = self._max(count)

        def gate(x: torch.Tensor) -> torch.Tensor:
            nonlocal before
            out, before = self._gate(x, count, before, steps)
            return out

        return gate

    def gate_sequence(self, frames: torch.Tensor, steps: Optional[int] = None) -> torch.Tensor:
        """The differentiable gate over the consecutive steps ``frames`` [T, B, ...] at once
        (``GateSequence``), starting from and updating the carried running count; ``steps``:
        the inputs are binary spikes, at most this many per position in all."""
        return GateSequence.apply(frames, self, self._carried_count(frames[0]), steps)

    def spike_bound(self, steps: int) -> int:
        """The most spikes a position can count: ``steps`` of this call, or all of the sequence's."""
        return max(steps, self.sequence_steps or 0)

    def spike_gate(self, like: torch.Tensor, steps: int, differentiable: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """A stateful per-step gate for binary spikes shaped like ``like`` (used when a neuron
        runs this pool inside its own loop; see ``NeuronPool``). Without gradients
        it needs no indices: one plain max pool of the running count per step, whose increase is
        the output (counts are integers, exact in floating point)."""
        if differentiable:
            return self._running_gate(like, self.spike_bound(steps))
        count = self._carried_count(like)
        previous = self._max(count)

        def gate(z: torch.Tensor, rows: slice = slice(None), out: Optional[torch.Tensor] = None) -> torch.Tensor:
            """Gate the spikes ``z`` of the examples ``rows`` (a neuron may run its loop in batch
            slices); with ``out``, write the result there (else it has the type of ``z``)."""
            count_rows, previous_rows = count[rows], previous[rows]
            count_rows.add_(z)
            current = self._max(count_rows)
            out = torch.sub(current, previous_rows, out=out)
            previous_rows.copy_(current)
            return out.to(z.dtype)

        gate.batch_slices = True  # takes rows= and out= (SpikingNeuron's sliced inference loop)
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self._pool(x)
        if self.time_steps is None:
            if self.count is None:
                self.count = torch.zeros_like(x, dtype=count_dtype(x.dtype), requires_grad=False)
            with torch.no_grad():
                before = self.peak if self.peak is not None else self._max(self.count)
            if not (torch.is_grad_enabled() and x.requires_grad):  # the value alone needs no leading index
                self.count.add_(x)
                self.peak = self._max(self.count)
                return torch.sub(self.peak, before).to(x.dtype)
            out, self.peak = self._gate(x, self.count, before)
            return out
        return self.gate_sequence(x.unflatten(0, (self.time_steps, -1))).flatten(0, 1)


#: Average pools a neuron may run inside its own layer-mode loop: PyTorch's (and the tiled ones,
#: their subclasses), which pool every example on its own, so pooling each batch slice of each
#: step's spikes gives the bits of pooling the whole spike train.
AVERAGE_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def is_average_pool(module: nn.Module) -> bool:
    """Whether ``module`` is one of PyTorch's average pools, or a tiled one (``ann2snn.tiled_pool``);
    not a user's subclass, whose forward may do anything."""
    return type(module) in AVERAGE_POOLS or isinstance(module, (TiledAvgPool1d, TiledAvgPool2d))


class NeuronPool(nn.Module):
    """A spiking neuron and the pool that alone reads its spikes, as one graph node (made by
    ``passes.fuse_neuron_pools``); the submodules ``neuron`` and ``pool`` keep their own regimes,
    state and parameters, and compute what the two nodes computed. ``pool`` is a gated max pool
    (``GatedMaxPool``) or an average pool (``is_average_pool``); ``node_names`` are the names the
    two graph nodes had (NIR export names its two nodes so; None in networks saved before they
    were recorded).

    In layer mode the neuron applies the pool to each step's spikes inside its own loop
    (``SpikingNeuron.forward(x, pool=...)``), so the unpooled spike train of all steps is never
    stored; an average pool sees each step's spikes times the threshold while in cache, the
    same bits as pooling the train afterwards (and in training, through the fused backward,
    the same gradients). Wherever the neuron's own spikes must exist (analog mode, step mode)
    or be seen (forward or backward hooks on the neuron or the pool, or global ones:
    profiling, spike recording, output-space correction), it runs the neuron, then the pool."""

    def __init__(self, neuron: "SpikingNeuron", pool: nn.Module, node_names: Optional[tuple[str, str]] = None) -> None:
        super().__init__()
        self.neuron = neuron
        self.pool = pool
        self.node_names = None if node_names is None else tuple(node_names)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("node_names", None)

    @property
    def averages(self) -> bool:
        """Whether the pool is an average pool (else a gated max pool)."""
        return not isinstance(self.pool, GatedMaxPool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fuses():
            return self.neuron(x, pool=self.pool)
        return self.pool(self.neuron(x))

    def _fuses(self) -> bool:
        """Layer mode, and nobody observes the neuron's output or the pool's input (or their
        gradients: backward hooks)."""
        neuron, pool = self.neuron, self.pool
        hooked = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in (neuron, pool))
        hooked = hooked or _global_forward_hooks or _global_forward_pre_hooks or _global_backward_hooks or _global_backward_pre_hooks
        return neuron.time_steps is not None and not neuron.analog and not hooked
