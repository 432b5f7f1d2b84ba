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
from ann2snn.cli import main

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


def run(capsys, *args: object, plugins: tuple = ()) -> tuple[int, str, str]:
    """The compiler's command alone (no plugin: what works without the zoo), or with ``plugins``."""
    code = main(["convert", *map(str, args)], plugins=list(plugins))
    out, err = capsys.readouterr()
    return code, out, err


def run_zoo(capsys, *args: object) -> tuple[int, str, str]:
    """The command as tools/convert.py composes it: with the audio zoo's plugin."""
    from ann2snn_zoo.cli_plugins import ZooPlugin

    return run(capsys, *args, plugins=(ZooPlugin(),))


def test_exported_program_converts_like_the_module(files, capsys):
    code, out, err = run(capsys, files / "model.pt2", "-o", files / "snn.pt", "--calibrate", files / "calib.pt", "--no-learn-tau", "--T", 8)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["node", "before", "after", "threshold", "source"]
    assert "gated max pool (by running spike count) `relu_neuron_max_pool1d_gated.pool`" in out  # printed by ConversionReport: names whole
    assert any(line.startswith("1 ReLU sites -> spiking neurons, 1 max pools rewritten, 1 batch norms folded, 0 left analog, 0 dropped") for line in lines)
    assert f"wrote {files / 'snn.pt'}" in out
    snn = ann2snn.load(files / "snn.pt")
    reference = ann2snn.convert(small_net(), T=8, learn_tau=False, calibration=list(torch.load(files / "calib.pt").split(64)))
    x = torch.randn(5, 1, 32)  # the program was exported with batch 2: the guards are gone
    with torch.no_grad():
        assert torch.allclose(snn(x), reference(x), atol=1e-6)


