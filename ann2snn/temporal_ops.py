"""Temporal modules for what users bring (issue 13): global and adaptive max pooling gated by the
running spike count, and the two halves of an analog island that sees rates.

They follow ``ann2snn.temporal``'s regimes (analog, step mode, layer mode with time folded into
the batch) and keep their state between layer-mode calls when the time loop runs a sequence in
time chunks (``chunked``), until ``reset()``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from .temporal import GatedMaxPool, TemporalModule, count_dtype


def _chunked(module: TemporalModule) -> bool:
    return bool(getattr(module, "chunked", False)) and module.time_steps is not None


class GatedAdaptiveMaxPool(GatedMaxPool):
    """Adaptive max pooling (``nn.AdaptiveMaxPool1d/2d``, ``F.adaptive_max_pool1d/2d``; global
    max pooling is ``output_size=1``) gated like ``GatedMaxPool``: each output window passes the
    increase of the largest running input sum (running spike count) among its positions."""

    def __init__(self, dims: int, output_size: int | Sequence[Optional[int]]) -> None:
        super().__init__(dims, kernel_size=1)
        self.output_size = output_size

    def extra_repr(self) -> str:
        return f"{self.dims}-D, output_size={self.output_size}"

    def _tiled_kernel(self) -> Optional[tuple[int, ...]]:
        return None

    def _pool(self, x: torch.Tensor, return_indices: bool = False):
        pool = F.adaptive_max_pool1d if self.dims == 1 else F.adaptive_max_pool2d
        return pool(x, self.output_size, return_indices)


class GatedMaxReduce(TemporalModule):
    """A max over dimensions (``torch.amax(x, dim)``, ``x.amax(dim)``, ``torch.max(x, dim)`` with
    its indices) for spike trains: at every step each output element emits the increase of the
    largest running input sum (running spike count) among its positions, so after t steps it has
    emitted exactly the max of the counts, as ``GatedMaxPool`` does; gradients and the indices
    (``with_indices``) go to the leading position. The count is float32 for half-precision
    inputs (``count_dtype``)."""

    supports_time_chunks = True

    def __init__(self, dim: int | Sequence[int], keepdim: bool = False, with_indices: bool = False) -> None:
        super().__init__()
        self.dim = tuple(dim) if isinstance(dim, (tuple, list)) else (int(dim),)
        self.keepdim = bool(keepdim)
        self.with_indices = bool(with_indices)
        self.count: Optional[torch.Tensor] = None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, keepdim={self.keepdim}" + (", with indices" if self.with_indices else "")

    def reset(self) -> None:
        self.count = None

    def _reference(self, x: torch.Tensor):
        if self.with_indices:
            return torch.max(x, self.dim[0], self.keepdim)
        return torch.amax(x, self.dim, self.keepdim)

    def _gate(self, x: torch.Tensor, count: torch.Tensor):
        dims = sorted(d % x.dim() for d in self.dim)
        tail = list(range(x.dim() - len(dims), x.dim()))
        values = x.movedim(dims, tail).flatten(-len(dims))
        with torch.no_grad():
            counts = count.movedim(dims, tail).flatten(-len(dims))
            after, index = counts.max(-1, keepdim=True)
            increase = after - (counts - values.detach()).amax(-1, keepdim=True)
        picked = values.gather(-1, index)
        values = (increase.to(x.dtype) + (picked - picked.detach())).squeeze(-1)
        index = index.squeeze(-1)
        if self.keepdim:
            for d in dims:
                values, index = values.unsqueeze(d), index.unsqueeze(d)
        return torch.return_types.max((values, index)) if self.with_indices else values

    def forward(self, x: torch.Tensor):
        if self.analog:
            return self._reference(x)
        if self.time_steps is None:
            self.count = x.detach().to(count_dtype(x.dtype)) if self.count is None else self.count + x.detach()
            return self._gate(x, self.count)
        frames = x.unflatten(0, (self.time_steps, -1)).unbind(0)
        count = self.count if _chunked(self) and self.count is not None else torch.zeros_like(frames[0], dtype=count_dtype(x.dtype))
        outs = []
        for frame in frames:
            count = count + frame.detach()
            outs.append(self._gate(frame, count))
        if _chunked(self):
            self.count = count
        if self.with_indices:
            return torch.return_types.max((torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])))
        return torch.cat(outs)


# -- analog islands that see rates ------------------------------------------------------------
def _steps_view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Step numbers ``t`` ([T]) shaped to broadcast against ``[T, B, ...]``."""
    return t.view(-1, *([1] * (like.dim() - 1))).to(count_dtype(like.dtype))  # bfloat16 has no integers past 256


