"""An experiment folder under careless use: changed settings, two runs at once, torn files,
corrupt checkpoints, missing data; and the CLIs' one-line errors."""

import fcntl
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import ann2snn_zoo as zoo
from ann2snn_zoo.harness import CheckpointError, ExperimentConfig, load_checkpoint, run_experiment, save_checkpoint
from ann2snn_zoo.harness import experiment as harness_experiment
from ann2snn_zoo.harness import train_cli
from ann2snn_zoo.harness.run_folder import LOCK_NAME, RunFolderError
from ann2snn_zoo.harness.train import History

ROOT = Path(__file__).resolve().parents[2]


class Started(Exception):
    """Raised where an experiment would begin its work (loading data)."""


@pytest.fixture
def no_work(monkeypatch):
    """Make loading data raise Started: a test sees whether a run got past its checks."""

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(zoo.data, "load_splits", started)


@pytest.fixture
def small_data(monkeypatch):
    """Make the synthetic data set 2 clips per word and split, for fast command-line runs."""
    load_splits = zoo.data.load_splits
    monkeypatch.setattr(zoo.data, "load_splits", lambda *args, **kwargs: load_splits(*args, **kwargs, n_per_class=2))


@pytest.fixture
def cli():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import experiment
    finally:
        sys.path.remove(str(ROOT / "tools"))
    return experiment


def config(tmp_path: Path, **overrides) -> ExperimentConfig:
    settings = dict(out_dir=str(tmp_path / "run"), cnn_epochs=4, progress=False, device="cpu", max_batches=2)
    return ExperimentConfig(**{**settings, **overrides})


