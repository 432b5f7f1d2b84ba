"""The retraining harness: train a CNN, convert it, measure the SNN over T, fine-tune it."""

from ann2snn_zoo.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ann2snn_zoo.harness.evaluate import Metrics, evaluate, run_profile
from ann2snn_zoo.harness.experiment import ExperimentConfig, run_experiment
from ann2snn_zoo.harness.train import TrainConfig, fit

__all__ = [
    "CheckpointError", "ExperimentConfig", "Metrics", "TrainConfig", "evaluate", "fit", "run_profile",
    "load_checkpoint", "run_experiment", "save_checkpoint",
]  # fmt: skip
