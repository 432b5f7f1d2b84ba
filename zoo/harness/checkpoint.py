"""Checkpoints: written atomically, read with ``weights_only=True``, clear errors when corrupt.

A checkpoint is a dict with at least ``state_dict``; a zoo model's names it (``model``, the zoo
name, and ``config``, ``zoo.create``'s options). What a training checkpoint holds besides (the
optimiser, schedule, RNG state, history, early stopping, so that ``--resume`` continues where a
killed run stopped) is ``zoo.harness.train_state.TrainState``, versioned. ``sha256`` holds a
checksum of each state dict (``state_dict``, ``best_state_dict``), verified on load: torch keeps
none, so flipped bytes inside the archive would otherwise load as different weights.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ann2snn.atomic import atomic_path

STATE_DICTS = ("state_dict", "best_state_dict")  # the entries whose tensors are checksummed


class CheckpointError(Exception):
    """A checkpoint file is missing, truncated or not a checkpoint; the message names the file."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` via a temporary file and a rename, so a kill mid-write leaves
    the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sums = {key: state_checksum(payload[key]) for key in STATE_DICTS if isinstance(payload.get(key), dict)}
    with atomic_path(path) as tmp:
        torch.save({**payload, "sha256": sums}, tmp)


def state_checksum(state: dict[str, Any]) -> str:
    """sha256 over the tensors of a state dict in key order (each key, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _verify(path: Path, payload: dict[str, Any]) -> None:
    """Raise CheckpointError if a state dict no longer matches its recorded checksum."""
    for key, expected in payload.get("sha256", {}).items():
        if state_checksum(payload.get(key) or {}) != expected:
            raise CheckpointError(
                f"{path}: the tensors of '{key}' do not match the checkpoint's checksum (the file is corrupt); it was left untouched: restore it from a copy or delete it to train from scratch"
            )


def _unreadable(error: Exception) -> str:
    """Why ``torch.load`` could not read a file, as a complete clause (torch's own messages run to
    several sentences of advice that does not apply here, such as weights_only=False)."""
    text = " ".join(str(error).split())
    if "Unsupported global" in text:
        return "it holds pickled Python objects besides tensors, which are not unpickled (that would run code from the file)"
    if isinstance(error, EOFError) or "Ran out of input" in text:
        return "it ends too early (truncated)"
    if "zip archive" in text or "central directory" in text or isinstance(error, pickle.UnpicklingError):
        return "torch cannot read it as a checkpoint (truncated, damaged, or another kind of file)"
    return f"torch cannot read it ({type(error).__name__})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (tensors and plain containers only: no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint: {_unreadable(error)}; it was left untouched: pass another checkpoint path, or delete it to train from scratch") from error
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not an ann2snn checkpoint (no 'state_dict' entry)")
    _verify(path, payload)
    return payload
