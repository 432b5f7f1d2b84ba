"""One entry point for the training harness: `load_splits(name, ...)` -> train / val / test."""

from pathlib import Path

from zoo.augment import Augment
from zoo.data.base import AudioDataset
from zoo.data.cache import CachedFeatures
from zoo.data.fsdd import FSDD
from zoo.data.speech_commands import SpeechCommands
from zoo.data.synthetic import Synthetic
from zoo.errors import DataError
from zoo.frontend import FrontEnd

NAMES = ("synthetic", "fsdd", "speech_commands")
SAMPLE_RATES = {"synthetic": 8000, "fsdd": 8000, "speech_commands": 16000}  # of the default front end
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
    """The train, val and test sets of data set `name` ("synthetic", "fsdd", "speech_commands").

    `data_dir` is the data set's folder (not used by "synthetic"). `front_end` defaults to
    log-mel at the data set's rate (`SAMPLE_RATES`). `options` go to the data set
    class: FSDD's test_speaker, val_fraction, skip_bad; SpeechCommands' task (35 or 12),
    unknown_fraction, silence_fraction, skip_bad; Synthetic's n_per_class (it ignores skip_bad:
    generated clips are never unreadable). With `cached` (the
    default) each split is a CachedFeatures (features computed once, optionally saved under
    `cache_dir`), and `augment` applies to the training split only.
    """
    if name not in NAMES:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(NAMES)}")
    if augment is not None and not cached:
        raise ValueError("augment needs cached=True (augmentation is applied on top of the cached features)")
    front_end = front_end or FrontEnd(sample_rate=SAMPLE_RATES[name])
    sets = _data_sets(name, data_dir, front_end, seed, SPLITS, **options)
    if cached:
        augments = {"train": augment}
        sets = {split: CachedFeatures(data, augments.get(split), cache_dir) for split, data in sets.items()}
    return Splits(**sets)


def speakers(name: str, data_dir: str | Path | None = None) -> list[str]:
    """The speakers of data set `name`, sorted: the folds of leave-one-speaker-out cross-validation
    (each is a valid `test_speaker`). Only FSDD has a fixed, small speaker set (6 speakers)."""
    if name != "fsdd":
        raise ValueError(f"leave-one-speaker-out folds are defined for fsdd only, not {name!r}")
    if data_dir is None:
        raise DataError(f"{name} needs data_dir: the local folder holding the data set")
    return sorted({clip.speaker for clip in FSDD(data_dir, "all").clips})


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
    if name not in NAMES:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(NAMES)}")
    if name != "synthetic":
        options.pop("skip_bad", None)
        _data_sets(name, data_dir, None, seed, ("test",), **options)


def _data_sets(
    name: str, data_dir: str | Path | None, front_end: FrontEnd | None, seed: int, splits: tuple[str, ...], **options
) -> dict[str, AudioDataset]:
    """The uncached data sets of `splits`."""
    if name == "synthetic":
        options.pop("skip_bad", None)  # generated clips are never unreadable
        return {split: Synthetic(split, seed, front_end=front_end, **options) for split in splits}
    if data_dir is None:
        raise DataError(f"{name} needs data_dir: the local folder holding the data set")
    cls = FSDD if name == "fsdd" else SpeechCommands
    return {split: cls(data_dir, split, seed=seed, front_end=front_end, **options) for split in splits}
