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
    unknown_fraction, silence_fraction, skip_bad; Synthetic's n_per_class. With `cached` (the
    default) each split is a CachedFeatures (features computed once, optionally saved under
    `cache_dir`), and `augment` applies to the training split only.
    """
    if name not in NAMES:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(NAMES)}")
    if augment is not None and not cached:
        raise ValueError("augment needs cached=True (augmentation is applied on top of the cached features)")
    front_end = front_end or FrontEnd(sample_rate=SAMPLE_RATES[name])
    if name == "synthetic":
        sets = {split: Synthetic(split, seed, front_end=front_end, **options) for split in SPLITS}
    else:
        if data_dir is None:
            raise DataError(f"{name} needs data_dir: the local folder holding the data set")
        cls = FSDD if name == "fsdd" else SpeechCommands
        sets = {split: cls(data_dir, split, seed=seed, front_end=front_end, **options) for split in SPLITS}
    if cached:
        augments = {"train": augment}
        sets = {split: CachedFeatures(data, augments.get(split), cache_dir) for split, data in sets.items()}
    return Splits(**sets)
