"""Every input encoder retrains after conversion, and the harness fine-tunes each over a T grid."""

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import ann2snn
import ann2snn_zoo as zoo
from ann2snn_zoo.harness import ExperimentConfig, run_experiment
from ann2snn_zoo.harness.summary import encoder_table, study_table, write_outputs


@pytest.fixture(scope="module")
def data():
    """A tiny VGG on log-mel features, trained a little, and its two training batches. (On M5's
    raw waveform, rate coding at T <= 8 carries too little of the signal for a few steps to help:
    measured 2.04 -> 2.05 in 30 steps, so log-mel input it is.)"""
    splits = zoo.data.load_splits("synthetic", front_end=zoo.FrontEnd(kind="logmel"), n_per_class=4)
    batches = list(DataLoader(splits["train"], batch_size=20, shuffle=True, generator=torch.Generator().manual_seed(0)))[:2]
    torch.manual_seed(0)
    cnn = zoo.create("vgg", n_classes=10, widths=(4, 8), convs_per_stage=1)
    optimiser = torch.optim.AdamW(cnn.parameters(), lr=1e-2)
    for _, (x, y) in zip(range(40), itertools.cycle(batches)):
        optimiser.zero_grad()
        F.cross_entropy(cnn(x), y).backward()
        optimiser.step()
    return cnn.eval(), batches


def mean_loss(snn: torch.nn.Module, batches) -> float:
    with torch.no_grad():
        torch.manual_seed(1)  # the same rate-coded draws before and after
        return sum(F.cross_entropy(snn(x), y).item() for x, y in batches) / len(batches)


@pytest.mark.parametrize("encoder", ann2snn.encoders.ENCODERS)
def test_every_encoder_retrains(data, encoder):
    """Ten fine-tuning steps after conversion lower the loss on the training batches (measured:
    direct 2.33 -> 2.03, rate 2.61 -> 2.20, latency 2.55 -> 2.18)."""
    cnn, batches = data
    torch.manual_seed(0)
    snn = ann2snn.convert(cnn, T=2, learn_tau=False, tau=100.0, calibration=[x for x, _ in batches], encoder=encoder)
    before = mean_loss(snn, batches)
    optimiser = torch.optim.AdamW(snn.parameters(), lr=3e-3)
    snn.train()
    for _, (x, y) in zip(range(10), itertools.cycle(batches)):
        loss = F.cross_entropy(snn(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = mean_loss(snn, batches)
    assert after < before - 0.15, f"{encoder}: loss {before:.3f} -> {after:.3f} after fine-tuning"


@pytest.mark.slow  # 7 fine-tuning runs (about 6 s of CPU, 18 s on a busy machine)
def test_the_harness_retrains_every_encoder_over_the_T_grid(tmp_path):
    config = ExperimentConfig(
        dataset="synthetic", models=("m5",), out_dir=str(tmp_path / "run"), cnn_epochs=2, cnn_lr=1e-2, snn_epochs=1,
        from_scratch=False, zero_shot_T=(2,), lif_zero_shot_T=(2,), finetune_T=4, max_batches=3, calibration_batches=1,
        encoders=("direct", "rate", "latency"), retrain_encoders=("direct", "rate", "latency"), retrain_T=(2, 4),
        dataset_options={"n_per_class": 6}, model_options={"m5": {"n_channel": 4}}, progress=False, device="cpu", batch_size=20,
    )  # fmt: skip
    assert config.retrain_cells() == [("direct", 4, False), ("direct", 4, True), ("direct", 2, False), ("rate", 2, False), ("rate", 4, False), ("latency", 2, False), ("latency", 4, False)]
    rows = run_experiment(config, log=lambda _: None)
    retrained = {(r["encoder"], r["T"], r["learn_tau"]) for r in rows if r["kind"] == "retrained"}
    assert retrained == set(config.retrain_cells())
    shots = {(r["encoder"], r["T"]) for r in rows if r["kind"] == "zero-shot" and r["neuron"] == "IF"}
    assert {("rate", 2), ("rate", 4), ("latency", 2), ("latency", 4), ("direct", 2)} <= shots  # the comparison at each T
    histories = json_histories(Path(config.out_dir))
    assert {r["run"] for r in rows if r["kind"] == "retrained"} <= set(histories)
    table = encoder_table(rows)
    assert "| m5 | latency | retrained LIF |" in table and "T=2" in table and "T=4" in table
    assert "| m5 |" in study_table(rows, T=4, zero_shot_T=(2,))
    paths = write_outputs(rows, Path(config.out_dir), config.finetune_T, histories)
    assert "Input encoders" in paths["markdown"].read_text()


def json_histories(folder: Path) -> dict:
    from ann2snn_zoo.harness.experiment import load_histories

    return load_histories(folder)


def test_the_study_preset_retrains_every_encoder_at_the_study_T_grid():
    import sys

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "tools"))
    try:
        import experiment as cli
    finally:
        sys.path.remove(str(root / "tools"))
    config = cli.config_from(cli.parse_args(["--preset", "fsdd-study"]))
    assert config.zero_shot_T == (1, 5, 15, 30) and config.retrain_T == (1, 5, 15, 30)
    cells = config.retrain_cells()
    assert {(e, T) for e, T, _ in cells} == {(e, T) for e in ("direct", "rate", "latency") for T in (1, 5, 15, 30)}
    assert ("direct", 15, True) in cells  # learned tau beside fixed at the fine-tuning T
    loso = cli.config_from(cli.parse_args(["--preset", "fsdd-loso", "--retrain-T", "5", "15"]))
    assert loso.retrain_T == (5, 15) and loso.retrain_encoders == ("direct", "rate", "latency")
