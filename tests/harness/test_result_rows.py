"""The numbers in the experiment's result rows are what they say: each zero-shot SNN row is
recomputed here from the CNN checkpoint the run saved (rebuilt from the checkpoint's model name
and options, converted with the run's settings, evaluated by a loop written here, not by the
harness's ``evaluate``) and must match the row in ``results.jsonl``: top-1 exactly, loss closely."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import ann2snn
import ann2snn_zoo as zoo
from ann2snn_zoo.harness.experiment import CALIBRATION_SEED, Experiment, ExperimentConfig


@torch.no_grad()
def accuracy_and_loss(model: torch.nn.Module, dataset) -> tuple[float, float]:
    model.eval()
    examples = [dataset[k] for k in range(len(dataset))]
    x, y = torch.stack([x for x, _ in examples]), torch.tensor([int(y) for _, y in examples])
    logits = torch.cat([model(chunk) for chunk in x.split(50)])  # not the harness's batch size
    return 100 * int((logits.argmax(1) == y).sum()) / len(y), F.cross_entropy(logits, y).item()


@pytest.mark.slow
def test_zero_shot_rows_hold_the_accuracy_of_the_snn_converted_from_the_saved_cnn(tmp_path):
    config = ExperimentConfig(
        dataset="synthetic", models=("m5",), seeds=(0,), out_dir=str(tmp_path / "run"), cnn_epochs=4, cnn_lr=2e-2, batch_size=32,
        zero_shot_T=(2,), finetune_T=4, encoders=("direct", "latency"), calibration_batches=2,
        model_options={"m5": {"n_channel": 8}}, dataset_options={"n_per_class": 30}, progress=False, device="cpu",
    )  # fmt: skip
    experiment = Experiment(config, log=lambda _: None)
    cnn_from_run, _ = experiment.train_cnn("m5", 0)
    experiment.zero_shot(cnn_from_run, "m5", 0)
    del experiment, cnn_from_run

    rows = [json.loads(line) for line in (Path(config.out_dir) / "results.jsonl").read_text().splitlines()]
    zero_shot = [r for r in rows if r["kind"] == "zero-shot"]
    assert {(r["neuron"], r["encoder"], r["T"]) for r in zero_shot} == {("IF", "direct", 2), ("IF", "latency", 4), ("LIF", "direct", 2)}

    # The CNN as saved: rebuilt from the checkpoint alone, with its best epoch's weights.
    state = torch.load(Path(config.out_dir) / "checkpoints" / "cnn-m5-s0.pt", weights_only=True)
    assert state["finished"]
    cnn = zoo.create(state["model"], **state["config"])
    cnn.load_state_dict(state["best_state_dict"])
    cnn.eval()

    # The data and calibration examples as documented: the splits of seed 0, and calibration_batches
    # batches of a seeded shuffle of the training split.
    front_end = zoo.FrontEnd(kind="waveform", sample_rate=zoo.data.dataset("synthetic").sample_rate)
    splits = zoo.data.load_splits("synthetic", front_end=front_end, seed=0, n_per_class=30)
    torch.manual_seed(CALIBRATION_SEED)
    loader = DataLoader(splits["train"], batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(CALIBRATION_SEED))
    calibration = [x for (x, _), _ in zip(loader, range(config.calibration_batches))]

    cnn_top1, cnn_loss = accuracy_and_loss(cnn, splits["test"])
    (cnn_row,) = [r for r in rows if r["kind"] == "cnn"]
    assert cnn_row["top1"] == pytest.approx(cnn_top1, abs=1e-9) and cnn_row["loss"] == pytest.approx(cnn_loss, rel=1e-4)

    for row in zero_shot:
        tau = math.inf if row["neuron"] == "IF" else config.lif_tau
        snn = ann2snn.convert(
            cnn, T=row["T"], calibration=calibration, percentile=config.percentile, per_channel=config.per_channel,
            learn_tau=False, tau=tau, encoder=row["encoder"],
        )  # fmt: skip
        top1, loss = accuracy_and_loss(snn, splits["test"])
        where = f"{row['neuron']} {row['encoder']} T={row['T']}"
        assert abs(loss - cnn_loss) > 1e-3, f"{where}: the SNN's loss equals the CNN's, so this row cannot tell them apart"
        assert row["top1"] == pytest.approx(top1, abs=1e-9), f"{where}: row top-1 {row['top1']} != recomputed {top1}"
        assert row["loss"] == pytest.approx(loss, rel=1e-4), f"{where}: row loss {row['loss']} != recomputed {loss}"
