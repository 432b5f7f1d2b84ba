"""A missing or empty FSDD folder names the way to get the data: zoo.data.download_fsdd."""

import re

import pytest

from ann2snn_zoo.data import FSDD, load_splits
from ann2snn_zoo.errors import DataError


def test_missing_folder_names_download_fsdd(tmp_path):
    folder = tmp_path / "fsdd"
    with pytest.raises(DataError, match=re.escape(f"zoo.data.download_fsdd('{folder}')")):
        load_splits("fsdd", folder, cached=False)


def test_empty_folder_names_download_fsdd_for_the_folder_above_recordings(tmp_path):
    (tmp_path / "recordings").mkdir()
    with pytest.raises(DataError, match=re.escape(f"zoo.data.download_fsdd('{tmp_path}')")):
        FSDD(tmp_path, split="all")
