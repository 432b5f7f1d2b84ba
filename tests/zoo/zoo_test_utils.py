"""Helpers for the zoo tests (a unique module name, so it never collides with other tests')."""

from pathlib import Path

import numpy as np
import soundfile as sf


def write_wav(path: Path, seconds: float = 0.5, sample_rate: int = 8000, freq: float = 440.0, channels: int = 1) -> Path:
    """Write a sine tone (a column per channel) as 16-bit PCM; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([tone] * channels, axis=1), sample_rate, subtype="PCM_16")
    return path
