"""Checkpoints: written atomically, read with ``weights_only=True``, clear errors when corrupt.

A checkpoint is a dict with at least ``model`` (zoo name), ``config`` (``zoo.create`` options)
and ``state_dict``; training checkpoints add ``epoch``, optimiser and schedule state, history
and RNG state so that ``--resume`` continues where a killed run stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ann2snn.atomic import atomic_path


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated or not a checkpoint; the message names the file."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file and a rename, so a kill mid-write leaves
    the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (tensors and plain containers only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path} is corrupt or not a checkpoint ({type(error).__name__}: {str(error)[:200]}); "
            "it was left untouched: delete it to train from scratch"
        ) from error
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not an ann2snn checkpoint (no 'state_dict' entry)")
    return payload
