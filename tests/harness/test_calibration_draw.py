"""The harness calibrates on a seeded random draw of training examples, not the first batches
(FSDD's training split is stored class by class: its first 512 clips hold digits 0, 1 and 2
only), and the draw does not depend on the global RNG state (augmentation included)."""

import torch

from ann2snn_zoo.harness.experiment import Experiment, ExperimentConfig


def _draw(tmp_path, augment: dict) -> tuple[Experiment, torch.Tensor]:
    config = ExperimentConfig(dataset="synthetic", out_dir=str(tmp_path), calibration_batches=2, batch_size=16, augment=augment)
    experiment = Experiment(config, log=lambda _: None)
    return experiment, torch.cat(experiment.calibration("m5"))


def test_calibration_examples_are_a_random_draw_not_the_first_ones(tmp_path):
    experiment, drawn = _draw(tmp_path, {})
    train = experiment.splits("m5")["train"]
    clips = torch.stack([train[i][0] for i in range(len(train))]).flatten(1)
    indices = [int(torch.nonzero((clips == x).all(1))[0]) for x in drawn.flatten(1)]
    assert len(set(indices)) == 32 and indices != list(range(32)) and max(indices) >= 32


def test_calibration_draw_is_reproducible_whatever_ran_before(tmp_path):
    experiment, drawn = _draw(tmp_path, {"m5": {"shift_s": 0.05}})
    experiment._calibration.clear()
    torch.manual_seed(1234)
    torch.rand(10)
    assert torch.equal(torch.cat(experiment.calibration("m5")), drawn)
