"""Conversion-aware training: the quantization-clip-floor-shift activation (QCFS).

Bu, Fang, Ding, Dai, Yu, Huang: "Optimal ANN-SNN Conversion for High-accuracy and Low-latency
Spiking Neural Networks", ICLR 2022 (public code: putshua/SNN_conversion_QCFS). A CNN trained with

    QCFS(x) = lambda * clamp(floor(x * L / lambda + 1/2) / L, 0, 1)

in place of ReLU (``lambda`` learned per layer, ``L`` quantization levels) produces exactly the
spike counts of an integrate-and-fire neuron with threshold ``lambda``, subtractive reset and a
membrane starting at ``lambda / 2``, when that neuron sees a constant input for ``T = L`` steps:
after ``T`` steps it has fired ``clamp(floor(T x / lambda + 1/2), 0, T)`` times. ``convert()``
turns every ``QCFS`` into such a neuron with its learned ``lambda`` as the threshold (no
percentile is needed, and calibration leaves it alone).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class _FloorSTE(torch.autograd.Function):
    """``floor`` forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad


class QCFS(nn.Module):
    """ReLU replacement for conversion-aware training: clip at a learnable ``threshold``, quantize
    to ``levels`` steps with a half-step shift. ``levels`` is the number of time steps at which the
    converted SNN reproduces the layer exactly (see the module docstring)."""

    def __init__(self, levels: int = 8, threshold: float = 4.0) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"QCFS levels={levels!r}: give a positive integer (the time steps it is exact at)")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ValueError(f"QCFS threshold={threshold!r} must be finite and positive")
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = torch.clamp(x / self.threshold, 0.0, 1.0)
        return _FloorSTE.apply(scaled * self.levels + 0.5) / self.levels * self.threshold

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
