"""experiment.py's guards: --merge takes the merged runs' recorded settings and refuses runs of
other settings or an --out among them; bad settings (--out, --device, --seeds, --out inside the
data, another tool's folder) are one ``error:`` line before anything is written."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import ann2snn_zoo as zoo
from ann2snn_zoo.harness import experiment_cli
from ann2snn_zoo.harness.experiment import ExperimentConfig, epoch_speed
from ann2snn_zoo.harness.run_folder import RunFolderError, check_settings
from ann2snn_zoo.harness.summary import summary_table


class Started(Exception):
    """Raised where an experiment would begin its work (checking or loading data)."""


@pytest.fixture
def no_work(monkeypatch):
    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(zoo.data.splits, "check_source", started)
    monkeypatch.setattr(zoo.data, "load_splits", started)


@pytest.fixture
def written(monkeypatch):
    """Replace write_outputs (plots are slow): record what it was asked to write."""
    calls = []

    def write_outputs(rows, out, finetune_T, histories=None, dataset=None):
        calls.append(dict(rows=rows, out=out, finetune_T=finetune_T, dataset=dataset))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(summary_table(rows, finetune_T))
        return {"markdown": out / "results.md"}

    monkeypatch.setattr(experiment_cli, "write_outputs", write_outputs)
    return calls


def run_folder(path: Path, rows: list[dict], **settings) -> Path:
    """A finished run's folder: config.json of ``settings`` and ``rows`` in results.jsonl."""
    path.mkdir(parents=True)
    config = ExperimentConfig(**{"dataset": "fsdd", "data_dir": "data/fsdd", "out_dir": str(path), **settings})
    (path / "config.json").write_text(json.dumps(asdict(config)))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cnn(seed=0, top1=80.0, model="m5"):
    return dict(cell=f"{model}/s{seed}/cnn/-/TNone/direct/learn_tau=None", model=model, seed=seed, kind="cnn", top1=top1)


def retrained(T, seed=0, top1=70.0, model="m5"):
    return dict(cell=f"{model}/s{seed}/retrained/LIF/T{T}/direct/learn_tau=False", model=model, seed=seed, kind="retrained", neuron="LIF", T=T, encoder="direct", learn_tau=False, top1=top1)


def fails(argv, capsys) -> str:
    """The one stderr line of a refused command (exit status 2)."""
    assert experiment_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# -- problem 1: --merge ------------------------------------------------------------------------
def test_merge_takes_the_fine_tuning_T_the_runs_recorded(tmp_path, written):
    run = run_folder(tmp_path / "fold-theo", [cnn(), retrained(15, top1=68.0)], finetune_T=15)
    assert experiment_cli.main(["--merge", str(run), "--out", str(tmp_path / "table")]) == 0  # the quick preset says T=16
    assert written[0]["finetune_T"] == 15 and written[0]["dataset"] == "fsdd"
    assert "retrained LIF T=15, fixed tau" in (tmp_path / "table" / "results.md").read_text()
    assert "| 68.0 |" in (tmp_path / "table" / "results.md").read_text()


def test_merge_refuses_runs_of_other_results_defining_settings(tmp_path, written, capsys):
    a = run_folder(tmp_path / "e1", [cnn(top1=10.0)], cnn_epochs=1)
    b = run_folder(tmp_path / "e4", [cnn(top1=60.0)], cnn_epochs=6)
    error = fails(["--merge", str(a), str(b), "--out", str(tmp_path / "m")], capsys)
    assert "cnn_epochs: 1 -> 6" in error
    assert not written and not (tmp_path / "m").exists()


