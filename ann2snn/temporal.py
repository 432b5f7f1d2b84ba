"""Modules that know about time: the base class, gated max pooling and time broadcasting.

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

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _ntuple


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


class GatedMaxPool(TemporalModule):
    """Max pooling for spike trains: each window passes the current input of the position whose
    running input sum (for spikes: running spike count) is largest so far.

    Pooling the spikes themselves over-counts (any spike in the window passes); gating by the
    running count converges to max pooling of the firing rates as T grows.

    State: the running count (``count``; in step mode, and in layer mode between time chunks),
    or between time chunks of the fused inference gate its integer keys (``_rank``).
    """

    supports_time_chunks = True
    _rank: Optional[torch.Tensor] = None

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
        self.fused = False  # set by the time loop while the upstream neuron applies this pool

    def extra_repr(self) -> str:
        return f"{self.dims}-D, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"

    def _tiled_kernel(self) -> Optional[tuple[int, ...]]:
        """The kernel, when the windows tile the input (stride = kernel, no padding, dilation 1)."""
        as_tuple = _ntuple(self.dims)
        kernel = as_tuple(self.kernel_size)
        if as_tuple(self.stride) == kernel and set(as_tuple(self.padding)) == {0} and set(as_tuple(self.dilation)) == {1}:
            return kernel
        return None

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        """Max pooling without indices. 2-D tiling windows (the usual MaxPool2d(2)) take the
        maximum of strided slices, several times faster on CPU than ``max_pool2d``'s NCHW kernel
        (a partial last window counts only with ``ceil_mode``, which the general path handles);
        1-D pooling is ``max_pool1d``, about 3 times faster than the strided slices."""
        kernel = self._tiled_kernel()
        spatial = x.shape[x.dim() - self.dims :]
        if self.dims == 1 or kernel is None or (self.ceil_mode and any(n % k for n, k in zip(spatial, kernel))):
            return self._pool(x)
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

    def _gate(self, x: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pooled_count, index = self._pool(count, return_indices=True)
        picked = torch.gather(x.flatten(2), 2, index.flatten(2))
        return picked.view_as(pooled_count)

    def reset(self) -> None:
        self.count = None
        self._rank = None

    def _order(self, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Per position ``P - 1 - position`` (P positions per channel), shaped like one channel."""
        positions = like[0, 0].numel()
        return torch.arange(positions - 1, -1, -1, device=like.device, dtype=dtype).view(like.shape[2:])

    def _carried_count(self, like: torch.Tensor) -> torch.Tensor:
        """The running count a layer-mode call starts from: the previous time chunk's, or zeros."""
        if self.chunked and self._rank is not None:  # the previous chunk ran the inference gate
            positions = like[0, 0].numel()
            count = ((self._rank - 2 * self._order(like, self._rank.dtype)) / (2 * positions)).to(like.dtype)
            self._rank = None
            return count
        if self.chunked and self.count is not None:
            return self.count
        return torch.zeros_like(like)

    def _running_gate(self, like: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """A differentiable per-step gate for any input shaped like ``like``: it passes, per
        window, the current input at the position whose running input sum is largest."""
        count = self._carried_count(like)
        if self.chunked:
            self.count = count  # updated in place below: the next chunk starts from it

        def gate(x: torch.Tensor) -> torch.Tensor:
            count.add_(x.detach())
            return self._gate(x, count)

        return gate

    def spike_gate(self, like: torch.Tensor, steps: int, differentiable: bool) -> Callable[[torch.Tensor], torch.Tensor]:
        """A stateful per-step gate for binary spikes shaped like ``like`` (used when a neuron
        runs this pool inside its own loop; see ``SpikingNeuron.fuse_pool``).

        Without gradients it avoids index-returning pooling: each position carries the integer key
        ``2 * (count * P + (P - 1 - position)) + z``, so one plain max pool picks the highest count,
        ties to the earliest position (as ``max_pool(return_indices=True)`` does), and the
        winner's spike is the key's parity.
        """
        if differentiable:
            return self._running_gate(like)
        positions = like[0, 0].numel()
        steps = max(steps, self.sequence_steps or 0)  # a time chunk's keys must hold the whole sequence's counts
        exact_in_float32 = 2 * (steps + 1) * positions < 2**24
        dtype = torch.float32 if exact_in_float32 else torch.float64
        order = self._order(like, dtype)
        if self.chunked and self._rank is not None:
            rank = self._rank
        elif self.chunked and self.count is not None:  # the previous chunk ran the differentiable gate
            rank = (2 * order + 2 * positions * self.count.to(dtype)).expand(like.shape).clone()
        else:
            rank = (2 * order).expand(like.shape).clone()
        if self.chunked:
            self._rank, self.count = rank, None  # updated in place below: the next chunk starts from it
        key = torch.empty_like(rank)

        def gate(z: torch.Tensor, rows: slice = slice(None), out: Optional[torch.Tensor] = None) -> torch.Tensor:
            """Gate the spikes ``z`` of the examples ``rows`` (a neuron may run its loop in batch
            slices); with ``out``, write the result there."""
            rank_rows, key_rows = rank[rows], key[rows]
            rank_rows.add_(z, alpha=2 * positions)
            torch.add(rank_rows, z, out=key_rows)
            pooled = self._max(key_rows)
            half = torch.mul(pooled, 0.5).floor_()
            if out is None:
                out = torch.empty(pooled.shape, dtype=z.dtype, device=z.device)
            return torch.add(pooled, half, alpha=-2, out=out)  # the key's parity (exact: integers)

        gate.batch_slices = True  # takes rows= and out= (SpikingNeuron's sliced inference loop)
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog:
            return self._pool(x)
        if self.fused and self.time_steps is not None:
            return x  # the neuron before this pool already pooled each step
        if self.time_steps is None:
            self.count = x.detach() if self.count is None else self.count + x.detach()
            return self._gate(x, self.count)
        frames = x.unflatten(0, (self.time_steps, -1)).unbind(0)
        gate = self._running_gate(frames[0])
        return torch.cat([gate(frame) for frame in frames], 0)
