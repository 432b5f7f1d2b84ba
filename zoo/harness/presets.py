"""Experiment presets of issue 10 (the study as it was meant), beside ``tools/experiment.py``'s own.

- ``fsdd-loso``: FSDD leave-one-speaker-out cross-validation (6 folds, one per speaker), the
  harder benchmark: the official split's test speakers are training speakers too.
"""

from __future__ import annotations

from typing import Any

#: CNN recipes shared by the FSDD presets (as tools/experiment.py's ``fsdd`` preset).
_FSDD_CNN = dict(
    cnn_epochs=20, augment={"m5": {"shift_s": 0.1}}, cnn_training={"m5": {"epochs": 60, "patience": 15}},
)

STUDY_PRESETS: dict[str, dict[str, Any]] = {
    # FSDD leave-one-speaker-out: 6 folds, one seed; the README's harder table.
    "fsdd-loso": dict(
        dataset="fsdd", cross_validation="speaker", models=("m5", "vgg", "resnet"), seeds=(0,), **_FSDD_CNN,
        snn_epochs=1, finetune_T=15, zero_shot_T=(5, 15, 30), lif_zero_shot_T=(15,), encoders=("direct",),
        scratch_epochs=None, out_dir="runs/fsdd-loso",
    ),
}
