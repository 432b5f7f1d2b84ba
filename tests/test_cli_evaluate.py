"""``ann2snn convert --evaluate``: CNN and SNN accuracy and their agreement at one T or a table
over several; the command's defaults are the library's; a NIR export that must be refused is
refused before calibration."""

import re
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.cli import build_parser, main

FSDD_DIR = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fsdd").resolve()


class TinyNet(nn.Module):
    """Conv1d + ReLU + max pool + linear on [1, 32] inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=2)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(4 * 7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    model = TinyNet().eval()
    torch.save(model, tmp_path / "model.pt")
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(40, 1, 32, generator=generator)
    with torch.no_grad():
        targets = model(inputs).argmax(1)
    targets[:10] = (targets[:10] + 1) % 3  # the CNN is wrong on a quarter of them
    torch.save((inputs, targets), tmp_path / "eval.pt")
    torch.save(torch.randn(32, 1, 32, generator=generator), tmp_path / "calib.pt")
    return tmp_path


def run(capsys, *args: object, zoo: bool = False) -> tuple[int, str, str]:
    """The compiler's command alone, or (``zoo``) as tools/convert.py composes it with the zoo's plugin."""
    plugins = []
    if zoo:
        from ann2snn_zoo.cli_plugins import ZooPlugin

        plugins = [ZooPlugin()]
    code = main(["convert", *map(str, args)], plugins=plugins)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[int, tuple[float, float]]:
    """{T: (SNN accuracy, agreement)} from the printed evaluation table."""
    rows = re.findall(r"^\s*(\d+)\s+([\d.]+) %\s+([\d.]+) %$", out, re.M)
    return {int(T): (float(a), float(b)) for T, a, b in rows}


def test_evaluate_prints_cnn_accuracy_and_a_row_per_T(files, capsys):
    code, out, err = run(
        capsys,
        files / "model.pt",
        "--trust-pickle",
        "-o",
        files / "snn.pt",
        "--calibrate",
        files / "calib.pt",
        "--evaluate",
        files / "eval.pt",
        "--T",
        "4,64",
        "--no-learn-tau",
    )
    assert code == 0, err
    assert "evaluation on 40 examples of" in out and "CNN accuracy 75.0 %" in out
    assert "the SNN written is the one for T=4" in out
    rows = table(out)
    assert sorted(rows) == [4, 64]
    assert all(0 <= accuracy <= 100 and 0 <= agreement <= 100 for accuracy, agreement in rows.values())
    assert rows[64][1] >= 80.0  # IF at T=64 reproduces this small net's classes closely
    assert ann2snn.load(files / "snn.pt").T == 4


def test_evaluate_agreement_is_measured_against_the_cnn(files, capsys):
    """Agreement compares SNN and CNN predictions; accuracy compares with the targets. With targets
    equal to the CNN's predictions the two columns are the same."""
    inputs, _ = torch.load(files / "eval.pt")
    with torch.no_grad():
        torch.save((inputs, torch.load(files / "model.pt", weights_only=False)(inputs).argmax(1)), files / "cnn_labels.pt")
    code, out, err = run(capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--evaluate", files / "cnn_labels.pt", "--T", 16)
    assert code == 0, err
    assert "CNN accuracy 100.0 %" in out
    ((accuracy, agreement),) = table(out).values()
    assert accuracy == agreement


@pytest.mark.parametrize(
    "payload, message",
    [
        (lambda x, y: x, "expected a pair (inputs, targets)"),
        (lambda x, y: (x, y, y), "found a tuple of 3"),
        (lambda x, y: (x, y.float()), "targets must be integer class indices"),
        (lambda x, y: (x, y[:5]), "targets [N] class indices"),
        (lambda x, y: (x, y + 7), "class indices in 0..2"),
        (lambda x, y: (x[:, :, :20], y), "fails on the evaluation inputs"),
    ],
)
def test_bad_evaluation_files_fail_cleanly_before_any_output(files, capsys, payload, message):
    inputs, targets = torch.load(files / "eval.pt")
    torch.save(payload(inputs, targets), files / "bad.pt")
    code, out, err = run(capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--evaluate", files / "bad.pt")
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert not (files / "snn.pt").exists()


def test_a_fraction_percentile_is_warned_once_per_run(files, capsys):
    """--percentile 0.999 over several T: the settings check, the calibration and each T's
    recalibration all see the fraction, and the user reads it once, as the command's own line."""
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        code, out, err = run(
            capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--calibrate", files / "calib.pt",
            "--evaluate", files / "eval.pt", "--T", "2,4,8", "--percentile", "0.999",
        )  # fmt: skip
    assert code == 0, err
    assert sorted(table(out)) == [2, 4, 8]
    said = [line for line in err.splitlines() if "looks like a fraction" in line]
    assert len(said) == 1 and said[0].startswith("warning: --percentile 0.999 looks like a fraction"), err
    assert not [w for w in escaped if issubclass(w.category, ann2snn.ConversionWarning)]


def test_several_T_need_evaluate(files, capsys):
    code, _, err = run(capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--T", "8,16")
    assert code == 2 and "several T values make a table with --evaluate" in err


def test_duplicate_T_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["convert", "m.pt", "--T", "8,8"])
    assert "names a T twice" in capsys.readouterr().err


def test_defaults_are_the_librarys():
    """The command converts as ann2snn.convert does unless told otherwise: one flag per
    ConversionConfig field, with the field's default, and the config it builds is the default one."""
    from ann2snn.cli import config_from

    library = ann2snn.ConversionConfig()
    args = build_parser().parse_args(["convert", "model.pt"])
    assert args.T == (library.T,)
    for option in library.names():
        assert option == "T" or getattr(args, option) == getattr(library, option), option
    assert config_from(args) == library


@pytest.mark.parametrize("text, value", [("auto", "auto"), ("balanced", "balanced"), ("99.5", 99.5), ("100", 100.0)])
def test_percentile_takes_every_value_the_api_takes(text, value):
    from ann2snn.cli import config_from

    assert config_from(build_parser().parse_args(["convert", "model.pt", "--percentile", text])).percentile == value


@pytest.mark.parametrize("flags, message", [
    (["--percentile", "200"], "--percentile 200.0 must be a number in (0, 100]"),
    (["--percentile", "best"], "--percentile best"),
    (["--surrogate", "sigmoid"], "--surrogate sigmoid"),
    (["--tau-per-channel"], "--tau-per-channel needs --learn-tau"),  # the command's flags, not Python's arguments
])  # fmt: skip
def test_bad_settings_fail_in_one_line_before_any_work(files, capsys, flags, message):
    code, out, err = run(capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", *flags)
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1, err
    assert out == "" and not (files / "snn.pt").exists()


def test_every_setting_reaches_the_conversion(files, capsys):
    code, out, err = run(
        capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--T", 6,
        "--encoder", "rate", "--learn-tau", "--tau", 20, "--tau-per-channel", "--percentile", "99", "--maxpool", "avg", "--mode", "step",
        "--surrogate", "tanh", "--alpha", 2, "--correction", "none", "--no-per-channel",
    )  # fmt: skip
    assert code == 0, err
    snn = ann2snn.load(files / "snn.pt")
    assert snn.report.settings == ann2snn.ConversionConfig(
        T=6, encoder="rate", learn_tau=True, tau=20, tau_per_channel=True, percentile=99, maxpool="avg", mode="step", correction="none", per_channel=False,
    ).report_settings(calibrated=True)  # fmt: skip
    neuron = next(m for m in snn.modules() if isinstance(m, ann2snn.SpikingNeuron))
    assert (neuron.method, neuron.alpha, snn.mode) == ("tanh", 2.0, "step")


def test_nir_refusal_comes_before_calibration(files, capsys, monkeypatch):
    def no_calibration(*args, **kwargs):
        raise AssertionError("calibration ran before the NIR check")

    monkeypatch.setattr(sys.modules["ann2snn.convert"], "calibrate", no_calibration)
    code, _, err = run(
        capsys,
        files / "model.pt",
        "--trust-pickle",
        "-o",
        files / "snn.pt",
        "--calibrate",
        files / "calib.pt",
        "--nir",
        files / "snn.nir",
        "--input-shape",
        "1,32",
    )
    assert code == 2
    assert "max pooling has no NIR primitive" in err and "checked before calibration" in err
    assert not (files / "snn.pt").exists() and not (files / "snn.nir").exists()
    # the input shape can also come from the calibration data (still before calibration runs)
    code, _, err = run(capsys, files / "model.pt", "--trust-pickle", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--nir", files / "snn.nir")
    assert code == 2 and "checked before calibration" in err


@pytest.mark.skipif(not (FSDD_DIR / "recordings").is_dir(), reason=f"FSDD not found at {FSDD_DIR}")
def test_evaluate_on_a_zoo_data_set_with_data_dir(tmp_path, capsys):
    pytest.importorskip("torchaudio")
    import ann2snn_zoo as zoo

    torch.manual_seed(0)
    model = zoo.create("m5", n_classes=10, n_channel=4)
    torch.save({"model": "m5", "config": {"n_classes": 10, "n_channel": 4}, "state_dict": model.state_dict()}, tmp_path / "m5.pt")
    code, out, err = run(
        capsys,
        tmp_path / "m5.pt",
        "-o",
        tmp_path / "snn.pt",
        "--calibrate",
        "fsdd",
        "--evaluate",
        "fsdd",
        "--data-dir",
        FSDD_DIR,
        "--calibration-size",
        16,
        "--evaluate-size",
        12,
        "--T",
        4,
        "--correction",
        "none",
        zoo=True,
    )
    assert code == 0, err
    assert "evaluation on 12 examples of the test split of fsdd" in out
    assert list(table(out)) == [4]


def test_zoo_data_set_without_folder_names_the_ways_to_give_it(tmp_path, capsys):
    pytest.importorskip("torchaudio")
    import ann2snn_zoo as zoo

    model = zoo.create("m5", n_classes=10, n_channel=4)
    torch.save({"model": "m5", "config": {"n_classes": 10, "n_channel": 4}, "state_dict": model.state_dict()}, tmp_path / "m5.pt")
    code, _, err = run(capsys, tmp_path / "m5.pt", "-o", tmp_path / "snn.pt", "--evaluate", "fsdd", zoo=True)
    assert code == 2
    assert "--evaluate fsdd:PATH, or --data-dir PATH" in err and "zoo.data.download_fsdd(" in err
