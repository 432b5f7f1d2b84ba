"""The common shape of the audio data sets: a list of clips, class names and a front end."""

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ann2snn_zoo.data.wav import check_wav, read_wav
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.frontend import FrontEnd


@dataclass(frozen=True)
class Clip:
    """Metadata of one item: label, speaker, and where its audio lies (path None: in memory)."""

    label: int
    speaker: str
    path: Path | None = None
    start: int = 0
    frames: int = -1


class AudioDataset(Dataset):
    """Items are (front_end(waveform, sample rate), label). Subclasses implement `load`.

    `clips[i]` holds the metadata of item i, `classes` the class names.
    """

    def __init__(self, clips: list[Clip], classes: list[str], front_end: FrontEnd | None = None) -> None:
        self.clips = clips
        self.classes = classes
        self.front_end = front_end or FrontEnd()

    @property
    def labels(self) -> list[int]:
        return [clip.label for clip in self.clips]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.front_end(*self.load(i)), self.clips[i].label

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        """The raw audio of item i: (waveform [channels, samples], sample rate)."""
        raise NotImplementedError

    def item_key(self, i: int) -> str:
        """A string that changes whenever item i's audio may have changed (for caches)."""
        raise NotImplementedError


class FileDataset(AudioDataset):
    """Clips read from WAV files. With `skip_bad`, unreadable files are dropped with a warning."""

    def __init__(self, clips: list[Clip], classes: list[str], front_end: FrontEnd | None = None, skip_bad: bool = False) -> None:
        if skip_bad:
            clips = _readable(clips)
        super().__init__(clips, classes, front_end)

    def load(self, i: int) -> tuple[torch.Tensor, int]:
        clip = self.clips[i]
        return read_wav(clip.path, clip.start, clip.frames)

    def item_key(self, i: int) -> str:
        clip = self.clips[i]
        stat = clip.path.stat()
        return f"{clip.path.resolve()}|{clip.start}|{clip.frames}|{stat.st_size}|{stat.st_mtime_ns}"


def _readable(clips: list[Clip]) -> list[Clip]:
    good, bad = [], {}
    for clip in clips:
        if clip.path in bad:
            continue
        try:
            check_wav(clip.path)
            good.append(clip)
        except DataError as e:
            bad[clip.path] = str(e)
    if bad:
        shown = "; ".join(list(bad.values())[:3])
        warnings.warn(f"skipped {len(bad)} unreadable WAV file(s): {shown}", stacklevel=3)
    return good


def holdout(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split item indices into (kept, held out), holding out `fraction` of each class at random."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_held = round(fraction * len(members))
        held += [members[j] for j in order[:n_held]]
        kept += [members[j] for j in order[n_held:]]
    return sorted(kept), sorted(held)


def require_dir(root: Path, layout: str) -> Path:
    """`root` as a Path, or DataError naming it and the expected layout if it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist; expected {layout}")
    return root
