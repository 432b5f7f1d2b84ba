"""Saving and loading converted networks."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .atomic import atomic_path
from .errors import ConversionError
from .timeloop import SpikingNetwork

FORMAT = "ann2snn.SpikingNetwork"
VERSION = 1


def save(snn: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write ``snn`` (graph, weights, thresholds, time constants, report) to ``path`` atomically:
    a temporary file in the same folder, renamed over ``path`` only once complete."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, "network": snn}, tmp)


def load(path: str | os.PathLike, map_location: str | torch.device | None = None) -> SpikingNetwork:
    """Load a network written by ``save``.

    The file holds the generated graph code, so loading it unpickles Python objects: only load
    files you trust (as with ``torch.load(weights_only=False)``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ConversionError(f"{path} is not a network saved by ann2snn.save ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConversionError(f"{path} is not a network saved by ann2snn.save (no '{FORMAT}' header)")
    return payload["network"]
