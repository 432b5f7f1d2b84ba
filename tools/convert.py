#!/usr/bin/env python
"""Convert a trained CNN into a spiking network: ``python tools/convert.py model.pt -o snn.pt``.

A thin wrapper over ``ann2snn.cli`` (the ``ann2snn convert`` console script); see ``--help``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ann2snn.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
