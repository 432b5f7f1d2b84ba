"""What a training checkpoint holds: ``TrainState``, its schema in one place.

``fit`` (``zoo.harness.train``) writes a ``TrainState`` after every epoch and reads it back to
resume; every other reader (``ann2snn convert`` through the zoo's plugin, the harness's tests)
sees the plain dict of ``TrainState.to_dict``. Version 1 is the layout the harness has always
written; files written before the version entry existed carry none and are read as version 1.

Version 1 entries, beside the caller's ``extra`` ones (``model_entries``: ``model``, the zoo
name, and ``config``, ``zoo.create``'s options, which ``ann2snn convert`` reads through the
zoo's plugin with ``state_dict``; ``kind: "snn"`` on a spiking network's checkpoint):

- ``state_dict``: the weights after the last finished epoch
- ``optimizer``, ``scheduler``: their ``state_dict()``
- ``rng``: torch's CPU generator state; ``cuda_rng``: the CUDA generators' (``[]`` on the CPU)
- ``epoch``: the last finished epoch, 0-based
- ``history``: one record per epoch (epoch, train_loss, val_loss, val_top1, seconds)
- ``best_epoch`` (0-based, -1 before the first), ``best_loss``, ``best_state_dict``: early
  stopping's best validation loss, when, and those weights
- ``stopped_early``, ``finished``: how the run ended (``finished``: nothing is left to train)
- ``train_config``: the ``TrainConfig`` as a dict
- ``train_state_version``: 1
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

import torch

from ann2snn_zoo.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

VERSION_KEY = "train_state_version"


@dataclass
class History:
    """Per-epoch records and the outcome of a training run."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        times = [e["seconds"] for e in self.epochs]
        return sum(times) / len(times) if times else math.nan


@dataclass
class TrainState:
    """The state of a training run after one epoch: enough to continue it exactly."""

    VERSION: ClassVar[int] = 1
    #: Entries every version-1 file holds (the others have defaults: files older than them lack them).
    REQUIRED: ClassVar[tuple[str, ...]] = (
        "state_dict", "optimizer", "scheduler", "rng", "epoch", "history", "best_epoch", "best_loss", "best_state_dict", "finished",
    )  # fmt: skip
    #: Entries added later, with defaults for files that lack them.
    OPTIONAL: ClassVar[tuple[str, ...]] = ("cuda_rng", "stopped_early", "train_config")

    state_dict: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: torch.Tensor
    epoch: int
    history: History
    best_loss: float
    best_state_dict: Optional[dict[str, torch.Tensor]]
    finished: bool
    cuda_rng: list[torch.Tensor] = field(default_factory=list)
    train_config: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # the caller's entries (zoo model name, its config...)

    @classmethod
    def entries(cls) -> set[str]:
        """The checkpoint entries the schema owns (the checksums ``sha256`` included)."""
        return {*cls.REQUIRED, *cls.OPTIONAL, VERSION_KEY, "sha256"}

    @property
    def next_epoch(self) -> int:
        """The 0-based epoch a resumed run starts with."""
        return self.epoch + 1

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint's content: ``extra`` first, then the schema's entries (module docstring)."""
        clash = sorted(set(self.extra) & self.entries())
        if clash:
            raise ValueError(f"checkpoint extras {clash} would overwrite entries of the training state")
        return {
            **self.extra, "state_dict": self.state_dict, "optimizer": self.optimizer, "scheduler": self.scheduler,
            "rng": self.rng, "cuda_rng": self.cuda_rng, "epoch": self.epoch, "history": self.history.epochs,
            "best_epoch": self.history.best_epoch, "best_loss": self.best_loss, "stopped_early": self.history.stopped_early,
            "best_state_dict": self.best_state_dict, "finished": self.finished, "train_config": self.train_config,
            VERSION_KEY: self.VERSION,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, payload: dict[str, Any], origin: str | os.PathLike = "checkpoint") -> TrainState:
        """The state in ``payload`` (a checkpoint's content); CheckpointError naming ``origin``
        and the way out if it is another version or no training state at all."""
        version = payload.get(VERSION_KEY, 1)  # files written before the entry existed are version 1
        if version != cls.VERSION:
            newer = isinstance(version, int) and version > cls.VERSION
            why = "a newer ann2snn wrote it: resume it with that version" if newer else "it is not a training state this code knows"
            raise CheckpointError(
                f"{origin} holds training state version {version!r}, but this code reads version {cls.VERSION} ({why}); "
                "it was left untouched: pass another checkpoint path, or delete it to train from scratch"
            )
        missing = [key for key in cls.REQUIRED if key not in payload]
        if missing:
            raise CheckpointError(
                f"{origin} holds no training state to resume (it lacks {', '.join(missing)}: a model file, not a "
                "checkpoint written by zoo.harness.fit); it was left untouched: pass another checkpoint path, or delete it to train from scratch"
            )
        return cls(
            state_dict=payload["state_dict"], optimizer=payload["optimizer"], scheduler=payload["scheduler"], rng=payload["rng"],
            epoch=payload["epoch"], history=History(payload["history"], payload["best_epoch"], payload.get("stopped_early", False)),
            best_loss=payload["best_loss"], best_state_dict=payload["best_state_dict"], finished=payload["finished"],
            cuda_rng=payload.get("cuda_rng") or [], train_config=payload.get("train_config") or {},
            extra={k: v for k, v in payload.items() if k not in cls.entries()},
        )  # fmt: skip


def model_entries(name: str, config: Optional[dict[str, Any]] = None, kind: Optional[str] = None) -> dict[str, Any]:
    """The checkpoint entries that say which network the weights belong to: ``model`` (the zoo
    name) and, for a CNN, ``config`` (``zoo.create``'s options) or, for an SNN, ``kind``."""
    return {"model": name, **({"config": config} if config is not None else {}), **({"kind": kind} if kind is not None else {})}


def save_train_state(path: str | os.PathLike, state: TrainState) -> None:
    """Write ``state`` to ``path`` atomically, with checksums of its weights (``zoo.harness.checkpoint``)."""
    save_checkpoint(path, state.to_dict())


def load_train_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> TrainState:
    """The training state in checkpoint ``path`` (CheckpointError if unreadable, corrupt, of
    another version or not a training checkpoint)."""
    return TrainState.from_dict(load_checkpoint(path, map_location=map_location), Path(path))
