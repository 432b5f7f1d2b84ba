"""Data sets by name: one ``DataSet`` entry each (its class, sample rate, front end, how to
build a split), from which ``load_splits``, the command lines' choices and their help are derived.

Adding a data set is its class (an ``AudioDataset``; a ``FileDataset`` for WAV files, taking
``(root, split, seed=, front_end=, skip_bad=, **options)``) plus one entry in ``DATASETS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ann2snn_zoo.data.base import AudioDataset
from ann2snn_zoo.data.fsdd import FSDD
from ann2snn_zoo.data.speech_commands import SpeechCommands
from ann2snn_zoo.data.synthetic import SAMPLE_RATE as SYNTHETIC_RATE
from ann2snn_zoo.data.synthetic import Synthetic
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.frontend import FrontEnd


@dataclass(frozen=True)
class DataSet:
    """A registered data set.

    ``cls`` builds one split; ``local``: it reads a folder (``data_dir``), else it is generated
    (and ``skip_bad`` means nothing to it). ``sample_rate``: the rate its default front end
    resamples to. ``speakers``: for data sets with a small fixed speaker set, the function that
    lists them from the folder (the folds of leave-one-speaker-out cross-validation)."""

    name: str
    cls: type[AudioDataset]
    sample_rate: int
    help: str
    local: bool = True
    speakers: Optional[Callable[[str | Path], list[str]]] = None

    def front_end(self, **settings: Any) -> FrontEnd:
        """The front end at this data set's rate; ``settings`` override it (and the other defaults)."""
        return FrontEnd(**{"sample_rate": self.sample_rate, **settings})

    def build(self, data_dir: str | Path | None, split: str, seed: int = 0, front_end: FrontEnd | None = None, **options: Any) -> AudioDataset:
        """Split ``split`` of the data set (uncached); ``options`` go to the class."""
        if not self.local:
            options.pop("skip_bad", None)  # generated clips are never unreadable
            return self.cls(split, seed=seed, front_end=front_end, **options)
        if data_dir is None:
            raise DataError(f"{self.name} needs data_dir: the local folder holding the data set")
        return self.cls(data_dir, split, seed=seed, front_end=front_end, **options)

    def check(self, data_dir: str | Path | None, seed: int = 0, **options: Any) -> None:
        """Raise DataError (naming the folder) if the data cannot be found with these options;
        lists the files but reads no audio, writes nothing. Generated data sets always pass."""
        if self.local:
            options.pop("skip_bad", None)  # reading every file waits for load_splits
            self.build(data_dir, "test", seed, None, **options)


def _fsdd_speakers(data_dir: str | Path) -> list[str]:
    return sorted({clip.speaker for clip in FSDD(data_dir, "all").clips})


DATASETS: dict[str, DataSet] = {
    entry.name: entry
    for entry in (
        DataSet("synthetic", Synthetic, SYNTHETIC_RATE, "ten built-in synthetic words (no --data-dir)", local=False),
        DataSet("fsdd", FSDD, 8000, "Free Spoken Digit Dataset (needs --data-dir)", speakers=_fsdd_speakers),
        DataSet("speech_commands", SpeechCommands, 16000, "Speech Commands v0.02 (needs --data-dir)"),
    )
}


def names() -> tuple[str, ...]:
    """The registered data sets' names (the choices of every command line)."""
    return tuple(DATASETS)


def dataset(name: str) -> DataSet:
    """The entry of data set ``name``; KeyError listing the registered ones."""
    if name not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def describe() -> str:
    """One line for command-line help: every data set and what it needs."""
    return "; ".join(f"{entry.name}: {entry.help}" for entry in DATASETS.values())
