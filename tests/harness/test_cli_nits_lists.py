"""List flags of the harness tools (experiment, lowt; bench in tests/test_bench_cli.py) take values
separated by spaces, commas or both, as ``ann2snn convert --T 8,16,32`` does, each still checked."""

import argparse
import sys
from pathlib import Path

import pytest

import ann2snn_zoo.harness.lowt as lowt
from ann2snn_zoo.harness import experiment_cli
from ann2snn_zoo.harness.train_cli import list_flag, positive_int

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import lowt as lowt_tool  # noqa: E402  (tools/lowt.py)


class Started(Exception):
    """Raised where a stubbed run would begin measuring."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t")
    parser.add_argument("--T", **list_flag(positive_int))
    parser.add_argument("--net", **list_flag(choices=("a", "b")))
    return parser


@pytest.mark.parametrize("words", [["8", "16", "32"], ["8,16,32"], ["8,16", "32"], ["8, 16", "32"], ["8,", "16,", "32"]])
def test_a_list_flag_takes_spaces_commas_or_both(words):
    assert _parser().parse_args(["--T", *words]).T == [8, 16, 32]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--T", "8,0"], "must be a whole number above 0, got 0"),
        (["--T", "8,x"], "got 'x'"),
        (["--T", "8,,16"], "empty value in '8,,16'"),
        (["--T", ","], "empty value in ','"),
        (["--net", "a,c"], "invalid choice: 'c'"),
    ],
)
def test_each_value_of_a_list_flag_is_checked(capsys, argv, words):
    with pytest.raises(SystemExit) as exit:
        _parser().parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit.value.code == 2 and f"argument {argv[0]}:" in err and words in err, err


def test_experiment_list_flags_take_commas():
    args = experiment_cli.parse_args(
        ["--T", "8,16", "32", "--lif-T", "4,8", "--retrain-T", "5,15", "--seeds", "0,1", "2", "--models", "m5,vgg", "--encoders", "direct,rate", "--retrain-encoders", "rate,latency"]
    )
    config = experiment_cli.config_from(args)
    assert config.zero_shot_T == (8, 16, 32) and config.lif_zero_shot_T == (4, 8) and config.retrain_T == (5, 15)
    assert config.seeds == (0, 1, 2) and config.models == ("m5", "vgg")
    assert config.encoders == ("direct", "rate") and config.retrain_encoders == ("rate", "latency")


def test_experiment_list_flags_still_refuse_a_bad_value(capsys):
    with pytest.raises(SystemExit) as exit:
        experiment_cli.parse_args(["--retrain-T", "15,0"])
    assert exit.value.code == 2 and "argument --retrain-T: must be a whole number above 0, got 0" in capsys.readouterr().err


@pytest.fixture
def started(monkeypatch):
    """Stub lowt's data check and measurement: record the config that got past its checks."""
    configs = []

    def measure(config, out, log):
        configs.append(config)
        raise Started

    monkeypatch.setattr(lowt.zoo.data.splits, "check_source", lambda *args, **kwargs: None)
    monkeypatch.setattr(lowt, "_measure", measure)
    return configs


def test_lowt_takes_comma_lists(tmp_path, started):
    (tmp_path / "data").mkdir()
    with pytest.raises(Started):
        lowt_tool.main(["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--T", "8,16", "--seeds", "0,1", "--models", "m5,vgg", "--device", "cpu"])
    config = started[0]
    assert config.T == (8, 16) and config.seeds == (0, 1) and config.models == ("m5", "vgg")


def test_lowt_names_the_flag_of_a_bad_value_in_a_comma_list(capsys):
    with pytest.raises(SystemExit) as exit:
        lowt_tool.main(["--data-dir", "x", "--T", "8,16", "0"])
    assert exit.value.code == 2 and "argument --T: must be a whole number above 0, got 0" in capsys.readouterr().err
