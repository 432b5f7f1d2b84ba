"""The documentation site: every page in mkdocs.yml's nav exists, every page is in the nav, and
the Python snippets of each page run, in order, as one script (a page's later blocks use what the
earlier ones defined). A block preceded by the line ``<!-- not run -->`` is skipped (it needs a
data set download or hours of training); those are checked by hand.

The site itself is built with ``mkdocs build --strict`` in ``.ci/run``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- not run -->"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.M | re.S)


def nav_pages() -> list[str]:
    """Markdown files named in mkdocs.yml's nav (read as text: no YAML dependency)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:") :]
    return re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M)


def python_blocks(page: Path) -> list[str]:
    """The page's ```python blocks, without those marked ``<!-- not run -->``."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip().splitlines()
        if before and before[-1].strip() == SKIP_MARK:
            continue
        blocks.append(match.group(1))
    return blocks


def test_nav_and_pages_agree():
    listed = nav_pages()
    assert listed, "no pages found in mkdocs.yml's nav"
    missing = [page for page in listed if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml names pages that do not exist: {missing}"
    unlisted = sorted(p.name for p in DOCS.glob("*.md") if p.name not in listed)
    assert not unlisted, f"pages not in mkdocs.yml's nav (add them, or mkdocs warns): {unlisted}"


def test_readme_links_to_docs_exist():
    for target in re.findall(r"\]\((docs/[^)#\s]+)", (ROOT / "README.md").read_text()):
        assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


PAGES = sorted(p.name for p in DOCS.glob("*.md") if python_blocks(p))


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_snippets_run(page, tmp_path):
    """The page's snippets as one script, in an empty folder, on one thread."""
    script = "\n\n".join(python_blocks(DOCS / page))
    (tmp_path / "snippets.py").write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "snippets.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{page}: the snippets failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
