"""Training-time augmentation: time shift and additive noise on waveforms, SpecAugment masks."""

from dataclasses import dataclass
from functools import cached_property

import torch
import torchaudio
from torch import nn


@dataclass(frozen=True)
class Augment:
    """Random augmentation drawn from torch's global generator (seed it for repeatability).

    Waveform ops (on prepared waveforms [..., samples]): a time shift of up to `shift_s`
    seconds either way (zero fill), and white noise at a signal-to-noise ratio drawn uniformly
    from `noise_snr_db` (None: no noise). Spectrogram ops (log-mel [..., n_mels, frames]):
    SpecAugment-style masks of up to `freq_mask` bands and up to `time_mask` frames.
    """

    shift_s: float = 0.1
    noise_snr_db: tuple[float, float] | None = None
    freq_mask: int = 0
    time_mask: int = 0

    @property
    def on_waveform(self) -> bool:
        return self.shift_s > 0 or self.noise_snr_db is not None

    def waveform(self, x: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Shift and add noise to one prepared waveform [..., samples]."""
        max_shift = round(self.shift_s * sample_rate)
        if max_shift > 0:
            x = shift(x, int(torch.randint(-max_shift, max_shift + 1, ())))
        if self.noise_snr_db is not None:
            low, high = self.noise_snr_db
            snr_db = low + (high - low) * torch.rand(())
            power = x.pow(2).mean().clamp(min=1e-12)
            x = x + torch.randn_like(x) * (power / 10 ** (snr_db / 10)).sqrt()
        return x

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Mask frequency bands and frames of one log-mel spectrogram [..., n_mels, frames]."""
        return self._masks(x)

    @cached_property
    def _masks(self) -> nn.Module:
        masks: list[nn.Module] = []
        if self.freq_mask > 0:
            masks.append(torchaudio.transforms.FrequencyMasking(self.freq_mask))
        if self.time_mask > 0:
            masks.append(torchaudio.transforms.TimeMasking(self.time_mask))
        return nn.Sequential(*masks)


def shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """Delay `x` [..., samples] by `n` samples (advance if negative), filling with zeros."""
    if n == 0:
        return x
    out = torch.zeros_like(x)
    if n > 0:
        out[..., n:] = x[..., :-n]
    else:
        out[..., :n] = x[..., -n:]
    return out
