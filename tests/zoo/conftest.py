"""Fixtures of the zoo tests: the shared FSDD folder."""

import os
from pathlib import Path

import pytest

# tests/zoo/conftest.py -> repository root -> ../shared/data/fsdd
FSDD_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fsdd").resolve()


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def fsdd_dir() -> Path:
    """The shared FSDD copy; skipped when missing, except under CI=true where that fails."""
    if not (FSDD_DIR / "recordings").is_dir():
        if on_ci():
            pytest.fail(f"FSDD not found at {FSDD_DIR}; under CI=true the FSDD tests must run")
        pytest.skip(f"FSDD not found at {FSDD_DIR}")
    return FSDD_DIR
