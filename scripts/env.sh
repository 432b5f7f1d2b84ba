# Sourced by the other scripts: create .venv on first use, (re)install when the
# pinned requirements change, then activate it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
STAMP_NOW="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat .venv/.install-stamp 2>/dev/null || true)" != "$STAMP_NOW" ]; then
    echo "Installing ann2snn and its pinned dependencies into .venv (first run: a few minutes, about 5 GB) ..."
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[all,dev,docs]"
    echo "$STAMP_NOW" > .venv/.install-stamp
fi
# shellcheck disable=SC1091
source .venv/bin/activate
