"""Shared fixtures of the zoo tests: the FSDD folder and a WAV writer."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

# tests/zoo/conftest.py -> repository root -> ../shared/data/fsdd
FSDD_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fsdd").resolve()


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """The shared FSDD copy; skipped when missing, except under CI=true where that fails."""
    if not (FSDD_DIR / "recordings").is_dir():
        if on_ci():
            pytest.fail(f"FSDD not found at {FSDD_DIR}; under CI=true the FSDD tests must run")
        pytest.skip(f"FSDD not found at {FSDD_DIR}")
    return FSDD_DIR


def write_wav(path: Path, seconds: float = 0.5, sample_rate: int = 8000, freq: float = 440.0, channels: int = 1) -> Path:
    """Write a sine tone (a column per channel) as 16-bit PCM; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(path, np.stack([tone] * channels, axis=1), sample_rate, subtype="PCM_16")
    return path
