"""One entry point for the training harness: `load_splits(name, ...)` -> train / val / test.

Data sets are looked up in `zoo.data.registry` (one entry each); nothing here names one."""

from pathlib import Path

from ann2snn_zoo.augment import Augment
from ann2snn_zoo.data.base import AudioDataset
from ann2snn_zoo.data.cache import CachedFeatures
from ann2snn_zoo.data.registry import DATASETS, dataset
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.frontend import FrontEnd

#: The registered data sets' names and default sample rates (derived from `zoo.data.registry`).
NAMES = tuple(DATASETS)
SAMPLE_RATES = {name: entry.sample_rate for name, entry in DATASETS.items()}
SPLITS = ("train", "val", "test")
SplitData = AudioDataset | CachedFeatures


class Splits(dict):
    """{"train": ..., "val": ..., "test": ...} with the task's `classes` and `n_classes`."""

    def __init__(self, train: SplitData, val: SplitData, test: SplitData) -> None:
        super().__init__(train=train, val=val, test=test)
        self.classes: list[str] = train.classes
        self.n_classes = len(self.classes)


def load_splits(
    name: str,
    data_dir: str | Path | None = None,
    front_end: FrontEnd | None = None,
    seed: int = 0,
    augment: Augment | None = None,
    cached: bool = True,
    cache_dir: str | Path | None = None,
    **options,
) -> Splits:
    """The train, val and test sets of data set `name` (a `zoo.data.registry` entry: "synthetic",
    "fsdd", "speech_commands").

    `data_dir` is the data set's folder (not used by "synthetic"). `front_end` defaults to
    log-mel at the data set's rate (its registry entry's `front_end()`). `options` go to the data set
    class: FSDD's test_speaker, val_fraction, skip_bad; SpeechCommands' task (35 or 12),
    unknown_fraction, silence_fraction, skip_bad; Synthetic's n_per_class (it ignores skip_bad:
    generated clips are never unreadable). With `cached` (the
    default) each split is a CachedFeatures (features computed once, optionally saved under
    `cache_dir`), and `augment` applies to the training split only.
    """
    entry = dataset(name)
    if augment is not None and not cached:
        raise ValueError("augment needs cached=True (augmentation is applied on top of the cached features)")
    front_end = front_end or entry.front_end()
    sets = {split: entry.build(data_dir, split, seed, front_end, **options) for split in SPLITS}
    if cached:
        augments = {"train": augment}
        sets = {split: CachedFeatures(data, augments.get(split), cache_dir) for split, data in sets.items()}
    return Splits(**sets)


def speakers(name: str, data_dir: str | Path | None = None) -> list[str]:
    """The speakers of data set `name`, sorted: the folds of leave-one-speaker-out cross-validation
    (each is a valid `test_speaker`), for data sets whose registry entry lists them (FSDD: 6)."""
    entry = dataset(name)
    if entry.speakers is None:
        having = [n for n, e in DATASETS.items() if e.speakers is not None]
        raise ValueError(f"leave-one-speaker-out folds are defined for {', '.join(having)} only, not {name!r}")
    if data_dir is None:
        raise DataError(f"{name} needs data_dir: the local folder holding the data set")
    return entry.speakers(data_dir)


def speaker_folds(name: str, data_dir: str | Path | None = None) -> list[dict[str, str]]:
    """Leave-one-speaker-out cross-validation: one fold per speaker, as the `options` of
    `load_splits` (`{"test_speaker": s}`). In fold s every clip of s is test and no clip of s
    is in train or val (val is `val_fraction` of the other speakers' clips, per digit), so over
    the folds every clip is a test clip exactly once."""
    return [{"test_speaker": speaker} for speaker in speakers(name, data_dir)]


def check_source(name: str, data_dir: str | Path | None = None, seed: int = 0, **options) -> None:
    """Raise DataError (naming the folder) if data set `name` cannot be found with these options.

    Lists the files but reads no audio (skip_bad's check of every file waits for `load_splits`),
    and writes nothing: call it before creating any output.
    """
    dataset(name).check(data_dir, seed, **options)
