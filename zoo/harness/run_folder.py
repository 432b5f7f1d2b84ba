"""An experiment folder's bookkeeping: one run at a time (a lock), the settings its results were
measured with (``config.json``), and files that a kill never leaves unreadable."""

from __future__ import annotations

import fcntl
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ann2snn.atomic import atomic_path

LOCK_NAME = ".lock"
# Settings that change no result: where the folder is, the device, progress bars.
NEUTRAL = frozenset({"out_dir", "device", "progress"})
# Settings that only choose which cells run (a cell's result does not depend on them; its id
# names its model, seed, T, encoder and tau), so a rerun may add cells: more seeds, models, time
# steps, encoders measured zero-shot or retrained after conversion (``retrain_encoders`` x
# ``retrain_T``), or the from-scratch SNN.
SCOPE = frozenset(
    {
        "models",
        "seeds",
        "zero_shot_T",
        "lif_zero_shot_T",
        "encoders",
        "from_scratch",
        "retrain_encoders",
        "retrain_T",
    }
)


class RunFolderError(Exception):
    """An experiment folder cannot be used as asked; the message names it and the way out."""


class SettingsError(RunFolderError):
    """A setting an experiment cannot run with (a device, a seed, an --out inside the data set);
    the message names it and the way out. A RunFolderError, so every caller that reports those on
    one line reports these too."""


#: What an experiment folder holds before its run writes config.json (a run killed at its start).
_STARTED = frozenset({LOCK_NAME, "checkpoints"})


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved: links, ``..``)."""
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def check_path_given(path: str | Path | None, flag: str, what: str) -> None:
    """SettingsError if ``path`` is an empty string, which ``Path`` would silently read as the
    working folder; ``flag`` and ``what`` (what to give instead) name it in the message."""
    if path is not None and not str(path).strip():
        raise SettingsError(f"{flag} is empty: give {what}")


def check_data_dir(data_dir: str | Path | None) -> None:
    """SettingsError if ``data_dir`` is empty or names a file: a data set is a folder."""
    check_path_given(data_dir, "--data-dir", "the data set's folder")
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise SettingsError(f"--data-dir {data_dir} is a file, not a folder; pass the data set's folder (FSDD: the folder holding recordings/, or recordings/ itself)")


def check_out_folder(out: Path, data_dir: str | Path | None = None, is_config: Any = None) -> None:
    """Refuse (SettingsError, RunFolderError) an output folder before anything is written: a file
    in its place, a folder inside (or equal to) the data set's ``data_dir``, or a folder that holds
    files but no config.json that ``is_config`` (a predicate on its content) accepts: another
    tool's folder (lowt.py's writes results.jsonl too), a merged table, anything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SettingsError(f"--out {out} is a file, not a folder; pass a folder for the results (a new one, or an experiment's to resume it)")
    if data_dir is not None and _inside(out, Path(data_dir)):
        raise SettingsError(f"--out {out} is inside the data set folder --data-dir {data_dir}; pass an --out outside it (e.g. runs/<name>): a run writes checkpoints, caches and plots there")
    if not out.is_dir() or is_config is None:
        return
    stored = read_json(out / "config.json")
    if stored is not None and not is_config(stored):
        raise RunFolderError(f"{out}/config.json is not an experiment's settings (another tool's folder?); pass a new --out")
    if stored is None:
        extra = sorted(p.name for p in out.iterdir() if p.name not in _STARTED or (p.is_dir() and any(p.iterdir())))
        if extra:
            shown = ", ".join(extra[:4]) + (", ..." if len(extra) > 4 else "")
            raise RunFolderError(f"{out} holds files ({shown}) but no config.json of an experiment run (a lowt.py folder, a merged table?); pass a new --out")


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder``/.lock (holding this process's pid) for the block.
    The kernel releases it when the process dies, so a killed run never blocks the next one."""
    with (folder / LOCK_NAME).open("a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            raise RunFolderError(f"{folder} is in use by another run (pid {pid}); wait for it to finish, or pass another --out") from None
        f.truncate(0)
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield


#: Settings that name a folder: equal when they resolve to the same one ("fsdd" and its absolute path).
PATHS = frozenset({"data_dir"})


def same_setting(key: str, a: Any, b: Any) -> bool:
    """Whether setting ``key`` has the same value in ``a`` and ``b`` (folders in PATHS compared
    resolved from the working directory, so a relative and an absolute path to one folder match)."""
    if a == b:
        return True
    if key in PATHS and isinstance(a, str) and isinstance(b, str):
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return False


def changed_settings(stored: dict[str, Any], settings: dict[str, Any], defaults: dict[str, Any], ignore: frozenset[str] = frozenset()) -> list[str]:
    """``"key: stored -> new"`` for every setting that changes results (all but NEUTRAL, SCOPE and
    ``ignore``) and differs between ``stored`` and ``settings``; a key missing counts as its default."""
    stored, settings, defaults = _plain(stored), _plain(settings), _plain(defaults)
    return [
        f"{key}: {json.dumps(stored.get(key, defaults.get(key)))} -> {json.dumps(settings.get(key, defaults.get(key)))}"
        for key in dict.fromkeys([*settings, *stored])
        if key not in NEUTRAL | SCOPE | ignore and not same_setting(key, stored.get(key, defaults.get(key)), settings.get(key, defaults.get(key)))
    ]


def check_settings(folder: Path, settings: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Refuse ``folder`` if its config.json records other settings that change results (all but
    NEUTRAL and SCOPE); a setting missing from an older config.json counts as its default."""
    stored = read_json(folder / "config.json")
    if stored is None:
        return
    changed = changed_settings(stored, settings, defaults)
    if changed:
        raise RunFolderError(f"{folder} holds results measured with other settings ({'; '.join(changed)}); rerun with the folder's settings to resume it, or pass a new --out to run these settings")


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples become lists), for comparing with a stored config."""
    return json.loads(json.dumps(value))


def read_json(path: Path) -> Any:
    """The content of JSON file ``path`` (None if there is none); RunFolderError if unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); restore it from a copy or delete it") from None


def write_json(path: Path, content: Any) -> None:
    """Write ``content`` to ``path`` all or nothing (a kill leaves the previous file intact)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1))


def read_rows(path: Path, repair: bool = True) -> list[dict[str, Any]]:
    """The rows of JSON-lines file ``path`` ([] if there is none). A torn last line (a run killed
    while appending it) is dropped with a warning and, with ``repair``, the file is rewritten
    atomically without it; a bad line before the last is a RunFolderError."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number < len(lines):
                raise RunFolderError(f"{path} line {number} is not JSON ({error}); repair or delete that line") from None
            warnings.warn(f"{path}: dropped a torn last line (a run was killed while writing it); its cell runs again", stacklevel=2)
            lines.pop()
    if repair and "".join(line + "\n" for line in lines) != text:
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines))
    return rows
