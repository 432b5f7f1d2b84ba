"""Compute a data set's front-end output once; apply augmentation per item on top."""

import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ann2snn.atomic import atomic_path
from ann2snn_zoo.augment import Augment
from ann2snn_zoo.data.base import AudioDataset

_CHUNK = 256  # clips per batched feature computation
_VERSION = 1  # bump when the meaning of cached tensors changes


class CachedFeatures(Dataset):
    """Wraps an AudioDataset: decodes and prepares every clip once, in memory.

    Without waveform augmentation it stores the finished features; with it (time shift, noise)
    it stores prepared waveforms and computes the features per item after augmenting. With
    `cache_dir`, the stored tensor is also saved to (and later loaded from) a file named by a
    hash of the front-end settings and every item's identity (path, offset, size, mtime).
    `clips`, `classes`, `labels`, `n_classes` and `front_end` are the wrapped data set's.
    """

    def __init__(self, dataset: AudioDataset, augment: Augment | None = None, cache_dir: str | Path | None = None) -> None:
        self.dataset = dataset
        self.augment = augment
        self.front_end = dataset.front_end
        self.stores_waveforms = augment is not None and augment.on_waveform
        self.data = self._load_or_compute(Path(cache_dir) if cache_dir is not None else None)

    @property
    def clips(self):
        return self.dataset.clips

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    @property
    def labels(self) -> list[int]:
        return self.dataset.labels

    @property
    def n_classes(self) -> int:
        return self.dataset.n_classes

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.data[i]
        if self.augment is not None:
            if self.stores_waveforms:
                x = self.front_end.features(self.augment.waveform(x, self.front_end.sample_rate))
            if self.front_end.kind == "logmel":
                x = self.augment.spectrogram(x)
        return x, self.dataset.clips[i].label

    def key(self) -> str:
        """Hash of everything the stored tensor depends on."""
        items = [self.dataset.item_key(i) for i in range(len(self.dataset))]
        settings = {"version": _VERSION, "front_end": self.front_end.settings(), "waveforms": self.stores_waveforms}
        return hashlib.sha256(json.dumps([settings, items]).encode()).hexdigest()[:20]

    def _load_or_compute(self, cache_dir: Path | None) -> torch.Tensor:
        if cache_dir is None:
            return self._compute()
        path = cache_dir / f"{type(self.dataset).__name__.lower()}-{self.key()}.pt"
        if path.is_file():
            data = self._read(path)
            if data is not None:
                return data
        data = self._compute()
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(data, tmp)
        return data

    def _read(self, path: Path) -> torch.Tensor | None:
        """The tensor cached in `path`, or None (with a warning) if the file is unreadable or does
        not hold one row per item: it is then rebuilt."""
        try:
            data = torch.load(path, weights_only=True)
            if isinstance(data, torch.Tensor) and len(data) == len(self.dataset):
                return data
            reason = "it does not hold one row per item"
        except Exception as error:  # any unreadable file: a cache is rebuilt, never trusted
            reason = f"{type(error).__name__}: {' '.join(str(error).split())[:120]}"
        warnings.warn(f"feature cache {path} is unreadable ({reason}); rebuilding it", stacklevel=4)
        return None

    def _compute(self) -> torch.Tensor:
        if len(self.dataset) == 0:
            shape = (1, self.front_end.samples) if self.stores_waveforms else self.front_end.output_shape
            return torch.empty(0, *shape)
        waves = torch.stack([self.front_end.prepare(*self.dataset.load(i)) for i in range(len(self.dataset))])
        if self.stores_waveforms:
            return waves
        with torch.no_grad():
            return torch.cat([self.front_end.features(chunk) for chunk in waves.split(_CHUNK)])
