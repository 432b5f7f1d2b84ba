"""Audio front ends: mono, resample, normalise, pad or crop, and optionally log-mel."""

import math
from dataclasses import asdict, dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
import torchaudio

KINDS = ("waveform", "logmel")
NORMALIZATIONS = ("peak", "rms", None)


@dataclass(frozen=True)
class FrontEnd:
    """Turns a clip (waveform [channels, samples] or [samples], sample rate) into model input.

    `prepare` mixes down to mono, resamples to `sample_rate`, normalises the clip (peak to 1 or
    RMS to 0.1) and centres it in `length_s` seconds (zero padding or a centre crop):
    [1, samples]. `features` turns prepared waveforms (any leading batch dimensions) into
    model input: the waveform itself, or a log-mel spectrogram [..., 1, n_mels, frames] in dB,
    floored at `top_db` below the clip's peak and standardised per clip (mean 0, std 1; models
    without batch norm, like Piczak's, hardly learn from unstandardised features).
    `n_fft` defaults to the power of two nearest 32 ms and `hop` to 10 ms.
    """

    sample_rate: int = 8000
    length_s: float = 1.0
    kind: str = "logmel"
    n_mels: int = 40
    n_fft: int | None = None
    hop: int | None = None
    top_db: float = 80.0
    normalize: str | None = "peak"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"FrontEnd.kind must be one of {KINDS}, got {self.kind!r}")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"FrontEnd.normalize must be one of {NORMALIZATIONS}, got {self.normalize!r}")

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.length_s)

    @property
    def fft_size(self) -> int:
        return self.n_fft or 2 ** round(math.log2(0.032 * self.sample_rate))

    @property
    def hop_length(self) -> int:
        return self.hop or round(0.010 * self.sample_rate)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of one item, without the batch dimension."""
        if self.kind == "waveform":
            return (1, self.samples)
        return (1, self.n_mels, self.samples // self.hop_length + 1)

    def settings(self) -> dict:
        """All settings as plain data (for cache keys and logs)."""
        return asdict(self)

    def __call__(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        return self.features(self.prepare(waveform, sample_rate))

    def prepare(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """Mono, resampled, normalised, fixed-length waveform [1, samples]."""
        x = waveform.to(torch.float32)
        if x.dim() == 1:
            x = x.unsqueeze(0)
        x = x.mean(dim=0, keepdim=True)
        if sample_rate != self.sample_rate:
            x = torchaudio.functional.resample(x, sample_rate, self.sample_rate)
        x = self._normalise(x)
        return fit_length(x, self.samples)

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Model input from prepared waveforms [..., 1, samples]."""
        if self.kind == "waveform":
            return waveform
        db = self._to_db(self._mel(waveform))
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - self.top_db)
        mean, std = db.mean(dim=(-2, -1), keepdim=True), db.std(dim=(-2, -1), keepdim=True)
        return (db - mean) / std.clamp(min=1e-5)  # a silent clip has std 0 and becomes all zeros

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize == "peak":
            return x / x.abs().max().clamp(min=1e-8)
        if self.normalize == "rms":
            return 0.1 * x / x.pow(2).mean().sqrt().clamp(min=1e-8)
        return x

    @cached_property
    def _mel(self) -> torchaudio.transforms.MelSpectrogram:
        return torchaudio.transforms.MelSpectrogram(self.sample_rate, n_fft=self.fft_size, hop_length=self.hop_length, n_mels=self.n_mels)

    @cached_property
    def _to_db(self) -> torchaudio.transforms.AmplitudeToDB:
        return torchaudio.transforms.AmplitudeToDB(stype="power")


def fit_length(x: torch.Tensor, samples: int) -> torch.Tensor:
    """Centre `x` [..., n] in `samples`: zero-pad both sides or crop the middle."""
    n = x.shape[-1]
    if n >= samples:
        start = (n - samples) // 2
        return x[..., start : start + samples]
    left = (samples - n) // 2
    return F.pad(x, (left, samples - n - left))