def finished_folder(tmp_path: Path, **overrides) -> Path:
    """An experiment folder whose config.json records `config(tmp_path, **overrides)`."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(asdict(config(tmp_path, **overrides)), indent=1))
    (out / "results.jsonl").write_text(json.dumps({"cell": "m5/s0/cnn/-/TNone/direct/learn_tau=None", "top1": 50.0}) + "\n")
    return out


# -- 12: a rerun with other settings ----------------------------------------------------------
def test_rerun_with_other_settings_is_refused_naming_them(tmp_path, no_work):
    out = finished_folder(tmp_path)
    before = (out / "config.json").read_text()
    with pytest.raises(RunFolderError, match=r"cnn_epochs: 4 -> 30.*max_batches: 2 -> 3.*--out") as error:
        run_experiment(config(tmp_path, cnn_epochs=30, max_batches=3), log=lambda _: None)
    assert "\n" not in str(error.value) and str(out) in str(error.value)
    assert (out / "config.json").read_text() == before


def test_rerun_may_change_the_device_and_add_cells(tmp_path, no_work):
    finished_folder(tmp_path)
    more = config(
        tmp_path, device="auto", progress=True, seeds=(0, 1), models=("m5", "vgg"), zero_shot_T=(8,), from_scratch=False,
        retrain_encoders=("direct", "rate"), retrain_T=(4, 8),
    )  # fmt: skip
    with pytest.raises(Started):
        run_experiment(more, log=lambda _: None)


def test_settings_missing_from_an_older_config_count_as_their_defaults(tmp_path, no_work):
    out = finished_folder(tmp_path)
    old = json.loads((out / "config.json").read_text())
    del old["tau_lr_scale"]
    (out / "config.json").write_text(json.dumps(old))
    with pytest.raises(Started):
        run_experiment(config(tmp_path), log=lambda _: None)
    with pytest.raises(RunFolderError, match=r"tau_lr_scale: 1.0 -> 2.0"):
        run_experiment(config(tmp_path, tau_lr_scale=2.0), log=lambda _: None)


# -- 13: two runs on one folder ---------------------------------------------------------------
def test_a_second_run_on_a_locked_folder_is_refused_naming_the_pid(tmp_path, no_work):
    out = tmp_path / "run"
    out.mkdir()
    with (out / LOCK_NAME).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242\n")
        held.flush()
        with pytest.raises(RunFolderError, match=rf"{out} is in use by another run \(pid 4242\)") as error:
            run_experiment(config(tmp_path), log=lambda _: None)
    assert "\n" not in str(error.value)


def test_a_stale_lock_file_does_not_block_a_rerun(tmp_path, no_work):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("999999\n")  # left by a killed run: the kernel released its flock
    with pytest.raises(Started):
        run_experiment(config(tmp_path), log=lambda _: None)
    with pytest.raises(Started):  # and the lock is released when a run ends, even by an exception
        run_experiment(config(tmp_path), log=lambda _: None)


def test_a_run_holding_the_folder_blocks_until_it_is_killed(tmp_path, no_work):
    out = tmp_path / "run"
    out.mkdir()
    holder = "import sys, time; from pathlib import Path; from zoo.harness.run_folder import folder_lock\nwith folder_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(120)"
    process = subprocess.Popen([sys.executable, "-c", holder, str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=rf"\(pid {process.pid}\)"):
            run_experiment(config(tmp_path), log=lambda _: None)
    finally:
        process.kill()
        process.wait()
    with pytest.raises(Started):  # killed with SIGKILL: the kernel released its lock
        run_experiment(config(tmp_path), log=lambda _: None)


# -- 15: one-line errors, nothing created before the data is checked -------------------------
def test_missing_data_folder_creates_nothing(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(zoo.DataError, match="nowhere"):
        run_experiment(config(tmp_path, dataset="fsdd", data_dir=str(tmp_path / "nowhere")), log=lambda _: None)
    assert not out.exists()


def one_line_error(capsys, code: int, *names: str) -> str:
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for name in names:
        assert name in lines[0]
    return lines[0]


def test_experiment_cli_missing_data_folder_is_one_line(tmp_path, cli, capsys):
    nowhere, out = tmp_path / "nowhere", tmp_path / "run"
    code = cli.main(["--dataset", "fsdd", "--data-dir", str(nowhere), "--out", str(out), "--no-progress"])
    one_line_error(capsys, code, str(nowhere))
    assert not out.exists()


def test_experiment_cli_truncated_checkpoint_is_one_line(tmp_path, cli, capsys, small_data):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    checkpoint = out / "checkpoints" / "cnn-m5-s0.pt"
    checkpoint.write_bytes(b"PK\x03\x04 truncated")
    argv = ["--out", str(out), "--no-progress", "--device", "cpu"]
    (out / "config.json").write_text(json.dumps(asdict(cli.config_from(cli.parse_args(argv)))))  # a run killed mid-training
    code = cli.main(argv)
    one_line_error(capsys, code, str(checkpoint))


def test_experiment_cli_changed_settings_are_one_line(tmp_path, cli, capsys, no_work):
    out = tmp_path / "run"
    out.mkdir()
    first = cli.config_from(cli.parse_args(["--out", str(out), "--cnn-epochs", "4"]))
    (out / "config.json").write_text(json.dumps(asdict(first)))
    code = cli.main(["--out", str(out), "--cnn-epochs", "30"])
    one_line_error(capsys, code, str(out), "cnn_epochs: 4 -> 30")


def test_train_cli_data_errors_are_one_line(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    code = train_cli.main(["--dataset", "fsdd", "--data-dir", str(nowhere), "-o", str(tmp_path / "ck.pt"), "--no-progress"])
    one_line_error(capsys, code, str(nowhere))
    code = train_cli.main(["--dataset", "fsdd", "-o", str(tmp_path / "ck.pt"), "--no-progress"])
    one_line_error(capsys, code, "data_dir")


def test_train_cli_checkpoint_errors_exit_2(tmp_path, capsys, small_data):
    checkpoint = tmp_path / "ck.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    code = train_cli.main(["-o", str(checkpoint), "--resume", "--no-progress", "--epochs", "1", "--device", "cpu"])
    one_line_error(capsys, code, str(checkpoint))


# -- 17: torn files ---------------------------------------------------------------------------
def test_torn_last_results_line_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [{"cell": "a", "top1": 1.0}, {"cell": "b", "top1": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cell": "c", "to')
    with pytest.warns(UserWarning, match=rf"{path}.*torn last line"):
        results = harness_experiment.Results(path, "cpu")
    assert list(results.rows) == ["a", "b"]
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in rows)
    results.add({"cell": "c", "top1": 3.0})
    assert [json.loads(line)["cell"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_a_bad_line_before_the_last_is_a_clear_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"cell": "a"}\nnot json\n{"cell": "b"}\n')
    with pytest.raises(RunFolderError, match=rf"{path} line 2"):
        harness_experiment.Results(path, "cpu")


def test_histories_are_written_atomically(tmp_path, monkeypatch):
    experiment = harness_experiment.Experiment(config(tmp_path), log=lambda _: None)
    path = tmp_path / "run" / "histories.json"
    path.write_text(json.dumps({"old": [{"epoch": 1}]}))
    monkeypatch.setattr(experiment, "splits", lambda model: {"train": None, "val": None})
    monkeypatch.setattr(harness_experiment, "fit", lambda *args, **kwargs: History([{"epoch": 1}] * 1000))
    real_write_text = Path.write_text

    def killed_half_way(self, data, *args, **kwargs):
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        experiment._fit(torch.nn.Linear(1, 1), "m5", "cnn-m5-s0", 1, 1e-3, 0, {})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"old": [{"epoch": 1}]}
    assert [p.name for p in path.parent.iterdir() if "partial" in p.name] == []


# -- checkpoint checksums ---------------------------------------------------------------------
MARK = 1.2345678


def corrupt_tensor_bytes(path: Path) -> None:
    """Change one float of the MARK-filled tensor inside the archive (torch keeps no checksum)."""
    data = path.read_bytes()
    needle = torch.full((4,), MARK).numpy().tobytes()
    at = data.index(needle)
    path.write_bytes(data[:at] + torch.full((1,), -MARK).numpy().tobytes() + data[at + 4 :])


def test_corrupted_tensor_in_a_checkpoint_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "ck.pt"
    state = {"weight": torch.full((64,), MARK), "bias": torch.zeros(3)}
    save_checkpoint(path, {"model": "m5", "state_dict": state})
    assert torch.equal(load_checkpoint(path)["state_dict"]["weight"], state["weight"])
    corrupt_tensor_bytes(path)
    with pytest.raises(CheckpointError, match=rf"{path}.*checksum"):
        load_checkpoint(path)


def test_corrupted_best_weights_are_refused_too(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"state_dict": {"w": torch.zeros(2)}, "best_state_dict": {"w": torch.full((64,), MARK)}})
    corrupt_tensor_bytes(path)
    with pytest.raises(CheckpointError, match=rf"{path}.*checksum"):
        load_checkpoint(path)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": "m5", "state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(2))


# -- 18: --skip-bad on both command lines -----------------------------------------------------
def test_experiment_cli_takes_skip_bad(cli):
    config = cli.config_from(cli.parse_args(["--preset", "fsdd", "--data-dir", "data", "--skip-bad"]))
    assert config.dataset_options == {"skip_bad": True}
    assert cli.config_from(cli.parse_args(["--preset", "fsdd", "--data-dir", "data"])).dataset_options == {}


def test_train_cli_passes_skip_bad_to_the_loader(tmp_path, monkeypatch):
    seen = {}

    def load_splits(*args, **kwargs):
        seen.update(kwargs)
        raise Started

    monkeypatch.setattr(zoo.data, "load_splits", load_splits)
    with pytest.raises(Started):
        train_cli.main(["--dataset", "fsdd", "--data-dir", str(tmp_path / "fsdd"), "--skip-bad", "-o", str(tmp_path / "ck.pt")])
    assert seen["skip_bad"] is True


def test_synthetic_data_ignores_skip_bad():
    splits = zoo.data.load_splits("synthetic", front_end=zoo.FrontEnd(kind="waveform"), n_per_class=1, skip_bad=True)
    assert len(splits["test"]) == 10


# -- nonsense numbers and names on the command lines ------------------------------------------
@pytest.mark.parametrize("argv", [["--batch-size", "0"], ["--epochs", "-1"], ["--lr", "nan"], ["--lr", "0"], ["--snn-T", "0"], ["--augment-shift", "inf"]])
def test_train_cli_refuses_nonsense_numbers(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        train_cli.parse_args(argv)
    assert exit.value.code == 2 and argv[0] in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--models", "nonet"], ["--T", "4", "0"], ["--cnn-epochs", "0"], ["--max-batches", "0"], ["--tau-lr-scale", "nan"], ["--augment-shift", "-1"]])
def test_experiment_cli_refuses_nonsense_numbers_and_models(argv, cli, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.parse_args(argv)
    assert exit.value.code == 2 and argv[0] in capsys.readouterr().err
