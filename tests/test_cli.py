"""The ``ann2snn convert`` command (in process through ``ann2snn.cli.main``, and once as a real
``tools/convert.py`` subprocess): every accepted input, every output, and clean failures."""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.cli import lift_exported, main

ROOT = Path(__file__).resolve().parents[1]


class SmallNet(nn.Module):
    """Conv1d + BN + ReLU + max pool + flatten + linear, on [1, 32] inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=2)
        self.bn = nn.BatchNorm1d(4)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(4 * 7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(x, 1))


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = torch.relu(x)
        return self.fc(x)


def small_net() -> SmallNet:
    torch.manual_seed(0)
    model = SmallNet()
    with torch.no_grad():  # non-trivial batch norm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture
def files(tmp_path):
    """A folder with an exported program, a pickled module, a state dict and calibration data."""
    model = small_net()
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 32),)), tmp_path / "model.pt2")
    torch.save(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(60, 2)).eval(), tmp_path / "pickled.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    torch.save(torch.randn(20, 1, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "calib.pt")
    return tmp_path


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_exported_program_converts_like_the_module(files, capsys):
    code, out, err = run(capsys, files / "model.pt2", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--no-learn-tau", "--T", 8)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["node", "before", "after", "threshold"]
    assert any(line.startswith("1 ReLU sites -> spiking neurons, 1 max pools rewritten, 1 batch norms folded, 0 left analog, 0 dropped") for line in lines)
    assert f"wrote {files / 'snn.pt'}" in out
    snn = ann2snn.load(files / "snn.pt")
    reference = ann2snn.convert(small_net(), T=8, learn_tau=False, calibration=list(torch.load(files / "calib.pt").split(64)))
    x = torch.randn(5, 1, 32)  # the program was exported with batch 2: the guards are gone
    with torch.no_grad():
        assert torch.allclose(snn(x), reference(x), atol=1e-6)


def test_outputs_report_nir_drawing_profile(files, capsys):
    code, out, err = run(
        capsys, files / "model.pt2", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--maxpool", "avg", "--no-learn-tau",
        "--report", files / "report.md", "--nir", files / "snn.nir", "--draw", files / "graph.png", "--profile",
    )
    assert code == 0, err
    assert (files / "report.md").read_text().startswith("| node | before | after | threshold | source |")
    assert (files / "graph.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nir = pytest.importorskip("nir")
    assert type(nir.read(files / "snn.nir").nodes["relu_neuron"]).__name__ == "IF"
    assert "spikes/neuron/step" in out and "CNN MACs" in out
    assert not [p for p in files.iterdir() if p.name.startswith(".")]  # no temporary files left
    umask = os.umask(0)
    os.umask(umask)
    for name in ("snn.pt", "report.md", "snn.nir", "graph.png"):  # readable like any new file, not private
        assert (files / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_pickled_module_needs_trust_pickle(files, capsys):
    code, out, err = run(capsys, files / "pickled.pt", "-o", files / "snn.pt", "--input-shape", "1,32")
    assert code == 2
    assert err.startswith("error: ") and "--trust-pickle" in err and "arbitrary code" in err
    assert not (files / "snn.pt").exists()
    code, out, err = run(capsys, files / "pickled.pt", "-o", files / "snn.pt", "--input-shape", "1,32", "--trust-pickle")
    assert code == 0, err
    assert "thresholds are not balanced" in err  # no --calibrate
    with torch.no_grad():
        assert ann2snn.load(files / "snn.pt")(torch.randn(3, 1, 32)).shape == (3, 2)


def test_help_mentions_the_pickle_risk(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "arbitrary code" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not_a_model", "is not a model file"),
    ("untraceable", "cannot trace Untraceable"),
    ("unsupported_op", "unsupported op Sigmoid"),
    ("wrong_input_shape", "does not take inputs of shape [batch, 1, 40]"),
    ("state_dict_without_model", "plain state dict: name its architecture with --model"),
    ("calibration_shape", "does not match the converted network"),
    ("nir_of_max_pool", "max pooling has no NIR primitive"),
])
def test_bad_input_fails_cleanly(files, capsys, case, message):
    (files / "text.pt").write_text("not a model")
    torch.save(Untraceable(), files / "untraceable.pt")
    torch.save(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), files / "sigmoid.pt")
    torch.save(torch.randn(4, 1, 50), files / "calib50.pt")
    args = {
        "missing": [files / "nope.pt"],
        "not_a_model": [files / "text.pt"],
        "untraceable": [files / "untraceable.pt", "--trust-pickle"],
        "unsupported_op": [files / "sigmoid.pt", "--trust-pickle"],
        "wrong_input_shape": [files / "model.pt2", "--input-shape", "1,40"],
        "state_dict_without_model": [files / "weights.pt"],
        "calibration_shape": [files / "model.pt2", "--calibrate", files / "calib50.pt"],
        "nir_of_max_pool": [files / "model.pt2", "--nir", files / "snn.nir", "--calibrate", files / "calib.pt"],
    }[case]
    before = set(files.iterdir())
    code, out, err = run(capsys, *args, "-o", files / "snn.pt")
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert len([line for line in err.splitlines() if line.startswith("error")]) == 1 and "Traceback" not in err
    assert set(files.iterdir()) == before  # no output, no partial file


class SigmoidNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(x))


def test_exported_program_with_an_unsupported_op(tmp_path, capsys):
    torch.export.save(torch.export.export(SigmoidNet().eval(), (torch.randn(2, 4),)), tmp_path / "sigmoid.pt2")
    code, out, err = run(capsys, tmp_path / "sigmoid.pt2")
    assert code == 2 and "unsupported op torch.sigmoid" in err and "is a torch.export program" in err
    assert [p.name for p in tmp_path.iterdir()] == ["sigmoid.pt2"]
    code, out, err = run(capsys, tmp_path / "sigmoid.pt2", "--allow-analog")
    assert code == 0 and "stays analog" in err


def test_malformed_input_shape_is_a_usage_error(files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", str(files / "model.pt2"), "--input-shape", "1,a"])
    assert exit_info.value.code == 2 and "not a shape like 1,8000" in capsys.readouterr().err


def test_zoo_checkpoint_and_state_dict(tmp_path, capsys):
    zoo = pytest.importorskip("zoo")
    torch.manual_seed(0)
    model = zoo.create("m5", n_classes=4, n_channel=8).eval()
    config = {"n_classes": 4, "n_channel": 8}
    torch.save({"model": "m5", "config": config, "state_dict": model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "m5.pt")
    torch.save(model.state_dict(), tmp_path / "m5_weights.pt")
    x = torch.randn(6, 1, 8000, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "calib.pt")
    code, out, err = run(capsys, tmp_path / "m5.pt", "--calibrate", tmp_path / "calib.pt", "--no-learn-tau", "--T", 6)
    assert code == 0, err
    assert "4 ReLU sites -> spiking neurons, 4 max pools rewritten, 4 batch norms folded" in out
    snn = ann2snn.load(tmp_path / "m5.snn.pt")  # default output name
    reference = ann2snn.convert(model, T=6, learn_tau=False, calibration=[x])
    with torch.no_grad():
        assert torch.allclose(snn(x), reference(x), atol=1e-6)
    code, out, err = run(capsys, tmp_path / "m5_weights.pt", "--model", "m5", "--model-config", '{"n_classes": 4, "n_channel": 8}', "-o", tmp_path / "b.pt")
    assert code == 0, err
    code, out, err = run(capsys, tmp_path / "m5_weights.pt", "--model", "m5", "--model-config", '{"n_classes": 5, "n_channel": 8}')
    assert code == 2 and "do not fit zoo model 'm5'" in err


@pytest.mark.parametrize("name, options", [("m5", {"pool": "avg"}), ("vgg", {}), ("resnet", {"width": 8, "n_blocks": 2}), ("piczak", {})])
def test_exported_zoo_models_lift_to_the_same_conversion(name, options):
    """ATen-level graphs of every zoo model become torch-level modules the converter reads like the original."""
    zoo = pytest.importorskip("zoo")
    torch.manual_seed(0)
    model = zoo.create(name, n_classes=5, **options).eval()
    x = torch.rand(3, *model.input_spec.shape)
    lifted = lift_exported(torch.export.export(model, (x[:2],)).module())
    a = ann2snn.convert(lifted, T=4, learn_tau=False, calibration=[x])
    b = ann2snn.convert(model, T=4, learn_tau=False, calibration=[x])
    assert a.report.summary() == b.report.summary()
    with torch.no_grad():
        assert torch.allclose(lifted(x), model(x), atol=1e-5)
        assert torch.allclose(a(x), b(x), atol=1e-5)


@pytest.mark.slow
def test_zoo_checkpoint_calibrated_on_synthetic_data(tmp_path, capsys):
    zoo = pytest.importorskip("zoo")
    model = zoo.create("m5", n_classes=10, n_channel=8)
    torch.save({"model": "m5", "config": {"n_classes": 10, "n_channel": 8}, "state_dict": model.state_dict()}, tmp_path / "m5.pt")
    code, out, err = run(capsys, tmp_path / "m5.pt", "--calibrate", "synthetic", "--calibration-size", 16, "--T", 4)
    assert code == 0, err
    assert ann2snn.load(tmp_path / "m5.snn.pt").input_shape == (1, 8000)


def test_zoo_checkpoint_calibrated_on_fsdd(tmp_path, capsys):
    zoo = pytest.importorskip("zoo")
    fsdd = (ROOT / ".." / "shared" / "data" / "fsdd").resolve()
    if not fsdd.is_dir():
        pytest.skip(f"no FSDD copy at {fsdd}")
    model = zoo.create("resnet", n_classes=10, width=8, n_blocks=1)
    torch.save({"model": "resnet", "config": {"n_classes": 10, "width": 8, "n_blocks": 1}, "state_dict": model.state_dict()}, tmp_path / "resnet.pt")
    code, out, err = run(capsys, tmp_path / "resnet.pt", "--calibrate", f"fsdd:{fsdd}", "--calibration-size", 16, "--T", 4, "--no-learn-tau")
    assert code == 0, err
    snn = ann2snn.load(tmp_path / "resnet.snn.pt")
    assert snn.input_shape == model.input_spec.shape and all(e.threshold for e in snn.report.neurons)


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("ann2snn") == "ann2snn.cli:main"


def test_tools_convert_script_runs(files):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "convert.py"), str(files / "model.pt2"), "-o", str(files / "snn.pt"), "--calibrate", str(files / "calib.pt")],
        capture_output=True, text=True, timeout=120, cwd=files,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and ann2snn.load(files / "snn.pt").T == 25
    assert result.stderr == ""  # no warnings from loading the exported program
