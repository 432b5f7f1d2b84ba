"""A built-in, deterministic, offline data set of spoken-word-like sounds (8 kHz, 1 s)."""

import math

import torch

from ann2snn_zoo.data.base import AudioDataset, Clip
from ann2snn_zoo.frontend import FrontEnd

SAMPLE_RATE = 8000
SPLIT_SIZES = {"train": 150, "val": 20, "test": 30}  # clips per class
_SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}
_CHUNK = 100  # clips synthesised at once
_N_FFT, _HOP = 256, 64  # STFT in which the sounds are shaped

# (F1, F2) in Hz of an adult male voice, and the noise band (low, high) of fricatives.
_VOWELS = {
    "i": (280, 2250), "I": (400, 1920), "E": (580, 1800), "ae": (700, 1650), "a": (750, 1150),
    "A": (640, 1250), "o": (580, 880), "U": (450, 1100), "u": (320, 900),
}  # fmt: skip
_FRICATIVES = {"s": (3000, 3900), "sh": (1800, 2800), "f": (1000, 3900)}
# Each word: its segments (vowels and fricatives) and its pitch contour (start, end) relative to f0.
WORDS = {
    "ia": (("i", "a"), (1.15, 0.85)),
    "ai": (("a", "i"), (1.15, 0.85)),
    "ui": (("u", "i"), (1.0, 1.0)),
    "iu": (("i", "u"), (0.9, 1.15)),
    "sa": (("s", "a"), (1.1, 0.9)),
    "ash": (("a", "sh"), (1.1, 0.9)),
    "Eo": (("E", "o"), (0.9, 1.2)),
    "oE": (("o", "E"), (1.2, 0.9)),
    "fUA": (("f", "U", "A"), (1.1, 0.9)),
    "aeIu": (("ae", "I", "u"), (1.0, 0.85)),
}


