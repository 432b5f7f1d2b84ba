"""The retraining harness end to end (tiny runs), presets, corrupt checkpoints, time-constant
learning rates. Resume and DDP have their own, stronger tests: test_resume.py, test_ddp.py."""

import os
import sys
from pathlib import Path

import pytest
import torch

import ann2snn_zoo as zoo
from ann2snn_zoo.harness import CheckpointError, ExperimentConfig, TrainConfig, fit, run_experiment
from ann2snn_zoo.harness.summary import write_outputs

ROOT = Path(__file__).resolve().parents[2]
FSDD = ROOT.parent / "shared" / "data" / "fsdd"


def tiny_config(tmp_path: Path, **overrides) -> ExperimentConfig:
    settings = dict(
        dataset="synthetic", models=("m5",), seeds=(0,), out_dir=str(tmp_path / "run"), cnn_epochs=4, cnn_lr=1e-2,
        snn_epochs=1, scratch_epochs=1, zero_shot_T=(2, 8), finetune_T=4, max_batches=12, encoders=("direct", "rate", "latency"),
        calibration_batches=2, model_options={"m5": {"n_channel": 8}}, progress=False, device="cpu",
    )  # fmt: skip
    settings.update(overrides)
    return ExperimentConfig(**settings)


def check_run(config: ExperimentConfig, n_classes: int) -> list[dict]:
    rows = run_experiment(config, log=lambda _: None)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"cnn", "zero-shot", "retrained", "scratch"}
    (cnn,) = [r for r in rows if r["kind"] == "cnn"]
    assert cnn["top1"] > 2 * 100 / n_classes, "the CNN did not learn above chance"
    assert {r["encoder"] for r in rows if r["kind"] == "zero-shot"} == set(config.encoders)
    assert {r["learn_tau"] for r in rows if r["kind"] == "retrained"} == {False, True}
    paths = write_outputs(rows, Path(config.out_dir), config.finetune_T)
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert "| m5 |" in paths["markdown"].read_text()
    return rows


def test_tiny_experiment_on_synthetic_data(tmp_path):
    rows = check_run(tiny_config(tmp_path, cnn_training={"m5": {"epochs": 3}}), n_classes=10)
    (cnn,) = [r for r in rows if r["kind"] == "cnn"]
    assert cnn["epochs"] == 3  # the per-model CNN recipe overrides cnn_epochs=4


def test_presets_take_command_line_overrides():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import experiment as cli
    finally:
        sys.path.remove(str(ROOT / "tools"))
    table = cli.config_from(cli.parse_args(["--preset", "fsdd", "--data-dir", "data"]))
    assert table.models == ("m5", "vgg", "resnet") and table.seeds == (0, 1, 2) and table.zero_shot_T == (8, 25, 64)
    assert table.cnn_training["m5"] == {"epochs": 60, "patience": 15} and table.augment == {"m5": {"shift_s": 0.1}}
    quick = cli.config_from(cli.parse_args(["--preset", "fsdd", "--cnn-epochs", "5", "--augment-shift", "0", "--seeds", "3"]))
    assert quick.cnn_epochs == 5 and quick.cnn_training["m5"] == {"patience": 15} and quick.augment == {} and quick.seeds == (3,)


def test_tiny_experiment_on_an_fsdd_subset(tmp_path):
    if not FSDD.is_dir() and os.environ.get("CI") != "true":
        pytest.skip(f"FSDD not found at {FSDD}")
    config = tiny_config(tmp_path, dataset="fsdd", data_dir=str(FSDD), cnn_epochs=3, max_batches=10, zero_shot_T=(4,), encoders=("direct",))
    check_run(config, n_classes=10)


def test_rerun_skips_finished_cells(tmp_path):
    config = tiny_config(tmp_path, cnn_epochs=2, from_scratch=False, encoders=("direct",))
    first = run_experiment(config, log=lambda _: None)
    lines = (Path(config.out_dir) / "results.jsonl").read_text().splitlines()
    messages = []
    second = run_experiment(config, log=messages.append)
    assert (Path(config.out_dir) / "results.jsonl").read_text().splitlines() == lines
    assert [r["top1"] for r in first] == [r["top1"] for r in second]
    assert not any("epoch" in m for m in messages), "a finished run was trained again"


def small_training(tmp_path: Path):
    splits = zoo.data.load_splits("synthetic", front_end=zoo.FrontEnd(kind="waveform"), n_per_class=12)
    config = TrainConfig(epochs=3, lr=1e-2, batch_size=32, seed=3, progress=False)

    def model():
        torch.manual_seed(0)
        return zoo.create("m5", n_classes=10, n_channel=4)

    return splits, config, model


def test_corrupt_checkpoint_is_refused_and_left_alone(tmp_path):
    splits, config, model = small_training(tmp_path)
    checkpoint = tmp_path / "ck.pt"
    checkpoint.write_bytes(b"\x80\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        fit(model(), splits["train"], splits["val"], config, checkpoint, resume=True, log=lambda _: None)
    assert checkpoint.read_bytes() == b"\x80\x04 not a checkpoint"


def test_time_constants_get_their_own_learning_rate():
    from ann2snn_zoo.harness.train import parameter_groups

    import ann2snn

    snn = ann2snn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)), T=4, learn_tau=True, input_shape=(3,))
    (single,) = parameter_groups(snn, TrainConfig(lr=1e-3))
    assert len(single["params"]) == len(list(snn.parameters()))
    weights, taus = parameter_groups(snn, TrainConfig(lr=1e-3, tau_lr_scale=100.0))
    assert taus["lr"] == pytest.approx(0.1) and weights["lr"] == 1e-3
    assert len(taus["params"]) == 1 and len(weights["params"]) == len(list(snn.parameters())) - 1


def test_time_constants_come_from_the_network_where_it_names_them():
    from ann2snn_zoo.harness.train import parameter_groups, time_constants

    class Named(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.leak = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.zeros(2))

        def time_constants(self):
            return [self.leak]

    net = Named()
    assert time_constants(net) == [net.leak]
    weights, taus = parameter_groups(net, TrainConfig(lr=1e-3, tau_lr_scale=10.0))
    assert weights["params"] == [net.weight] and taus["params"] == [net.leak]
    net.time_constants = lambda: [torch.zeros(1)]
    with pytest.raises(TypeError, match="must return parameters"):
        time_constants(net)