def test_outputs_report_nir_drawing_profile(files, capsys):
    code, out, err = run(
        capsys,
        files / "model.pt2",
        "-o",
        files / "snn.pt",
        "--calibrate",
        files / "calib.pt",
        "--maxpool",
        "avg",
        "--no-learn-tau",
        "--report",
        files / "report.md",
        "--nir",
        files / "snn.nir",
        "--draw",
        files / "graph.png",
        "--profile",
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


def test_conversion_warnings_print_once_as_the_commands_own_lines(files, capsys):
    """Warnings from the conversion (the report's, and others such as a percentile that looks like
    a fraction) reach stderr once each as "warning: ..." lines, not also as Python warnings that
    name a line of cli.py."""
    import warnings

    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        code, out, err = run(capsys, files / "pickled.pt", "-o", files / "snn.pt", "--input-shape", "1,32", "--trust-pickle", "--percentile", "0.5")
    assert code == 0, err
    assert not [w for w in escaped if issubclass(w.category, ann2snn.ConversionWarning)]
    lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any("looks like a fraction" in line for line in lines) and any("thresholds are not balanced" in line for line in lines)
    assert len(lines) == len(set(lines))


def test_help_mentions_the_pickle_risk(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "arbitrary code" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("not_a_model", "is not a model file"),
        ("untraceable", "cannot trace Untraceable"),
        ("unsupported_op", "unsupported op Sigmoid"),
        ("wrong_input_shape", "does not take inputs of shape [batch, 1, 40]"),
        ("state_dict_without_model", "plain state dict: weights without the architecture, and no plugin of the command reads it"),
        ("calibration_shape", "does not match the converted network"),
        ("nir_of_max_pool", "max pooling has no NIR primitive"),
    ],
)
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
    zoo = pytest.importorskip("ann2snn_zoo")
    torch.manual_seed(0)
    model = zoo.create("m5", n_classes=4, n_channel=8).eval()
    config = {"n_classes": 4, "n_channel": 8}
    torch.save({"model": "m5", "config": config, "state_dict": model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "m5.pt")
    torch.save(model.state_dict(), tmp_path / "m5_weights.pt")
    x = torch.randn(6, 1, 8000, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "calib.pt")
    code, out, err = run_zoo(capsys, tmp_path / "m5.pt", "--calibrate", tmp_path / "calib.pt", "--no-learn-tau", "--T", 6)
    assert code == 0, err
    assert "4 ReLU sites -> spiking neurons, 4 max pools rewritten, 4 batch norms folded" in out
    snn = ann2snn.load(tmp_path / "m5.snn.pt")  # default output name
    reference = ann2snn.convert(model, T=6, learn_tau=False, calibration=[x])
    with torch.no_grad():
        assert torch.allclose(snn(x), reference(x), atol=1e-6)
    code, out, err = run_zoo(capsys, tmp_path / "m5_weights.pt", "--model", "m5", "--model-config", '{"n_classes": 4, "n_channel": 8}', "-o", tmp_path / "b.pt")
    assert code == 0, err
    code, out, err = run_zoo(capsys, tmp_path / "m5_weights.pt", "--model", "m5", "--model-config", '{"n_classes": 5, "n_channel": 8}')
    assert code == 2 and "do not fit zoo model 'm5'" in err


@pytest.mark.slow
def test_zoo_checkpoint_calibrated_on_synthetic_data(tmp_path, capsys):
    zoo = pytest.importorskip("ann2snn_zoo")
    model = zoo.create("m5", n_classes=10, n_channel=8)
    torch.save({"model": "m5", "config": {"n_classes": 10, "n_channel": 8}, "state_dict": model.state_dict()}, tmp_path / "m5.pt")
    code, out, err = run_zoo(capsys, tmp_path / "m5.pt", "--calibrate", "synthetic", "--calibration-size", 16, "--T", 4)
    assert code == 0, err
    assert ann2snn.load(tmp_path / "m5.snn.pt").input_shape == (1, 8000)


def test_zoo_checkpoint_calibrated_on_fsdd(tmp_path, capsys):
    zoo = pytest.importorskip("ann2snn_zoo")
    fsdd = (ROOT / ".." / "shared" / "data" / "fsdd").resolve()
    if not fsdd.is_dir():
        pytest.skip(f"no FSDD copy at {fsdd}")
    model = zoo.create("resnet", n_classes=10, width=8, n_blocks=1)
    torch.save({"model": "resnet", "config": {"n_classes": 10, "width": 8, "n_blocks": 1}, "state_dict": model.state_dict()}, tmp_path / "resnet.pt")
    code, out, err = run_zoo(capsys, tmp_path / "resnet.pt", "--calibrate", f"fsdd:{fsdd}", "--calibration-size", 16, "--T", 4, "--no-learn-tau")
    assert code == 0, err
    snn = ann2snn.load(tmp_path / "resnet.snn.pt")
    assert snn.input_shape == model.input_spec.shape and all(e.threshold for e in snn.report.neurons)


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("ann2snn") == "ann2snn.cli:main"


def test_tools_convert_script_runs(files):
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "convert.py"), str(files / "model.pt2"), "-o", str(files / "snn.pt"), "--calibrate", str(files / "calib.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=files,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and ann2snn.load(files / "snn.pt").T == 25
    assert result.stderr == ""  # no warnings from loading the exported program


# -- the compiler's command without the zoo: plugins, ONNX, free input sizes ---------------------------
def test_the_command_never_imports_the_zoo(files):
    """Converting an exported program and a .pt calibration file loads no zoo module."""
    script = (
        "import sys\nfrom ann2snn.cli import main\n"
        f"code = main(['convert', {str(files / 'model.pt2')!r}, '-o', {str(files / 'snn.pt')!r}, '--calibrate', {str(files / 'calib.pt')!r}, '--T', '4'], plugins=[])\n"
        "assert code == 0, code\nloaded = [m for m in sys.modules if m.split('.')[0] in ('zoo', 'ann2snn_zoo')]\nassert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=files, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "import zoo" not in (ROOT / "ann2snn" / "cli.py").read_text() and "ann2snn_zoo" not in (ROOT / "ann2snn" / "cli.py").read_text()


class ToyPlugin:
    """A plugin of another application: a dict format {'toy': n_out} and a data set named 'toy'."""

    name, model_help, data_help = "toy", "a toy dict", "the toy data set"

    def add_arguments(self, parser):
        parser.add_argument("--toy-scale", type=float, default=1.0, help="scale of the toy inputs (default: 1.0)")

    def model_from_dict(self, payload, args, origin):
        if "toy" not in payload:
            return None
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14, int(payload["toy"]))).eval(), (1, 16)

    def data_set_names(self):
        return ("toy",)

    def examples(self, option, source, split, limit, args, model, shape):
        if source != "toy":
            return None
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        return [(args.toy_scale * torch.randn(*shape, generator=g), k % 3) for k in range(limit or 12)]


