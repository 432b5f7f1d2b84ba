"""All-or-nothing file writes: write to a temporary name beside the target, then rename.

The temporary name is fixed per target (``.NAME.partial`` plus the target's suffix), so a write
killed midway leaves at most one such file, and the next write to the same target replaces it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def partial_path(path: Path) -> Path:
    """The temporary name of ``path`` in its folder, keeping its suffix (which picks some formats)."""
    return path.with_name(f".{path.name}.partial{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` only if the block
    finishes, and is removed otherwise, so a crash never leaves a half-written file, and a kill
    leaves one that the next write to ``path`` removes. The file is created normally (umask
    permissions), unlike ``tempfile.mkstemp``'s private files. A target that is a folder, or in a
    missing folder, is refused first, with an error that names it."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give the name of the file to write in it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist (create it first)")
    tmp = partial_path(path)
    tmp.unlink(missing_ok=True)  # left by a killed write
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