def _word_table() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per word: its segments [n, 5] (F1, F2, fricative low, high, 1) and pitch contour [2]."""
    table = []
    for segments, contour in WORDS.values():
        rows = [[*_VOWELS[s], 0, 0, 1] if s in _VOWELS else [0, 0, *_FRICATIVES[s], 1] for s in segments]
        table.append((torch.tensor(rows, dtype=torch.float32), torch.tensor(contour)))
    return table


_WORD_TABLE = _word_table()


class Synthetic(AudioDataset):
    """Ten synthetic "words" (`WORDS`): a voiced source shaped by moving formants, and
    fricative noise bands, under a random speaker's pitch (90-240 Hz), vocal-tract length
    (formants x 0.88-1.15, jittered 8 % per segment), tempo (0.4-0.75 s), onset, and white
    background noise (-12 to 8 dB SNR, so some clips are genuinely hard).

    Balanced: item i has label i % 10. Deterministic for (`seed`, `split`); the three splits
    draw from different random streams. `n_per_class` defaults to 150 / 20 / 30 for
    train / val / test (2,000 clips, about 1 s to generate on 2 cores). Every clip is a new
    random speaker (`clips[i].speaker`). Measured test accuracy (Adam, one-cycle at 3e-3, batch
    64, 0.1 s shift augmentation): M5 on the waveform 89 % after 8 epochs (about 10 s on 2 idle
    cores) and 94 % after 20; on log-mel, after 10 epochs, VGG 96 %, ResNet 96 %, Piczak 94 %.
    """

    def __init__(self, split: str = "train", seed: int = 0, n_per_class: int | None = None, front_end: FrontEnd | None = None) -> None:
        if split not in SPLIT_SIZES:
            raise ValueError(f"split must be one of {tuple(SPLIT_SIZES)}, got {split!r}")
        n = (n_per_class if n_per_class is not None else SPLIT_SIZES[split]) * len(WORDS)
        labels = torch.arange(n) % len(WORDS)
        generator = torch.Generator().manual_seed(seed * len(_SPLIT_STREAMS) + _SPLIT_STREAMS[split])
        chunks = [synthesize(chunk, generator) for chunk in labels.split(_CHUNK)]
        self.waveforms = torch.cat(chunks) if chunks else torch.empty(0, SAMPLE_RATE)
        self.seed, self.split = seed, split
        clips = [Clip(label=int(y), speaker=f"{split}-{i}") for i, y in enumerate(labels)]
        super().__init__(clips, list(WORDS), front_end)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        return self.waveforms[i : i + 1], SAMPLE_RATE

    def item_key(self, i: int) -> str:
        return f"synthetic|{self.seed}|{self.split}|{i}"


def synthesize(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One second of audio per label [len(labels), 8000], shaped frame by frame in the STFT domain."""
    b, n_seg = len(labels), 3
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    frame_t = torch.arange(SAMPLE_RATE // _HOP + 1) * _HOP / SAMPLE_RATE
    bins = torch.fft.rfftfreq(_N_FFT, 1 / SAMPLE_RATE)[None, :, None]  # [1, F, 1]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, *shape, generator=generator)

    # Segments per clip (zero-padded to 3): F1, F2, fricative band low, high, present.
    seg = torch.zeros(b, n_seg, 5)
    pitch = torch.zeros(b, 2)
    for j, y in enumerate(labels.tolist()):
        segments, pitch[j] = _WORD_TABLE[y]
        seg[j, : len(segments)] = segments
    present, is_vowel = seg[..., 4], (seg[..., 0] > 0).float()

    # Timing: a random tempo and onset, segment lengths jittered, smooth transitions.
    duration = uniform(0.4, 0.75, 1)
    onset = uniform(0.05, 1.0, 1) * (0.95 - duration)
    share = uniform(0.7, 1.3, n_seg) * present
    share = share / share.sum(1, keepdim=True)
    centres = onset + duration * (share.cumsum(1) - share / 2)
    widths = duration * share / 2
    weights = torch.exp(-(((frame_t - centres[..., None]) / widths[..., None]) ** 2)) * present[..., None]
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1e-6)  # [b, seg, frames]
    envelope = torch.sigmoid((t - onset) / 0.01) * torch.sigmoid((onset + duration - t) / 0.015)

    # Speaker: vocal-tract length scales all frequencies, with per-segment jitter.
    scale = uniform(0.88, 1.15, 1) * (1 + 0.08 * torch.randn(b, n_seg, generator=generator))
    formants = (seg[..., :2] * scale[..., None]).transpose(1, 2) @ weights  # [b, 2, frames]
    f3 = 2500 * scale.mean(1)[:, None, None]
    resonance = sum(g / (1 + ((bins - f) / bw) ** 2) for f, g, bw in ((formants[:, None, 0], 1.0, 90.0), (formants[:, None, 1], 0.7, 120.0), (f3, 0.3, 180.0)))
    voiced_filter = resonance * (is_vowel[:, None, :] @ weights)  # [b, F, frames]
    lows, highs = (seg[..., 2:4] * scale[..., None]).unbind(-1)
    bands = ((bins[None, :, :, 0] >= lows[..., None]) & (bins[None, :, :, 0] <= highs[..., None])).float()
    hiss_filter = (bands * (1 - is_vowel)[..., None]).transpose(1, 2) @ weights  # [b, F, frames]

    # Source: a sawtooth at a speaker pitch (90-240 Hz) that follows the word's contour.
    f0 = torch.exp(uniform(math.log(90.0), math.log(240.0), 1))
    progress = ((t - onset) / duration).clamp(0, 1)
    f0 = f0 * (pitch[:, :1] + (pitch[:, 1:] - pitch[:, :1]) * progress)
    saw = 2 * torch.frac(torch.cumsum(f0, 1) / SAMPLE_RATE + torch.rand(b, 1, generator=generator)) - 1
    voiced = _filter(saw, voiced_filter)
    hiss = _filter(torch.randn(b, SAMPLE_RATE, generator=generator), hiss_filter)
    hiss = 0.5 * hiss * _rms(voiced) / _rms(hiss)

    speech = (voiced + hiss) * envelope
    noise = torch.randn(b, SAMPLE_RATE, generator=generator)
    snr_db = uniform(-12.0, 8.0, 1)
    return speech + noise * _rms(speech) / 10 ** (snr_db / 20)


def _filter(x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """Apply time-varying magnitude `gains` [b, F, frames] to `x` [b, samples] via the STFT."""
    window = torch.hann_window(_N_FFT)
    spec = torch.stft(x, _N_FFT, _HOP, window=window, return_complex=True)
    return torch.istft(spec * gains, _N_FFT, _HOP, window=window, length=x.shape[-1])


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).mean(1, keepdim=True).sqrt().clamp(min=1e-8)
