"""Run the study (the same as ``ann2snn experiment``; ``--help`` lists presets and examples):
train CNNs, convert, measure zero-shot SNNs over T, retrain, train from scratch.

    python tools/experiment.py                      # built-in synthetic set, quick preset (< 3 min)
    python tools/experiment.py --preset fsdd --data-dir data/fsdd   # the README table, 3 seeds

The command itself is ``zoo.harness.experiment_cli``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ann2snn_zoo.harness.experiment_cli import build_parser, config_from, main, parse_args  # noqa: E402, F401 (tests import them from here)

if __name__ == "__main__":
    sys.exit(main())
