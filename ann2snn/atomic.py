"""All-or-nothing file writes: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def partial_path(path: Path) -> Path:
    """A fresh temporary name in ``path``'s folder, keeping its suffix (which picks some formats)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` only if the block
    finishes, and is removed otherwise, so a crash or kill never leaves a half-written file. The
    file is created normally (umask permissions), unlike ``tempfile.mkstemp``'s private files."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
