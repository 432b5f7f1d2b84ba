"""Train one zoo model (and optionally fine-tune its SNN); also under torchrun.

python tools/train.py --model m5 --dataset fsdd --data-dir ../shared/data/fsdd --epochs 30
torchrun --nproc_per_node 2 tools/train.py --model m5 --epochs 5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ann2snn_zoo.harness.train_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
