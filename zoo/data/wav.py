"""Reading WAV files with soundfile (torchaudio.load needs FFmpeg, which is not assumed)."""

from pathlib import Path

import soundfile as sf
import torch

from ann2snn_zoo.errors import DataError


def read_wav(path: Path, start: int = 0, frames: int = -1) -> tuple[torch.Tensor, int]:
    """Read `frames` frames (-1: all) from `start`: (float32 waveform [channels, n], sample rate).

    Raises DataError naming the file if it cannot be opened, is truncated (its data chunk is
    shorter than its header says) or holds no samples.
    """
    try:
        with sf.SoundFile(path) as f:
            _check_complete(path, f.extra_info)
            f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)
            sample_rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise DataError(f"cannot read WAV file {path}: {e}") from e
    if data.shape[0] == 0:
        raise DataError(f"WAV file {path} holds no samples")
    return torch.from_numpy(data.T.copy()), sample_rate


def check_wav(path: Path) -> None:
    """Raise DataError naming `path` if it is not a complete, non-empty sound file (header only)."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(f"cannot read WAV file {path}: {e}") from e
    _check_complete(path, info.extra_info)
    if info.frames == 0:
        raise DataError(f"WAV file {path} holds no samples")


def _check_complete(path: Path, extra_info: str) -> None:
    # libsndfile reads a truncated file up to where it ends and logs the shortfall, e.g.
    # "data : 16000 (should be 956)"; treat that as an error rather than a shorter clip.
    for line in extra_info.splitlines():
        if line.startswith("data") and "should be" in line:
            raise DataError(f"truncated WAV file {path}: {line.strip()}")
