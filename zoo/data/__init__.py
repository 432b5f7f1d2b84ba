"""Audio data sets (FSDD, Speech Commands, synthetic words), feature caching and `load_splits`."""

from zoo.data.base import AudioDataset, Clip, FileDataset
from zoo.data.cache import CachedFeatures
from zoo.data.fsdd import FSDD, download_fsdd
from zoo.data.speech_commands import SpeechCommands
from zoo.data.splits import NAMES, Splits, load_splits
from zoo.data.synthetic import Synthetic
from zoo.data.wav import read_wav

__all__ = [
    "NAMES", "AudioDataset", "CachedFeatures", "Clip", "FSDD", "FileDataset", "SpeechCommands", "Splits",
    "Synthetic", "download_fsdd", "load_splits", "read_wav",
]  # fmt: skip
