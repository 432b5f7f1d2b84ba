"""The ``ann2snn convert`` command's output files: where they go, the checks before any work (no
output that is an input, another output or inside a data folder; an existing file replaced only
if ann2snn wrote it as that option's output, or with ``--overwrite``), and the writing itself:
each file staged beside its target and committed all or nothing, with a rollback on failure."""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Optional

from .cli_messages import CliError, _first_line
from .io import FORMAT, save
from .timeloop import SpikingNetwork


class Outputs:
    """The output files, checked before any work, each written into its own staging folder
    (``.NAME.partial/`` beside it, removed by the next run if a kill left it) and renamed into
    place only when all are ready: all of them, or (on a failure) none, with any file they
    replaced put back."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths  # option -> path
        self.staged: list[tuple[Path, Path]] = []
        self.kept: set[Path] = set()  # staging folders holding a replaced file that could not be put back

    @staticmethod
    def staging(path: Path) -> Path:
        return path.with_name(f".{path.name}.partial")

    def check(self) -> None:
        """Refuse folders, missing or read-only parent folders; remove staging left by a killed run."""
        for option, path in self.paths.items():
            if path.is_dir():
                raise CliError(f"{option} {path} is a folder: give a file name")
            if not path.parent.is_dir():
                raise CliError(f"{option} {path}: the folder {path.parent} does not exist")
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise CliError(f"{option} {path}: the folder {path.parent} is not writable")
            shutil.rmtree(self.staging(path), ignore_errors=True)

    def stage(self, option: str, write: Callable[[Path], None]) -> None:
        path = self.paths[option]
        folder = self.staging(path)
        try:
            folder.mkdir()
            self.staged.append((folder, path))
            write(folder / path.name)
        except OSError as error:
            raise CliError(f"{option} {path}: cannot write it: {_first_line(error)}") from error

    def commit(self) -> list[Path]:
        """Rename every staged file into place, after checking that each can be; on a failure,
        undo the renames already made (restoring the files they replaced) and raise CliError."""
        for folder, path in self.staged:
            if not (folder / path.name).is_file():
                raise CliError(f"{path} was not written (nothing was put in place)")
            if path.is_dir():
                raise CliError(f"{path} is now a folder: give a file name (nothing was put in place)")
        placed: list[tuple[Path, Optional[Path], bool]] = []  # (path, where the file it replaced went, renamed in)
        try:
            for folder, path in self.staged:
                backup = folder / ".replaced" if path.exists() or path.is_symlink() else None
                if backup is not None:
                    self._place(path, backup)
                placed.append((path, backup, False))
                self._place(folder / path.name, path)
                placed[-1] = (path, backup, True)
        except OSError as error:
            raise CliError(f"cannot put the outputs in place ({_first_line(error)}): {self._roll_back(placed)}") from error
        return [path for _, path in self.staged]

    @staticmethod
    def _place(source: Path, target: Path) -> None:
        os.replace(source, target)

    def _roll_back(self, placed: list[tuple[Path, Optional[Path], bool]]) -> str:
        """Remove what this run renamed in and put back what it replaced; say what could not be undone."""
        left = []
        for path, backup, renamed in reversed(placed):
            try:
                if renamed:
                    path.unlink()
                if backup is not None:
                    os.replace(backup, path)
            except OSError:
                left.append(f"{path} (its previous content is in {backup})" if backup is not None else str(path))
                if backup is not None:
                    self.kept.add(backup.parent)
        return "nothing was changed" if not left else "could not undo " + ", ".join(left)

    def discard(self) -> None:
        for folder, _ in self.staged:
            if folder not in self.kept:
                shutil.rmtree(folder, ignore_errors=True)


#: What ``ann2snn.save`` warns after the path when it has to pickle a network; the reason follows.
_PICKLED = "saved as a pickle, which ann2snn.load reads only with trust_pickle=True: "


def save_network(snn: SpikingNetwork, staged: Path, final: Path) -> list[str]:
    """Write ``snn`` to ``staged`` (renamed to ``final`` later) with ``ann2snn.save``, and return its
    warnings as the command's lines about ``final``: a network saved as a pickle says why and how
    to load it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save(snn, staged)
    notes = []
    for warning in caught:
        text = str(warning.message).replace(str(staged), str(final))
        _, pickled, reason = text.partition(_PICKLED)
        notes.append(
            f"{final} is saved as a pickle, because the safe format cannot describe the network ({reason}); "
            f"loading it runs code from the file, so it needs ann2snn.load({str(final)!r}, trust_pickle=True)"
            if pickled
            else text
        )
    return notes


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path after symlinks, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse an output that is the same file as an input or another output (it would destroy it)."""
    pairs = [(a, b) for a in inputs.items() for b in outputs.items()] + list(itertools.combinations(outputs.items(), 2))
    for (a, path_a), (b, path_b) in pairs:
        if _same_file(path_a, path_b):
            raise CliError(f"{b} {path_b} is the same file as {a} {path_a}: give every output its own path")


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path``, symlinks resolved, lies in ``folder`` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def check_outside_data(folders: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse an output inside a data folder the command reads (it would change the data set)."""
    for (option, path), (data_option, folder) in itertools.product(outputs.items(), folders.items()):
        if _inside(path, folder):
            raise CliError(f"{option} {path} is inside the data folder {folder} of {data_option}: outputs never go into input data; write it elsewhere")


