"""Audio data sets (FSDD, Speech Commands, synthetic words), their registry (`DATASETS`: one
entry per data set, from which every command line's choices come), feature caching and `load_splits`."""

from ann2snn_zoo.data.base import AudioDataset, Clip, FileDataset
from ann2snn_zoo.data.cache import CachedFeatures
from ann2snn_zoo.data.fsdd import FSDD, download_fsdd
from ann2snn_zoo.data.registry import DATASETS, DataSet, dataset
from ann2snn_zoo.data.speech_commands import SpeechCommands
from ann2snn_zoo.data.splits import NAMES, Splits, load_splits
from ann2snn_zoo.data.synthetic import Synthetic
from ann2snn_zoo.data.wav import read_wav

__all__ = [
    "DATASETS", "NAMES", "AudioDataset", "CachedFeatures", "Clip", "DataSet", "FSDD", "FileDataset", "SpeechCommands",
    "Splits", "Synthetic", "dataset", "download_fsdd", "load_splits", "read_wav",
]  # fmt: skip
