"""Training curves side by side (zoo.harness.curves): history names parsed, one PNG per model."""

import math

import pytest

from ann2snn_zoo.harness.curves import SERIES, Run, curve_models, curve_title, parse_run, plot_all_curves, plot_model_curves
from ann2snn_zoo.harness.summary import write_outputs


@pytest.mark.parametrize(
    ("name", "run"),
    [
        ("cnn-m5-s0", Run("cnn", "m5", 0)),
        ("scratch-bn-study_m5-s2", Run("scratch", "study_m5", 2)),
        ("scratch-m5_4k-s0", Run("scratch-converted", "m5_4k", 0)),
        ("snn-vgg-s1-learn_tau=1", Run("retrained", "vgg", 1, learn_tau=True)),
        ("fold-theo/snn-m5-s0-rate-T15-learn_tau=0", Run("retrained", "m5", 0, "fold-theo", "rate", 15)),
        ("something-else", None),
    ],
)
def test_history_names(name, run):
    assert parse_run(name) == run


def history(epochs: int, seconds: float, start: float, rate: float) -> list[dict]:
    """A made-up learning curve: accuracy rising from ``start`` at ``rate`` per epoch."""
    return [
        dict(epoch=e, seconds=seconds, train_loss=2.3 * math.exp(-rate * e), val_loss=2.3 * math.exp(-rate * e) + 0.05, val_top1=min(99.0, start + 100 * (1 - math.exp(-rate * e))))
        for e in range(1, epochs + 1)
    ]  # fmt: skip


def made_up_histories() -> dict[str, list[dict]]:
    histories = {}
    for k, fold in enumerate(("fold-george/", "fold-theo/")):
        histories[f"{fold}cnn-m5-s0"] = history(12 - k, 4.0, 10, 0.4)
        histories[f"{fold}scratch-bn-m5-s0"] = history(10, 55.0, 10, 0.3 - 0.05 * k)
        histories[f"{fold}snn-m5-s0-learn_tau=0"] = history(2, 30.0, 90, 0.5)
        histories[f"{fold}snn-m5-s0-learn_tau=1"] = history(2, 32.0, 89, 0.5)
        histories[f"{fold}snn-m5-s0-rate-T15-learn_tau=0"] = history(1, 30.0, 50, 0.5)
    histories["cnn-vgg-s0"] = history(5, 8.0, 10, 0.6)
    return histories


def test_one_png_per_model(tmp_path):
    histories = made_up_histories()
    assert curve_models(histories) == ["m5", "vgg"]
    paths = plot_all_curves(histories, tmp_path)
    assert set(paths) == {"m5", "vgg"}
    for path in paths.values():
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_write_outputs_draws_the_curves(tmp_path):
    rows = [dict(cell="m5/s0/cnn", model="m5", seed=0, kind="cnn", top1=99.0)]
    paths = write_outputs(rows, tmp_path, 15, {"cnn-m5-s0": history(3, 1.0, 10, 0.5)})
    assert paths["curves-m5"].is_file()


def test_a_model_without_some_runs_still_plots(tmp_path):
    plot_model_curves({"cnn-m5-s0": history(3, 1.0, 10, 0.5), "snn-m5-s0-learn_tau=0": []}, "m5", tmp_path / "c.png")
    assert (tmp_path / "c.png").is_file()


def test_the_title_names_only_the_curves_drawn():
    labels = [label for label, *_ in SERIES]
    assert curve_title(labels) == "CNN vs SNN from scratch vs converted SNN retrained"
    assert curve_title([labels[0], labels[3], labels[4]]) == "CNN vs converted SNN retrained"  # --no-scratch
