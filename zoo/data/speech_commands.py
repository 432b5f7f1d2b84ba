"""Google Speech Commands v0.02 in its on-disk layout: the 35-word and the 12-class tasks."""

import math
from pathlib import Path

import soundfile as sf
import torch

from ann2snn_zoo.data.base import Clip, FileDataset, require_dir
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.frontend import FrontEnd

WORDS_35 = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
    "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
]  # fmt: skip
WORDS_10 = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
UNKNOWN, SILENCE = "_unknown_", "_silence_"
NOISE_DIR = "_background_noise_"
SPLITS = ("train", "val", "test")
LAYOUT = f"Speech Commands' layout: one folder of WAV files per word, validation_list.txt and testing_list.txt (paths like word/file.wav), and {NOISE_DIR}/ for the 12-class task"
# Each background-noise file is cut into disjoint stretches per split, so silence never leaks.
_NOISE_SPAN = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
_CLIP_S = 1.0


class SpeechCommands(FileDataset):
    """Speech Commands (Warden 2018, arXiv:1804.03209) from a local copy of v0.02.

    task=35: the 35 words. task=12: yes, no, up, down, left, right, on, off, stop, go, then
    "_unknown_" and "_silence_", as in TensorFlow's speech_commands example: for N clips of
    the ten words in a split, ceil(`unknown_fraction` N) clips of other words drawn by `seed`,
    and ceil(`silence_fraction` N) 1 s stretches cut at random from the background-noise files
    (each file's first 80 % feeds train, the next 10 % val, the last 10 % test, so no noise
    is shared between splits). Splits follow validation_list.txt and testing_list.txt.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        task: int = 35,
        unknown_fraction: float = 0.1,
        silence_fraction: float = 0.1,
        seed: int = 0,
        front_end: FrontEnd | None = None,
        skip_bad: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if task not in (12, 35):
            raise ValueError(f"task must be 12 or 35, got {task!r}")
        root = require_dir(Path(root), LAYOUT)
        files = _split_files(root, split)
        if task == 35:
            classes = WORDS_35
            clips = [_clip(path, WORDS_35.index(path.parent.name)) for path in files]
        else:
            classes = WORDS_10 + [UNKNOWN, SILENCE]
            generator = torch.Generator().manual_seed(seed)
            clips = [_clip(path, WORDS_10.index(path.parent.name)) for path in files if path.parent.name in WORDS_10]
            others = [path for path in files if path.parent.name not in WORDS_10]
            n_known = len(clips)
            n_unknown = min(len(others), math.ceil(unknown_fraction * n_known))
            picked = torch.randperm(len(others), generator=generator)[:n_unknown].tolist()
            clips += [_clip(others[i], classes.index(UNKNOWN)) for i in sorted(picked)]
            clips += _silence(root, split, math.ceil(silence_fraction * n_known), classes.index(SILENCE), generator)
        super().__init__(clips, classes, front_end, skip_bad)


def _clip(path: Path, label: int) -> Clip:
    return Clip(label=label, speaker=path.name.split("_nohash_")[0], path=path)


def _split_files(root: Path, split: str) -> list[Path]:
    """The WAV files of the 35 words' folders that belong to `split`, sorted."""
    files = sorted(path for word in WORDS_35 if (root / word).is_dir() for path in (root / word).glob("*.wav"))
    if not files:
        raise DataError(f"no word folders with WAV files in {root}; expected {LAYOUT}")
    listed = {name: _read_list(root / f"{name}_list.txt") for name in ("validation", "testing")}
    relative = [path.relative_to(root).as_posix() for path in files]
    if split == "train":
        exclude = listed["validation"] | listed["testing"]
        return [path for path, rel in zip(files, relative) if rel not in exclude]
    keep = listed["validation" if split == "val" else "testing"]
    return [path for path, rel in zip(files, relative) if rel in keep]


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DataError(f"missing split list {path}; expected {LAYOUT}")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _silence(root: Path, split: str, n: int, label: int, generator: torch.Generator) -> list[Clip]:
    """`n` 1 s stretches of background noise from this split's part of each noise file."""
    noise_dir = root / NOISE_DIR
    sources = sorted(noise_dir.glob("*.wav")) if noise_dir.is_dir() else []
    if n > 0 and not sources:
        raise DataError(f"no background-noise WAV files in {noise_dir}; the 12-class task needs them ({LAYOUT})")
    spans = []
    for path in sources:
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as e:
            raise DataError(f"cannot read WAV file {path}: {e}") from e
        low, high = _NOISE_SPAN[split]
        begin, end = int(low * info.frames), int(high * info.frames)
        spans.append((path, begin, end, min(round(_CLIP_S * info.samplerate), end - begin)))
    clips = []
    for _ in range(n):
        path, begin, end, frames = spans[int(torch.randint(len(spans), (), generator=generator))]
        start = begin + int(torch.randint(end - begin - frames + 1, (), generator=generator))
        clips.append(Clip(label=label, speaker=NOISE_DIR, path=path, start=start, frames=frames))
    return clips
