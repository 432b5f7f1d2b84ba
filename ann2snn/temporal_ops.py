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

from .temporal import GatedMaxPool, TemporalModule


def _chunked(module: TemporalModule) -> bool:
    return bool(getattr(module, "chunked", False)) and module.time_steps is not None


class GatedAdaptiveMaxPool(GatedMaxPool):
    """Adaptive max pooling (``nn.AdaptiveMaxPool1d/2d``, ``F.adaptive_max_pool1d/2d``; global
    max pooling is ``output_size=1``) gated like ``GatedMaxPool``: each output window passes the
    current input of the position whose running input sum (running spike count) is largest."""

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
    its indices) for spike trains: at every step it passes, per output element, the current input
    at the position whose running input sum is largest so far; the indices (``with_indices``) are
    those positions. Converges to the max of the rates as T grows, as ``GatedMaxPool`` does."""

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
            index = count.movedim(dims, tail).flatten(-len(dims)).argmax(-1, keepdim=True)
        values = values.gather(-1, index).squeeze(-1)
        index = index.squeeze(-1)
        if self.keepdim:
            for d in dims:
                values, index = values.unsqueeze(d), index.unsqueeze(d)
        return torch.return_types.max((values, index)) if self.with_indices else values

    def forward(self, x: torch.Tensor):
        if self.analog:
            return self._reference(x)
        if self.time_steps is None:
            self.count = x.detach() if self.count is None else self.count + x.detach()
            return self._gate(x, self.count)
        frames = x.unflatten(0, (self.time_steps, -1)).unbind(0)
        count = self.count if _chunked(self) and self.count is not None else torch.zeros_like(frames[0])
        outs = []
        for frame in frames:
            count = count + frame.detach()
            outs.append(self._gate(frame, count))
        if _chunked(self):
            self.count = count
        if self.with_indices:
            return torch.return_types.max((torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])))
        return torch.cat(outs)
