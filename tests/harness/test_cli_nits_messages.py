"""One-line errors of the harness tools that name the real problem: a --data-dir that is a file,
a seed out of range (lowt.py too), an empty -o / --out / --data-dir; argument errors in one line,
as the converter's."""

import importlib.util
import sys
from pathlib import Path

import pytest

import ann2snn_zoo as zoo
import ann2snn_zoo.harness.lowt as lowt
import ann2snn_zoo.speed as speed
from ann2snn import cli
from ann2snn_zoo.cli_plugins import ZooPlugin
from ann2snn_zoo.harness import experiment_cli, train_cli
from ann2snn_zoo.harness.experiment import MAX_SEED

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import lowt as lowt_tool  # noqa: E402  (tools/lowt.py)


class Started(Exception):
    """Raised where a stubbed run would begin its work."""


@pytest.fixture
def no_work(monkeypatch):
    """Every tool stops with Started once past its checks."""

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr(zoo.data.splits, "check_source", started)
    monkeypatch.setattr(zoo.data, "load_splits", started)
    monkeypatch.setattr(lowt, "_measure", started)


def one_line(capsys, code: int) -> str:
    """The one ``error:`` line of a refused command (exit status 2)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def afile(tmp_path) -> Path:
    path = tmp_path / "afile"
    path.write_text("keep")
    return path


@pytest.mark.parametrize("tool", ["lowt", "experiment"])
def test_a_data_dir_that_is_a_file_is_called_a_file(tmp_path, afile, capsys, no_work, tool):
    argv = ["--data-dir", str(afile), "--out", str(tmp_path / "out"), "--device", "cpu"]
    code = lowt_tool.main(argv) if tool == "lowt" else experiment_cli.main([*argv, "--preset", "fsdd"])
    error = one_line(capsys, code)
    assert f"--data-dir {afile} is a file, not a folder" in error and "download" not in error and "does not exist" not in error
    assert afile.read_text() == "keep" and not (tmp_path / "out").exists()


def test_a_negative_seed_explains_the_bound(tmp_path, capsys, no_work):
    error = one_line(capsys, experiment_cli.main(["--seeds", "-1", "--out", str(tmp_path / "out")]))
    assert f"--seeds -1: a seed must be a whole number from 0 to {MAX_SEED}" in error and "adds up to 1000" in error


def test_lowt_refuses_a_seed_out_of_range_before_anything_exists(tmp_path, capsys, no_work):
    (tmp_path / "data").mkdir()
    code = lowt_tool.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--seeds", "0", "-1", "--device", "cpu"])
    assert "--seeds -1: a seed must be a whole number from 0" in one_line(capsys, code)
    assert not (tmp_path / "out").exists()


def test_train_says_an_empty_output_is_empty(capsys, no_work):
    error = one_line(capsys, train_cli.main(["-o", "", "--no-progress", "--device", "cpu"]))
    assert "-o is empty" in error and "folder" not in error


@pytest.mark.parametrize("tool", ["lowt", "experiment", "lowt --merge"])
def test_an_empty_out_is_called_empty(tmp_path, capsys, no_work, tool):
    if tool == "experiment":
        code = experiment_cli.main(["--out", "", "--device", "cpu"])
    elif tool == "lowt":
        code = lowt_tool.main(["--data-dir", str(tmp_path), "--out", "", "--device", "cpu"])
    else:
        code = lowt_tool.main(["--merge", str(tmp_path), "--out", ""])
    assert "--out is empty" in one_line(capsys, code)


def test_an_empty_data_dir_is_called_empty(tmp_path, capsys, no_work):
    code = experiment_cli.main(["--preset", "fsdd", "--data-dir", "", "--out", str(tmp_path / "out")])
    assert "--data-dir is empty" in one_line(capsys, code)


def _bench_main():
    """``main`` of tools/bench.py, loaded under a test name."""
    spec = importlib.util.spec_from_file_location("bench_errors_under_test", Path(__file__).resolve().parents[2] / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


#: Each harness tool's ``main`` (by the name its errors give) and a flag of it that takes a value.
TOOLS = {
    "train.py": (train_cli.main, "--epochs"),
    "ann2snn train": (lambda argv: cli.main(["train", *argv], plugins=[ZooPlugin()]), "--epochs"),
    "experiment.py": (experiment_cli.main, "--T"),
    "ann2snn experiment": (lambda argv: cli.main(["experiment", *argv], plugins=[ZooPlugin()]), "--T"),
    "lowt.py": (lowt_tool.main, "--T"),
    "bench.py": (lambda argv: _bench_main()(argv), "--T"),
    "python -m ann2snn_zoo.speed": (speed.main, "--batch"),
}


@pytest.mark.parametrize("prog", TOOLS)
@pytest.mark.parametrize("mistake", ["unknown flag", "missing value"])
def test_argument_errors_are_one_line_like_the_converters(capsys, no_work, prog, mistake):
    main, flag = TOOLS[prog]
    argv, message = (["--no-such-flag"], "unrecognized arguments: --no-such-flag") if mistake == "unknown flag" else ([flag], f"argument {flag}: expected")
    with pytest.raises(SystemExit) as exit:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"{prog}: error: {message}") and err[0].endswith(f"(see {prog} --help)"), err
