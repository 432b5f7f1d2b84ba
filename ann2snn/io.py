"""Saving and loading converted networks.

The file is a ``torch.save`` archive that ``torch.load(weights_only=True)`` reads: a header, the
network's tensors, and a JSON description of its module tree and fx graph (``safe_format``), so
``load`` runs no code from the file. A network the description cannot cover (a module of another
package, a hook, a lambda) is stored as a pickle instead, with a warning; only
``load(path, trust_pickle=True)`` reads such files and files of the pickled version 1 format.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import warnings
from pathlib import Path
from typing import Any

import torch

from . import safe_format
from .atomic import atomic_path
from .export_archive import is_export_archive
from .errors import ConversionError
from .timeloop import SpikingNetwork

FORMAT = "ann2snn.SpikingNetwork"
VERSION = 2
PICKLED_VERSION = 1  # the whole network pickled: written before version 2, read only when trusted


def save(snn: SpikingNetwork, path: str | os.PathLike) -> None:
    """Write ``snn`` (graph, weights, thresholds, time constants, report) to ``path`` atomically:
    a temporary file in the same folder, renamed over ``path`` only once complete.

    Only a ``SpikingNetwork`` (what ``ann2snn.convert`` returns) is accepted: ``load`` reads nothing else.
    """
    if not isinstance(snn, SpikingNetwork):
        raise ConversionError(
            f"ann2snn.save writes SpikingNetworks, which ann2snn.load reads; got a {type(snn).__module__}.{type(snn).__qualname__}: "
            "convert it first (ann2snn.save(ann2snn.convert(model, ...), path)), or write a CNN with torch.save"
        )
    payload: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    try:
        payload["description"], payload["tensors"] = safe_format.describe(snn)
    except safe_format.Undescribable as reason:
        warnings.warn(f"{path}: saved as a pickle, which ann2snn.load reads only with trust_pickle=True: {reason}", stacklevel=2)
        payload["pickled"], payload["reason"] = _pickle_bytes(snn), str(reason)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _pickle_bytes(snn: SpikingNetwork) -> torch.Tensor:
    buffer = io.BytesIO()
    torch.save(snn, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def load(path: str | os.PathLike, map_location: str | torch.device | None = None, *, trust_pickle: bool = False) -> SpikingNetwork:
    """Load a network written by ``save``, without running code from the file.

    ``trust_pickle=True`` also reads networks that ``save`` had to pickle and files of the old
    pickled format; unpickling runs code from the file, so only pass it for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such file")
    other = _other_kind(path)
    if other:
        raise ConversionError(f"{path} is {other}, not a network saved by ann2snn.save")
    payload = _read(path, map_location, trust_pickle)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ConversionError(f"{path} is not a network saved by ann2snn.save (no '{FORMAT}' header)")
    if payload.get("version") == PICKLED_VERSION and trust_pickle:
        return _network(payload.get("network"), path)
    if payload.get("version") != VERSION:
        raise ConversionError(f"{path} has format version {payload.get('version')!r}; this ann2snn reads version {VERSION}")
    if "pickled" in payload:
        if not trust_pickle:
            raise ConversionError(f"{path} holds a pickled network ({payload.get('reason')}); unpickling runs code from the file, so pass trust_pickle=True only if you trust it")
        return _network(torch.load(io.BytesIO(payload["pickled"].numpy().tobytes()), map_location=map_location, weights_only=False), path)
    try:
        return _network(safe_format.rebuild(payload["description"], payload["tensors"]), path)
    except (safe_format.DamagedDescription, KeyError) as error:
        raise ConversionError(f"{path} is damaged or not written by ann2snn.save: {error}") from error


def _other_kind(path: Path) -> str:
    """What the file at ``path`` is, when its first bytes show it is not a torch file ('' otherwise):
    said before torch reads it, whose errors would name its own internals (or suggest
    ``weights_only=False``, which runs code from the file)."""
    with path.open("rb") as file:
        head = file.read(512)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a NIR graph, as ann2snn.export_nir writes, is one: read it with nir.read)"
    if is_export_archive(path):
        return "a torch.export archive (.pt2): convert the program it holds (ann2snn convert FILE.pt2, or ann2snn.convert(torch.export.load(FILE).module())), then save the network"
    if zipfile.is_zipfile(path):
        return ""
    if not head:
        return "empty"
    if not head.startswith(b"\x80"):  # neither a zip (torch's format) nor a pickle (its legacy one)
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return "not a file torch writes"
        return "a text file"
    return ""


def _read(path: Path, map_location: Any, trust_pickle: bool) -> Any:
    """The file's top-level dict, read with ``weights_only=True`` (or unpickled when trusted)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if not holds_pickled_objects(path, error):
            raise ConversionError(f"{path} is not a network saved by ann2snn.save ({str(error).splitlines()[0]})") from error
        if not trust_pickle:
            raise ConversionError(
                f"{path} holds pickled Python objects (a network saved in the old format version 1, or another "
                "pickle); unpickling runs code from the file, so it is refused: if you trust the file, "
                "load(path, trust_pickle=True) and save it again"
            ) from error
    except Exception as error:
        raise ConversionError(f"{path} is not a network saved by ann2snn.save ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise ConversionError(f"{path} cannot be unpickled: {type(error).__name__}: {error}") from error


def holds_pickled_objects(path: Path, error: pickle.UnpicklingError) -> bool:
    """True when ``torch.load(path, weights_only=True)`` failed with ``error`` because the file holds
    pickled objects (a torch file naming classes, or a plain ``pickle.dump``), not because it is
    damaged or not a pickle at all."""
    if "unsupported global" in str(error).lower():  # torch words it "Unsupported global" or "unsupported GLOBAL ... is blocked"
        return True
    with path.open("rb") as file:
        head = file.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # the PROTO opcode that starts a pickle


def _network(network: Any, path: Path) -> SpikingNetwork:
    if not isinstance(network, SpikingNetwork):
        raise ConversionError(f"{path} holds a {type(network).__name__}, not a SpikingNetwork")
    return network