class RateMean(TemporalModule):
    """The first half of an analog island: the running mean of its input over the steps so far
    (step ``t`` returns ``(x_1 + ... + x_t) / t``), so the analog op after it sees firing rates,
    not one step's spikes. An identity in analog mode."""

    supports_time_chunks = True

    def __init__(self) -> None:
        super().__init__()
        self.total: Optional[torch.Tensor] = None
        self.steps = 0

    def reset(self) -> None:
        self.total, self.steps = None, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.analog or not torch.is_tensor(x) or not x.is_floating_point():
            return x
        wide = count_dtype(x.dtype)  # the sum: float32 for half precision, where it would stop growing
        if self.time_steps is None:
            self.total = x.to(wide) if self.total is None else self.total + x
            self.steps += 1
            return (self.total / self.steps).to(x.dtype)
        frames = x.unflatten(0, (self.time_steps, -1))
        carried = _chunked(self) and self.total is not None
        start = self.steps if carried else 0
        totals = frames.cumsum(0, dtype=wide)
        if carried:
            totals = totals + self.total
        steps = torch.arange(start + 1, start + self.time_steps + 1, device=x.device)
        if _chunked(self):
            self.total, self.steps = totals[-1], start + self.time_steps
        return (totals / _steps_view(steps, totals)).to(x.dtype).flatten(0, 1)


def _increment(t: int | torch.Tensor, value: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """``t * value - (t - 1) * previous``, formed in ``count_dtype`` (float32 for half precision:
    in bfloat16 the two products, hundreds of times the values, would cancel to noise)."""
    wide = count_dtype(value.dtype)
    return (t * value.to(wide) - (t - 1) * previous.to(wide)).to(value.dtype)


class RateIncrement(TemporalModule):
    """The second half of an analog island: given ``y_t = f(mean of the inputs up to t)``, it emits
    ``t * y_t - (t - 1) * y_{t-1}``, so the outputs up to step ``t`` sum to ``t * y_t``: their time
    average is ``f`` of the input rates (exactly, at every ``t``), and a neuron or layer after it
    integrates the right current. Non-floating outputs (indices) pass as they are. An identity in
    analog mode."""

    supports_time_chunks = True

    def __init__(self) -> None:
        super().__init__()
        self.previous = None
        self.steps = 0

    def reset(self) -> None:
        self.previous, self.steps = None, 0

    @staticmethod
    def _is_rate(value: object) -> bool:
        return torch.is_tensor(value) and value.is_floating_point()

    def forward(self, y):
        if self.analog:
            return y
        if self.time_steps is None:
            t, previous = self.steps + 1, self.previous
            out = y if previous is None else tree_map(lambda v, p: _increment(t, v, p) if self._is_rate(v) else v, y, previous)
            self.previous, self.steps = y, t
            return out
        carried = _chunked(self) and self.previous is not None
        start = self.steps if carried else 0
        steps = torch.arange(start + 1, start + self.time_steps + 1)

        def increments(v, p):
            if not self._is_rate(v):
                return v
            frames = v.unflatten(0, (self.time_steps, -1))
            before = torch.cat([(p if p is not None else torch.zeros_like(frames[0])).unsqueeze(0), frames[:-1]])
            return _increment(_steps_view(steps.to(v.device), frames), frames, before).flatten(0, 1)

        out = tree_map(increments, y, self.previous) if carried else tree_map(lambda v: increments(v, None), y)
        if _chunked(self):
            self.previous = tree_map(lambda v: v.unflatten(0, (self.time_steps, -1))[-1] if self._is_rate(v) else v, y)
            self.steps = start + self.time_steps
        return out
