"""Average pooling whose windows tile the input (stride = kernel, no padding), computed as sums of
strided slices: the same values as ``F.avg_pool1d`` / ``F.avg_pool2d``, faster on CPU for
contiguous (NCHW / NCL) tensors and small windows.

Why by hand: PyTorch's CPU kernel for contiguous average pooling walks one output at a time,
while a sum of ``k`` strided slices is ``k`` vectorized additions; a converted network runs each
pool on every time step. Measured here (a [40, 45, 40, 101] spike tensor, one and two threads,
fastest of ten): ``AvgPool2d(2)`` 2.2-3.5 x faster, a 1-D window of 4 about 1.2 x, but a (4, 3)
window no faster (12 strided slices), so the conversion lowers windows of at most
``MAX_WINDOW`` positions only (``tiled_avg_pool``). The
sums are formed in the kernel's order (window rows, then columns, left to right) and divided by
the window size, as the kernel does, so the values are equal (``torch.equal``; a window of
negative zeros may give ``+0.0`` where the kernel gives ``-0.0``). The backward pass writes the
gradient divided by the window size into each window position (uncovered border elements get
zero), which is what ``avg_pool_backward`` computes (again up to the sign of a zero). Only
contiguous float32/float64 tensors on the CPU take this path (PyTorch sums half precision in
float32 and rounds once, and on GPUs its kernel is not slow); channels-last tensors, partial
windows (``ceil_mode``) and everything else take PyTorch's own kernel.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.modules.utils import _ntuple


#: The conversion lowers average pools of at most this many window positions (see the module).
MAX_WINDOW = 4


def _window_slices(shape: torch.Size, kernel: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Index of each window position's strided slice over the last ``len(kernel)`` dimensions,
    in the pooling kernel's summation order."""
    spatial = shape[len(shape) - len(kernel) :]
    lead = (slice(None),) * (len(shape) - len(kernel))
    return [lead + tuple(slice(o, k * (n // k), k) for o, k, n in zip(offsets, kernel, spatial)) for offsets in itertools.product(*(range(k) for k in kernel))]


class TiledAverage(torch.autograd.Function):
    """Average pooling over windows of ``kernel`` that tile the last dimensions (see the module)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
        ctx.shape, ctx.kernel = x.shape, kernel
        slices = _window_slices(x.shape, kernel)
        total = x[slices[0]].clone() if len(slices) == 1 else torch.add(x[slices[0]], x[slices[1]])
        for index in slices[2:]:
            total.add_(x[index])
        return total.div_(math.prod(kernel))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _tiled_backward(grad, ctx.shape, ctx.kernel, grad.new_empty(ctx.shape)), None


def _tiled_backward(grad: torch.Tensor, shape: torch.Size, kernel: tuple[int, ...], out: torch.Tensor) -> torch.Tensor:
    """The gradient of ``TiledAverage`` for the output gradient ``grad``, written into ``out``
    (shaped like the input): each window position gets ``grad`` divided by the window size,
    uncovered border elements zero."""
    if not all(n % k == 0 for n, k in zip(shape[len(shape) - len(kernel) :], kernel)):
        out.zero_()
    share = grad / math.prod(kernel)
    for index in _window_slices(shape, kernel):
        out[index] = share
    return out


Size = Union[int, Sequence[int]]


def tiled_kernel(dims: int, kernel_size: Size, stride: Size, padding: Size, dilation: Size = 1, divisor_override: Optional[int] = None) -> Optional[tuple[int, ...]]:
    """The kernel when a pool's windows tile its input (stride = kernel, no padding, dilation 1, no
    divisor override), else ``None``; shared by ``GatedMaxPool`` and the tiled average pools.
    With ``ceil_mode`` the windows tile only inputs whose sizes the kernel divides, which the
    callers check at run time."""
    as_tuple = _ntuple(dims)
    kernel = as_tuple(kernel_size)
    if as_tuple(stride) != kernel or set(as_tuple(padding)) != {0} or set(as_tuple(dilation)) != {1} or divisor_override is not None:
        return None
    return kernel


class _TiledAvgPoolMixin:
    """``forward`` of the tiled average pools: strided sums where they apply, else the base class."""

    dims: int

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.AvgPool's name: pool(input=x) works
        kernel = self.tiling(input)
        if kernel is None:
            return super().forward(input)
        return TiledAverage.apply(input, kernel)

    def tiling(self, x: torch.Tensor) -> Optional[tuple[int, ...]]:
        """The window that ``forward`` sums ``x`` over by strided slices, or ``None`` where it
        runs PyTorch's kernel instead."""
        kernel = tiled_kernel(self.dims, self.kernel_size, self.stride, self.padding, divisor_override=getattr(self, "divisor_override", None))
        spatial = x.shape[x.dim() - self.dims :]
        usable = (
            kernel is not None
            and x.dtype in (torch.float32, torch.float64)
            and x.device.type == "cpu"
            and x.dim() in (self.dims + 1, self.dims + 2)
            and x.is_contiguous()
            and all(k <= n for k, n in zip(kernel, spatial))
            and not (self.ceil_mode and any(n % k for n, k in zip(spatial, kernel)))
        )
        return kernel if usable else None


class TiledAvgPool1d(_TiledAvgPoolMixin, nn.AvgPool1d):
    """What the conversion puts in place of an ``nn.AvgPool1d`` (or ``F.avg_pool1d``) whose windows
    tile its input (stride = kernel, no padding) with at most ``MAX_WINDOW`` positions: the same
    values and gradients, as sums of strided slices in PyTorch's order (faster on CPU).
    Channels-last, half-precision, non-CPU inputs and partial windows run PyTorch's kernel."""

    dims = 1


class TiledAvgPool2d(_TiledAvgPoolMixin, nn.AvgPool2d):
    """What the conversion puts in place of an ``nn.AvgPool2d`` (or ``F.avg_pool2d``) whose windows
    tile its input (stride = kernel, no padding) with at most ``MAX_WINDOW`` positions, such as
    ``AvgPool2d(2)``: the same values and gradients, as sums of strided slices in PyTorch's order
    (2-3 x faster on CPU). Channels-last, half-precision, non-CPU inputs and partial windows run
    PyTorch's kernel."""

    dims = 2


def tiled_avg_pool(dims: int, kernel_size: Size, stride: Optional[Size], padding: Size, ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int] = None) -> Optional[nn.Module]:
    """The tiled module equal to an average pool with these settings, or ``None`` where the
    windows do not tile the input or hold more than ``MAX_WINDOW`` positions (no faster there)."""
    kernel = tiled_kernel(dims, kernel_size, stride if stride is not None else kernel_size, padding, divisor_override=divisor_override)
    if kernel is None or math.prod(kernel) > MAX_WINDOW:
        return None
    if dims == 1:
        return TiledAvgPool1d(kernel_size, stride, padding, ceil_mode, count_include_pad)
    return TiledAvgPool2d(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


#: ``(grad, like, out) -> out``: see ``average_pool_backward``.
PoolBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def average_pool_backward(pool: nn.Module) -> Optional[PoolBackward]:
    """For an ``nn.AvgPool1d/2d`` (or a tiled one): a function ``(grad, like, out)`` that writes
    into ``out`` the gradient autograd's backward of ``pool(like)`` computes for the output
    gradient ``grad`` (the same kernels, so the same bits), so that a loop running the pool on
    one batch slice at a time can differentiate it slice by slice too. ``None`` for other pools
    (adaptive ones, subclasses of the user's)."""
    if type(pool) not in (nn.AvgPool1d, nn.AvgPool2d, TiledAvgPool1d, TiledAvgPool2d):
        return None
    dims = 1 if isinstance(pool, nn.AvgPool1d) else 2
    expand = _ntuple(dims)
    settings = [expand(value) for value in (pool.kernel_size, pool.stride, pool.padding)]
    if dims == 1:  # F.avg_pool1d is avg_pool2d over a height-1 view, and so is its backward
        settings = [(height, *value) for height, value in zip((1, 1, 0), settings)]
    divisor = getattr(pool, "divisor_override", None)

    def plain(grad: torch.Tensor, like: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if dims == 1:
            grad, like, out_view = grad.unsqueeze(-2), like.unsqueeze(-2), out.unsqueeze(-2)
        else:
            out_view = out
        torch.ops.aten.avg_pool2d_backward.grad_input(grad, like, *settings, pool.ceil_mode, pool.count_include_pad, divisor, grad_input=out_view)
        return out

    if not isinstance(pool, _TiledAvgPoolMixin):
        return plain

    def tiled(grad: torch.Tensor, like: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        kernel = pool.tiling(like)
        return plain(grad, like, out) if kernel is None else _tiled_backward(grad, like.shape, kernel, out)

    return tiled