def is_saved_network(path: Path) -> bool:
    """True when ``path`` is a file ``ann2snn.save`` wrote (its pickle, read as bytes and not
    unpickled, names the format); False for anything else, a training checkpoint say."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return name is not None and FORMAT.encode() in archive.read(name)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False


#: The first line of ``ConversionReport.to_markdown``: what a report the command wrote starts with.
_REPORT_HEADER = b"| node | before | after | threshold | source |\n"


def is_written_report(path: Path) -> bool:
    """True when ``path`` is a markdown report the command wrote (it starts with the report's table header)."""
    try:
        with path.open("rb") as file:
            return file.read(len(_REPORT_HEADER)) == _REPORT_HEADER
    except OSError:
        return False


def is_written_nir(path: Path) -> bool:
    """True when ``path`` is a NIR graph ``ann2snn.export_nir`` wrote (graph metadata ``producer = ann2snn``)."""
    try:
        import h5py

        with h5py.File(path, "r") as file:
            producer = file["node/metadata/producer"][()]
        return producer in (b"ann2snn", "ann2snn")
    except Exception:  # not HDF5, no such entry, h5py missing: not ours
        return False


def is_written_drawing(path: Path) -> bool:
    """True when ``path`` is a drawing ``ann2snn.draw`` wrote (its metadata names it)."""
    from .draw import is_drawing

    return is_drawing(path)


#: option -> (what it writes, the test that an existing file is one that ann2snn wrote).
_OWN_FILES: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "-o": ("a network written by ann2snn.save (a training checkpoint, or another file)", is_saved_network),
    "--report": ("a report written by ann2snn", is_written_report),
    "--nir": ("a NIR graph written by ann2snn", is_written_nir),
    "--draw": ("a drawing marked as written by ann2snn (ann2snn before this release did not mark its drawings)", is_written_drawing),
}


def check_replaceable(option: str, path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing ``path`` that ann2snn did not write as that option's output
    (the fine-tuned SNN checkpoint of a training run, another program's file) unless ``overwrite``."""
    what, ours = _OWN_FILES[option]
    if overwrite or not (path.exists() or path.is_symlink()) or ours(path):
        return
    raise CliError(f"{option} {path} exists and is not {what}: it was left untouched; pass another {option}, or --overwrite to replace it")


#: Drawing formats: the suffix of ``--draw`` picks one.
DRAW_FORMATS = (".png", ".pdf", ".svg")


def check_draw_path(path: Path) -> None:
    """Refuse a ``--draw`` name whose suffix is not a format the drawing is written in, and a missing matplotlib."""
    if path.suffix.lower() not in DRAW_FORMATS:
        said = "has no suffix" if not path.suffix else f"has the suffix {path.suffix}, not an image format"
        raise CliError(f"--draw {path} {said}: give a name ending in {', '.join(DRAW_FORMATS[:-1])} or {DRAW_FORMATS[-1]} (the suffix picks the format)")
    if importlib.util.find_spec("matplotlib") is None:
        raise CliError(f"--draw {path} needs matplotlib, which is not installed: pip install 'ann2snn[plot]'")


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The requested output files by option (``-o`` defaults to MODEL with suffix .snn.pt)."""
    paths = {"-o": args.output or args.model.with_suffix(".snn.pt")}
    paths.update({f"--{name}": getattr(args, name) for name in ("report", "nir", "draw") if getattr(args, name)})
    return paths