def test_merge_allows_runs_that_differ_only_in_cells_and_where_the_data_is(tmp_path, written):
    a = run_folder(tmp_path / "a", [cnn(seed=0), retrained(25, seed=0)], seeds=(0,), models=("m5",), zero_shot_T=(8,))
    b = run_folder(tmp_path / "b", [cnn(seed=1, model="vgg")], seeds=(1,), models=("vgg",), zero_shot_T=(8, 64), data_dir="/elsewhere/fsdd", device="cuda")
    assert experiment_cli.main(["--merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    assert {(r["model"], r["seed"]) for r in written[0]["rows"]} == {("m5", 0), ("vgg", 1)}


def test_merge_allows_other_training_settings_for_other_models_but_one_fine_tuning_T(tmp_path, written, capsys):
    """The README's sweep: VGG and ResNet trained 30 CNN epochs in one run, M5 with the preset's in another."""
    a = run_folder(tmp_path / "a", [cnn(model="vgg")], models=("vgg", "resnet"), cnn_epochs=30, scratch_epochs=2)
    b = run_folder(tmp_path / "b", [cnn(model="m5")], models=("m5",), cnn_epochs=6)
    assert experiment_cli.main(["--merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    c = run_folder(tmp_path / "c", [cnn(model="m5")], models=("m5",), finetune_T=8)
    assert "finetune_T: 25 -> 8" in fails(["--merge", str(a), str(c), "--out", str(tmp_path / "m2")], capsys)


def test_merge_keeps_the_later_folders_row_of_a_repeated_cell(tmp_path, written, capsys):
    a = run_folder(tmp_path / "a", [cnn(top1=10.0)])
    b = run_folder(tmp_path / "b", [cnn(top1=60.0)])
    assert experiment_cli.main(["--merge", str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    assert [r["top1"] for r in written[0]["rows"]] == [60.0]
    assert "later folders win" in " ".join(experiment_cli.build_parser().format_help().split())


def test_merge_refuses_an_out_among_the_merged_folders(tmp_path, written, capsys):
    a = run_folder(tmp_path / "a", [cnn()])
    b = run_folder(tmp_path / "b", [cnn(seed=1)], seeds=(1,))
    (a / "results.md").write_text("a's own table")
    error = fails(["--merge", str(a), str(b), "--out", str(a)], capsys)
    assert "one of the merged folders" in error
    assert (a / "results.md").read_text() == "a's own table" and not written


def test_merge_refuses_another_runs_folder_as_out(tmp_path, written, capsys):
    a = run_folder(tmp_path / "a", [cnn()])
    other = run_folder(tmp_path / "other", [cnn(seed=3)])
    assert "is a run's folder" in fails(["--merge", str(a), "--out", str(other)], capsys)
    assert not written


def test_merge_of_a_cross_validated_run_reads_its_folds(tmp_path, written):
    top = tmp_path / "loso"
    top.mkdir()
    (top / "config.json").write_text(json.dumps(asdict(ExperimentConfig(dataset="fsdd", cross_validation="speaker", finetune_T=15))))
    for speaker, top1 in (("theo", 50.0), ("lucas", 70.0)):
        run_folder(top / f"fold-{speaker}", [cnn(top1=top1)], finetune_T=15, test_speaker=speaker)
    assert experiment_cli.main(["--merge", str(top), "--out", str(tmp_path / "m")]) == 0
    assert sorted((r["fold"], r["top1"]) for r in written[0]["rows"]) == [("lucas", 70.0), ("theo", 50.0)]
    assert written[0]["finetune_T"] == 15


# -- problem 2: one-line errors before any work, no half-made folder ----------------------------
def test_an_out_that_is_a_file_is_one_line(tmp_path, no_work, capsys):
    (tmp_path / "afile").write_text("keep")
    assert "is a file" in fails(["--out", str(tmp_path / "afile")], capsys)
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.parametrize("device, words", [("foo", "is not a device"), ("cuda", "no usable CUDA GPU"), ("cuda:7", "")])
def test_an_unusable_device_is_one_line_before_the_folder_exists(tmp_path, no_work, capsys, monkeypatch, device, words):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    error = fails(["--out", str(tmp_path / "d"), "--device", device], capsys)
    assert (f"--device {device}:" in error or f"--device {device!r} " in error) and words in error
    assert not (tmp_path / "d").exists()


def test_a_seed_numpy_refuses_is_one_line_before_the_folder_exists(tmp_path, no_work, capsys):
    assert "--seeds -1" in fails(["--out", str(tmp_path / "d"), "--seeds", "0", "-1"], capsys)
    assert not (tmp_path / "d").exists()


# -- problem 3: --out inside the data --------------------------------------------------------
@pytest.mark.parametrize("inside", ["recordings", "."])
def test_an_out_inside_the_data_set_is_refused(tmp_path, no_work, capsys, inside):
    data = tmp_path / "fsdd"
    (data / "recordings").mkdir(parents=True)
    (data / "recordings" / "0_theo_0.wav").write_bytes(b"RIFF")
    out = data / inside
    error = fails(["--dataset", "fsdd", "--data-dir", str(data), "--out", str(out)], capsys)
    assert "inside the data set folder" in error and "--out" in error
    assert sorted(p.name for p in data.rglob("*")) == ["0_theo_0.wav", "recordings"]


# -- problem 4: another tool's folder ------------------------------------------------------------
def test_a_lowt_folder_is_refused_and_left_as_it_was(tmp_path, no_work, capsys):
    lowt = tmp_path / "lt1"
    (lowt / "relu").mkdir(parents=True)
    (lowt / "results.jsonl").write_text('{"cell": "m5/s0/qcfs/T4", "top1": 50.0}\n')
    (lowt / "lowt.md").write_text("table")
    assert "no config.json of an experiment run" in fails(["--out", str(lowt)], capsys)
    assert (lowt / "results.jsonl").read_text() == '{"cell": "m5/s0/qcfs/T4", "top1": 50.0}\n'
    assert not (lowt / "config.json").exists() and not (lowt / ".lock").exists()


def test_a_run_killed_before_its_config_may_be_rerun(tmp_path, no_work):
    out = tmp_path / "d"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".lock").write_text("123\n")
    with pytest.raises(Started):
        experiment_cli.main(["--out", str(out)])


# -- problem 5: data_dir as a path -----------------------------------------------------------------
def test_a_relative_and_an_absolute_data_dir_to_one_folder_match(tmp_path, monkeypatch):
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path)
    folder = run_folder(tmp_path / "e4", [], data_dir="fsdd")
    defaults = asdict(ExperimentConfig())
    check_settings(folder, asdict(ExperimentConfig(dataset="fsdd", data_dir=str(tmp_path / "fsdd"))), defaults)
    with pytest.raises(RunFolderError, match="data_dir"):
        check_settings(folder, asdict(ExperimentConfig(dataset="fsdd", data_dir=str(tmp_path / "other"))), defaults)


# -- problem 6: messages -------------------------------------------------------------------------
def test_a_data_set_without_data_dir_names_the_option(tmp_path, capsys):
    error = fails(["--preset", "fsdd", "--out", str(tmp_path / "d")], capsys)
    assert "needs --data-dir" in error
    assert not (tmp_path / "d").exists()


def test_the_logged_epoch_time_says_what_it_divides_by_as_the_table_does():
    words = epoch_speed(2.1, 0.7, 25)
    assert "3.00 x a CNN epoch" in words and "0.12 x per time step" in words
    row = dict(retrained(25), snn_cnn_epoch_ratio=3.0)
    assert "| 0.12 x |" in summary_table([cnn(), row], 25)
