"""``tools/bench.py`` and ``python -m ann2snn_zoo.speed`` refuse settings they cannot measure
with an argparse error (exit status 2) before any work, not a traceback or a "measurement"."""

import importlib.util
from pathlib import Path

import pytest
import torch

import ann2snn_zoo.speed as speed

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_under_test", ROOT / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    measured = []
    monkeypatch.setattr(module, "bench_net", lambda name, args, device: measured.append((name, args, device)))
    monkeypatch.setattr(module, "peer_converters", lambda: ({}, []))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: measured.append(("threads", n)))
    module.measured = measured
    return module


BASE = ["--nets", "m5", "--T", "4", "--batch", "1", "--no-train", "--no-peers"]


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--T", "0"], "--T"),
        (["--T", "4", "-2"], "--T"),
        (["--batch", "0"], "--batch"),
        (["--threads", "0"], "--threads"),
        (["--repeats", "0"], "--repeats"),
        (["--repeats", "two"], "--repeats"),
        (["--device", "foo"], "--device"),
        (["--device", "cuda"], "--device"),
        (["--device", "mps"], "--device"),
        (["--max-seconds", "nan"], "--max-seconds"),
        (["--max-gb", "-1"], "--max-gb"),
    ],
)
def test_bench_refuses_settings_it_cannot_measure(bench, monkeypatch, capsys, argv, option):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        bench.main(BASE + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and ": error: argument " + option in err[-1], err
    assert bench.measured == []  # nothing was run


def test_bench_runs_with_valid_settings(bench, capsys):
    bench.main(BASE + ["--threads", "2", "--device", "cpu"])
    assert ("threads", 2) in bench.measured
    name, args, device = bench.measured[-1]
    assert name == "m5" and device == torch.device("cpu") and args.T == [4] and args.batch == [1]


@pytest.mark.parametrize("argv", [["--batch", "0"], ["--repeats", "0"], ["--repeats", "-3"]])
def test_speed_refuses_nonsense_numbers(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        speed.main(argv)
    assert exit.value.code == 2 and argv[0] in capsys.readouterr().err


def test_bench_list_flags_take_commas_spaces_or_both(bench):
    bench.main(["--nets", "m5,vgg", "--T", "4,16", "64", "--batch", "1,16", "--no-train", "--no-peers"])
    args = bench.measured[-1][1]
    assert args.nets == ["m5", "vgg"] and args.T == [4, 16, 64] and args.batch == [1, 16]
    assert [name for name, *_ in bench.measured if name != "threads"] == ["m5", "vgg"]


@pytest.mark.parametrize("argv, words", [(["--T", "4,0"], "--T: must be a whole number above 0, got 0"), (["--nets", "m5,m6"], "--nets: invalid choice: 'm6'")])
def test_bench_checks_each_value_of_a_comma_list(bench, capsys, argv, words):
    with pytest.raises(SystemExit) as exit:
        bench.main(BASE + argv)
    assert exit.value.code == 2 and words in capsys.readouterr().err and bench.measured == []
