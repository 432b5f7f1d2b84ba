"""Input encoders: how the CNN's analog input becomes a T-step input sequence."""

from __future__ import annotations

import torch
from torch import nn

from .errors import ConversionError

ENCODERS = ("direct", "rate", "latency")


class Encoder(nn.Module):
    """Turns an analog input into the input of one time step.

    - ``direct``: the analog input at every step (the first layer acts as the encoder);
    - ``rate``: signed Bernoulli spikes of height ``scale`` with probability ``|x| / scale``, so
      the expected input equals ``x`` (clipped to ``[-scale, scale]``);
    - ``latency``: one signed spike of height ``scale`` per input element, at step
      ``floor((1 - |x|/scale) * T)``: earlier when larger; exact zeros never spike. It changes the
      input statistics, so a latency-coded SNN needs retraining.

    ``scale`` is set by calibration (a high percentile of ``|x|``); it is 1 otherwise.
    """

    def __init__(self, kind: str = "direct") -> None:
        super().__init__()
        if kind not in ENCODERS:
            raise ConversionError(f"encoder={kind!r} is not one of {ENCODERS}")
        self.kind = kind
        self.register_buffer("scale", torch.tensor(1.0))

    def extra_repr(self) -> str:
        return f"{self.kind!r}, scale={float(self.scale):.4g}"

    @property
    def is_time_invariant(self) -> bool:
        """True when every step sees the same input (direct encoding)."""
        return self.kind == "direct"

    def _intensity(self, x: torch.Tensor) -> torch.Tensor:
        return (x.abs() / self.scale).clamp(max=1.0)

    def step(self, x: torch.Tensor, t: int, steps: int) -> torch.Tensor:
        """The input of step ``t`` (of ``steps``)."""
        if self.kind == "direct":
            return x
        if self.kind == "rate":
            return torch.bernoulli(self._intensity(x)) * torch.sign(x) * self.scale
        fire_at = torch.floor((1.0 - self._intensity(x)) * steps).clamp(max=steps - 1)
        return ((fire_at == t) & (x != 0)).to(x.dtype) * torch.sign(x) * self.scale

    def sequence(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        """All steps folded into the batch: ``[steps * B, ...]``."""
        if self.kind == "rate":
            expanded = self._intensity(x).unsqueeze(0).expand(steps, *x.shape)
            spikes = torch.bernoulli(expanded) * torch.sign(x) * self.scale
            return spikes.flatten(0, 1)
        return torch.cat([self.step(x, t, steps) for t in range(steps)], 0)
