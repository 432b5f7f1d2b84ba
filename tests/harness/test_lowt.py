"""The low-T measurement (zoo.harness.lowt, tools/lowt.py) on a tiny synthetic run."""

import json

import pytest

from ann2snn_zoo.harness.lowt import METHODS, LowTConfig, lowt_tables, plot_lowt, run_lowt


@pytest.mark.slow
def test_lowt_measures_every_method_and_reruns_skip(tmp_path):
    config = LowTConfig(
        dataset="synthetic",
        models=("m5",),
        seeds=(0,),
        T=(2, 4),
        levels=4,
        out_dir=str(tmp_path),
        cnn_epochs=1,
        max_batches=2,
        cnn_training={},
        augment={},
    )
    rows = run_lowt(config, log=lambda _: None)
    measured = [r for r in rows if r["T"] is not None]
    assert {(r["method"], r["T"]) for r in measured} == {(m, t) for m in METHODS for t in (2, 4)}
    assert {r["method"] for r in rows if r["T"] is None} == {"CNN", "CNN (QCFS)"}
    assert all(0 <= r["top1"] <= 100 and r["forward_s"] > 0 for r in measured)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(rows)
    assert run_lowt(config, log=lambda _: None) == rows  # a rerun measures nothing again
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(lines)
    table = lowt_tables(rows, config.T)
    assert "| m5 | bias correction (default) |" in table and "Time to accuracy" in table
    plot_lowt(rows, config.T, tmp_path / "lowt.png", "test")
    assert (tmp_path / "lowt.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads(lines[0])["model"] == "m5"
