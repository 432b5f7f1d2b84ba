"""Experiment presets of issue 10 (the study as it was meant), beside ``tools/experiment.py``'s own.

- ``fsdd-loso``: FSDD leave-one-speaker-out cross-validation (6 folds, one per speaker), the
  harder benchmark: the official split's test speakers are training speakers too. Zero-shot at
  T = 5, 15, 30; retrained at T = 15 with direct, rate and latency input (fixed tau) and with a
  learned tau; from scratch at T = 15 on the CNN's whole recipe (epochs, patience, schedule).
- ``fsdd-study``: the study's grid on the official split: T in {1, 5, 15, 30}, every encoder
  measured zero-shot and retrained after conversion at every T.

Both run the zoo's models and the study's (``zoo.names("study")``: its M5, Piczak and small
CNN at 4 kHz, and our M5 at 4 kHz).
"""

from __future__ import annotations

from typing import Any

#: CNN recipes shared by the FSDD presets (as tools/experiment.py's ``fsdd`` preset).
_FSDD_CNN = dict(
    cnn_epochs=20, augment={"m5": {"shift_s": 0.1}}, cnn_training={"m5": {"epochs": 60, "patience": 15}},
)

#: The study's time steps (Eve-ning/snn_voice) and input encoders ("repeat" there is "direct" here).
STUDY_T = (1, 5, 15, 30)
STUDY_ENCODERS = ("direct", "rate", "latency")
#: Every model the issue's table asks for: the zoo's and the study's (at 4 kHz, as it ran them).
TABLE_MODELS = ("m5", "vgg", "resnet", "study_m5", "study_piczak", "study_hjh", "m5_4k")

STUDY_PRESETS: dict[str, dict[str, Any]] = {
    # FSDD leave-one-speaker-out: 6 folds, one seed; the README's harder table.
    "fsdd-loso": dict(
        dataset="fsdd", cross_validation="speaker", models=TABLE_MODELS, seeds=(0,), **_FSDD_CNN,
        snn_epochs=1, finetune_T=15, zero_shot_T=(5, 15, 30), lif_zero_shot_T=(15,), encoders=STUDY_ENCODERS,
        retrain_encoders=STUDY_ENCODERS, retrain_T=(15,), scratch_epochs=None, out_dir="runs/fsdd-loso",
    ),
    # The study's T grid and encoders, each retrained after conversion, on the official split.
    "fsdd-study": dict(
        dataset="fsdd", models=TABLE_MODELS, seeds=(0,), **_FSDD_CNN,
        snn_epochs=1, finetune_T=15, zero_shot_T=STUDY_T, lif_zero_shot_T=(15,), encoders=STUDY_ENCODERS,
        retrain_encoders=STUDY_ENCODERS, retrain_T=STUDY_T, scratch_epochs=None, out_dir="runs/fsdd-study",
    ),
}