def test_a_plugin_adds_options_models_and_data_sets(tmp_path, capsys):
    torch.save({"toy": 3}, tmp_path / "toy.pt")
    code, out, err = run(
        capsys, tmp_path / "toy.pt", "--calibrate", "toy", "--calibration-size", 8, "--evaluate", "toy", "--T", 4, "--toy-scale", 2,
        plugins=(ToyPlugin(),),
    )  # fmt: skip
    assert code == 0, err
    assert "evaluation on 12 examples of the test split of toy" in out
    assert ann2snn.load(tmp_path / "toy.snn.pt").input_shape == (1, 16)
    code, out, err = run(capsys, tmp_path / "toy.pt", "--calibrate", "nothing", plugins=(ToyPlugin(),))
    assert code == 2 and "--calibrate nothing: no such file, and not a named data set (toy; e.g. toy:PATH)" in err
    with pytest.raises(SystemExit):
        main(["convert", "--help"], plugins=[ToyPlugin()])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--toy-scale" in help_text and "or a toy dict" in help_text and "or the toy data set" in help_text


def test_without_plugins_a_dict_or_a_data_set_name_says_what_works(files, capsys):
    torch.save({"model": "m5", "config": {}, "state_dict": {}}, files / "checkpoint.pt")
    code, out, err = run(capsys, files / "checkpoint.pt")
    assert code == 2 and "no plugin of the command reads it" in err and "torch.export program (.pt2)" in err
    code, out, err = run(capsys, files / "model.pt2", "--calibrate", "fsdd")
    assert code == 2 and err.strip() == "error: --calibrate fsdd: no such file"


def test_installed_plugins_come_from_entry_points_and_a_broken_one_is_named(files, capsys, monkeypatch):
    import importlib.metadata
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["ann2snn.cli_plugins"]
    assert declared == {"zoo": "ann2snn_zoo.cli_plugins:ZooPlugin"}
    broken = importlib.metadata.EntryPoint("broken", "no_such_module_here:Plugin", "ann2snn.cli_plugins")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken] if group == "ann2snn.cli_plugins" else [])
    torch.save(small_net().state_dict(), files / "weights.pt")
    assert main(["convert", str(files / "weights.pt")]) == 2
    err = capsys.readouterr().err
    assert "installed plugins that failed to load: broken (ModuleNotFoundError: No module named 'no_such_module_here')" in err


def test_the_zoo_plugin_is_the_installed_one():
    pytest.importorskip("ann2snn_zoo")
    from ann2snn_zoo.cli_plugins import ZooPlugin

    import importlib.metadata

    assert [entry.load() for entry in importlib.metadata.entry_points(group="ann2snn.cli_plugins") if entry.name == "zoo"] == [ZooPlugin]


class FreeLength(nn.Module):
    """Conv + ReLU + global average pooling: any input length."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool1d(F.relu(self.conv(x)), 1).flatten(1))


def test_onnx_model_with_a_free_length(tmp_path, capsys):
    pytest.importorskip("onnx")
    pytest.importorskip("onnx2torch")
    import warnings

    torch.manual_seed(0)
    model = FreeLength().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(2, 1, 32),), str(tmp_path / "free.onnx"), dynamo=False, input_names=["x"], output_names=["y"],
            opset_version=17, dynamic_axes={"x": {0: "batch", 2: "time"}, "y": {0: "batch"}},
        )  # fmt: skip
    torch.save(torch.randn(16, 1, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "calib.pt")
    for flags in (["--profile"], ["--nir", tmp_path / "x.nir", "--maxpool", "avg"]):  # need a concrete shape: the file says [1, None]
        flag = flags[0]
        code, out, err = run(capsys, tmp_path / "free.onnx", *flags)
        assert code == 2 and f"{flag} needs a concrete input shape" in err and "[batch, 1, None]" in err and "pass --input-shape" in err, err
    code, out, err = run(capsys, tmp_path / "free.onnx", "--calibrate", tmp_path / "calib.pt", "--profile", "--no-learn-tau", "--T", 8)
    assert code == 0, err
    snn = ann2snn.load(tmp_path / "free.snn.pt")
    assert snn.input_shape == (1, None)  # the ONNX graph's free length stays free
    reference = ann2snn.convert(model, T=8, learn_tau=False, calibration=list(torch.load(tmp_path / "calib.pt").split(64)), input_shape=(1, None))
    x = torch.randn(3, 1, 50)
    with torch.no_grad():
        assert torch.allclose(snn(x), reference(x), atol=1e-5)
    code, out, err = run(capsys, tmp_path / "free.onnx", "--input-shape", "1,40", "--profile", "-o", tmp_path / "b.pt")
    assert code == 0 and "profiling on random inputs" in out, err
