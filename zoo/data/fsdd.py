"""The Free Spoken Digit Dataset (FSDD): 3,000 recordings of the digits 0-9 by 6 speakers, 8 kHz."""

import re
import shutil
import tarfile
import tempfile
import urllib.request
import warnings
from pathlib import Path

from ann2snn_zoo.data.base import Clip, FileDataset, holdout, require_dir
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.frontend import FrontEnd

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
LAYOUT = "a folder of {digit}_{speaker}_{index}.wav files (FSDD's recordings/) or the folder above it"
CLASSES = [str(d) for d in range(10)]
SPLITS = ("train", "val", "test", "all")
_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")


class FSDD(FileDataset):
    """FSDD from a local folder (see `download_fsdd`); items are (features, digit).

    Splits: the official one (take indices 0-4 are test, 5-49 train: 2,700 / 300 files) or, with
    `test_speaker`, all of that speaker's takes as test and the other speakers' as train.
    "val" is `val_fraction` of the training files (per digit, random by `seed`), removed from
    "train"; "all" is every file. `clips[i]` has the speaker and path of item i.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        test_speaker: str | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        front_end: FrontEnd | None = None,
        skip_bad: bool = False,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        recordings = find_recordings(root)
        takes = _takes(recordings)
        speakers = sorted({speaker for _, speaker, _, _ in takes})
        if test_speaker is not None and test_speaker not in speakers:
            raise DataError(f"test_speaker {test_speaker!r} not in {recordings} (speakers: {', '.join(speakers)})")
        clips = [Clip(label=digit, speaker=speaker, path=path) for digit, speaker, _, path in takes]
        if split != "all":
            if test_speaker is None:
                is_test = [index < 5 for _, _, index, _ in takes]
            else:
                is_test = [clip.speaker == test_speaker for clip in clips]
            clips = _select(clips, is_test, split, val_fraction, seed)
        super().__init__(clips, CLASSES, front_end, skip_bad)


def _select(clips: list[Clip], is_test: list[bool], split: str, val_fraction: float, seed: int) -> list[Clip]:
    if split == "test":
        return [clip for clip, test in zip(clips, is_test) if test]
    train = [clip for clip, test in zip(clips, is_test) if not test]
    kept, held = holdout([clip.label for clip in train], val_fraction, seed)
    return [train[i] for i in (kept if split == "train" else held)]


def how_to_get(root: str | Path) -> str:
    """The sentence that tells how to get FSDD into `root` (with `download_fsdd`)."""
    return f"to download FSDD there, run python -c \"import ann2snn_zoo; ann2snn_zoo.data.download_fsdd('{root}')\" (it writes the recordings/ folder; needs network access)"


def find_recordings(root: str | Path) -> Path:
    """The folder holding FSDD's WAV files: `root` itself or `root`/recordings."""
    try:
        root = require_dir(Path(root), LAYOUT)
    except DataError as error:
        raise DataError(f"{error}; {how_to_get(root)}") from None
    return root / "recordings" if (root / "recordings").is_dir() else root


def _takes(recordings: Path) -> list[tuple[int, str, int, Path]]:
    """(digit, speaker, index, path) of every recording; other WAV files are skipped with a warning."""
    takes, misnamed = [], []
    for path in sorted(recordings.iterdir()):
        match = _NAME.match(path.name)
        if match:
            takes.append((int(match[1]), match[2], int(match[3]), path))
        elif path.suffix.lower() == ".wav":
            misnamed.append(path.name)
    if not takes:
        root = recordings.parent if recordings.name == "recordings" else recordings
        raise DataError(f"no FSDD recordings in {recordings}; expected {LAYOUT}; {how_to_get(root)}")
    if misnamed:
        warnings.warn(
            f"skipped {len(misnamed)} WAV file(s) in {recordings} not named {{digit}}_{{speaker}}_{{index}}.wav, e.g. {misnamed[0]}; rename them to include them",
            stacklevel=3,
        )
    return takes


def download_fsdd(dest: str | Path, url: str = FSDD_URL, timeout_s: float = 10.0) -> Path:
    """Download and unpack FSDD's release archive; returns `dest`/recordings.

    Fails at once with DataError when offline (no retries; `timeout_s` bounds each network wait).
    """
    dest = Path(dest)
    target = dest / "recordings"
    if target.is_dir() and any(target.glob("*.wav")):
        return target
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "fsdd.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as e:  # URLError, timeouts and connection errors are all OSErrors
            raise DataError(
                f"could not download FSDD from {url} ({e}); are you offline? Fetch the archive some other way, unpack it, and pass the folder holding recordings/ as the data folder"
            ) from e
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.TarError as e:
            raise DataError(f"the download from {url} is not a readable tar archive: {e}") from e
        found = next(Path(tmp).glob("*/recordings"), None)
        if found is None:
            raise DataError(f"the archive from {url} has no recordings/ folder")
        shutil.move(str(found), target)
    return target
