"""The command's messages: fixes named as its flags, notes only where they apply, warnings as its
own lines, the evaluation subset, report sources of exported programs, and unreadable model files."""

import importlib.util
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import ann2snn
from ann2snn.cli import balanced_subset, in_cli_terms, main
from ann2snn.cli_messages import without_fx_excerpts


class ConvNet(nn.Module):
    """Conv1d + ReLU + flatten + linear, on [1, 32] inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 5, stride=2)
        self.fc = nn.Linear(4 * 14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


class SigmoidNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(x))


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = torch.relu(x)
        return self.fc(x)


def run(capsys, *args: object) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)], plugins=[])
    out, err = capsys.readouterr()
    return code, out, err


def export(model: nn.Module, example: torch.Tensor, path) -> None:
    torch.manual_seed(0)
    torch.export.save(torch.export.export(model.eval(), (example,)), path)


@pytest.fixture
def conv_pt2(tmp_path):
    torch.manual_seed(0)
    export(ConvNet(), torch.randn(2, 1, 32), tmp_path / "conv.pt2")
    return tmp_path / "conv.pt2"


# -- 1: fixes in the command's flags ----------------------------------------------------------------
def test_python_argument_fixes_are_named_as_flags(tmp_path, capsys):
    torch.save(SigmoidNet().eval(), tmp_path / "sigmoid.pt")
    code, _, err = run(capsys, tmp_path / "sigmoid.pt", "--trust-pickle")
    assert code == 2 and "--allow-analog keeps them as analog" in err and "allow_analog=True" not in err, err
    code, _, err = run(capsys, tmp_path / "sigmoid.pt", "--trust-pickle", "--tau-per-channel")
    assert code == 2 and err.strip() == "error: --tau-per-channel needs --learn-tau"


def test_fixes_without_a_flag_say_to_convert_from_python(tmp_path, capsys):
    torch.save(Branching().eval(), tmp_path / "branching.pt")
    code, _, err = run(capsys, tmp_path / "branching.pt", "--trust-pickle")
    assert code == 2 and "leaf_modules" in err
    assert "no flag in this command: to use them, convert from Python" in err and "with --allow-analog it then stays analog" in err


def test_input_shape_advice_names_the_option_not_snn_attributes(conv_pt2, capsys):
    torch.save(torch.randn(4, 1, 50), conv_pt2.with_name("calib50.pt"))
    code, _, err = run(capsys, conv_pt2, "--calibrate", conv_pt2.with_name("calib50.pt"))
    assert code == 2 and "--input-shape 1,50" in err, err
    assert "snn.input_shape" not in err and "convert(" not in err


def test_in_cli_terms_turns_settings_into_flags():
    said = in_cli_terms("neuron='norse' has a fixed time constant: use learn_tau=False, or neuron='subtract'; tau=float('inf'); tuned for T=25")
    assert said == "--neuron norse has a fixed time constant: use --no-learn-tau, or --neuron subtract; --tau inf; tuned for T=25"


# -- 2: the torch.export note only for graph errors ---------------------------------------------------
def test_exported_program_note_only_on_errors_about_its_ops(conv_pt2, tmp_path, capsys):
    nan = torch.randn(8, 1, 32)
    nan[0, 0, 0] = float("nan")
    torch.save(nan, tmp_path / "nan.pt")
    code, _, err = run(capsys, conv_pt2, "--calibrate", tmp_path / "nan.pt")
    assert code == 2 and "NaN" in err and "torch.export program" not in err, err
    torch.save(torch.randn(4, 1, 8, 8), tmp_path / "calib2d.pt")
    code, _, err = run(capsys, conv_pt2, "--calibrate", tmp_path / "calib2d.pt")
    assert code == 2 and "does not match the converted network" in err and "torch.export program" not in err, err
    export(SigmoidNet(), torch.randn(2, 4), tmp_path / "sigmoid.pt2")
    code, _, err = run(capsys, tmp_path / "sigmoid.pt2")
    assert code == 2 and "sigmoid.pt2 is a torch.export program" in err


# -- 3: a network saved as a pickle --------------------------------------------------------------------
def test_a_pickled_network_is_one_warning_about_the_output(tmp_path, capsys):
    export(SigmoidNet(), torch.randn(2, 4), tmp_path / "sigmoid.pt2")
    torch.save(torch.randn(16, 4), tmp_path / "calib.pt")
    output = tmp_path / "sigmoid.snn.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, tmp_path / "sigmoid.pt2", "--calibrate", tmp_path / "calib.pt", "--allow-analog", "-o", output)
    assert code == 0, err
    assert not [w for w in caught if "saved as a pickle" in str(w.message)]  # not a raw Python warning
    lines = [line for line in err.splitlines() if "pickle" in line]
    assert lines == [f"warning: {output} is saved as a pickle, {lines[0].partition(' is saved as a pickle, ')[2]}"], err
    assert f"ann2snn.load({str(output)!r}, trust_pickle=True)" in lines[0] and "sigmoid" in lines[0] and ".partial" not in err
    assert isinstance(ann2snn.load(output, trust_pickle=True), ann2snn.SpikingNetwork)


# -- 4: --evaluate-size -------------------------------------------------------------------------------
def test_balanced_subset_is_even_seeded_and_sorted():
    targets = torch.tensor([0] * 50 + [1] * 3 + [2] * 10)
    chosen = balanced_subset(targets, 20)
    assert torch.equal(chosen, balanced_subset(targets, 20)) and torch.equal(chosen, chosen.sort().values)
    assert len(chosen.unique()) == 20 and torch.bincount(targets[chosen]).tolist() in ([8, 3, 9], [9, 3, 8])
    sorted_digits = torch.arange(10).repeat_interleave(30)  # a test split sorted by class, like FSDD's
    counts = torch.bincount(sorted_digits[balanced_subset(sorted_digits, 64)], minlength=10)
    assert counts.min() >= 6 and counts.max() <= 7


def test_evaluate_size_takes_every_class(tmp_path, capsys):
    always_class_0 = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3))
    with torch.no_grad():
        always_class_0[2].weight.zero_()
        always_class_0[2].bias.copy_(torch.tensor([1.0, 0.0, 0.0]))
    export(always_class_0, torch.randn(2, 4), tmp_path / "model.pt2")
    torch.save((torch.randn(60, 4), torch.arange(3).repeat_interleave(20)), tmp_path / "eval.pt")  # sorted by class
    code, out, err = run(capsys, tmp_path / "model.pt2", "--evaluate", tmp_path / "eval.pt", "--evaluate-size", 12, "--T", 2)
    assert code == 0, err
    assert "evaluation on 12 examples of" in out and "class-balanced subset of 60" in out
    assert "CNN accuracy 33.3 %" in out  # the first 12 would all be class 0: 100 %


def test_evaluate_size_help_says_how_the_subset_is_drawn(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"], plugins=[])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "as many of each class as the data allow, drawn with a fixed seed" in help_text


# -- 5: report sources of exported programs -----------------------------------------------------------
def test_report_of_an_exported_program_names_the_users_source(conv_pt2, capsys):
    torch.save(torch.randn(16, 1, 32), conv_pt2.with_name("calib.pt"))
    code, out, err = run(capsys, conv_pt2, "--calibrate", conv_pt2.with_name("calib.pt"), "--T", 2)
    assert code == 0, err
    assert "eval_with_key" not in out
    assert "test_cli_messages.py:" in out and "module `fc`" in out  # the line of ConvNet.forward, and the layer


# -- 6: model files that are not models ---------------------------------------------------------------
def test_a_directory_or_an_empty_file_is_named_as_such(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    code, _, err = run(capsys, tmp_path / "folder")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'folder'} is a directory: give the model file in it"
    (tmp_path / "empty.pt").write_bytes(b"")
    code, _, err = run(capsys, tmp_path / "empty.pt")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'empty.pt'} is empty (0 bytes): not a model file"


def test_a_pickled_class_that_cannot_be_imported_names_pythonpath(tmp_path, capsys, monkeypatch):
    (tmp_path / "user_models_for_cli.py").write_text("from torch import nn\n\nclass Net(nn.Sequential):\n    pass\n")
    spec = importlib.util.spec_from_file_location("user_models_for_cli", tmp_path / "user_models_for_cli.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "user_models_for_cli", module)
    spec.loader.exec_module(module)
    torch.save(module.Net(nn.Linear(4, 2)), tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, "user_models_for_cli")
    code, _, err = run(capsys, tmp_path / "net.pt", "--trust-pickle")
    assert code == 2 and "No module named 'user_models_for_cli'" in err
    assert "add the folder that holds module 'user_models_for_cli'" in err and "PYTHONPATH" in err


# -- 7: a model that fails in fx's generated code ------------------------------------------------------
class FixedFeaturesNet(ConvNet):
    """ConvNet whose features are reshaped to a fixed 56 (``view(batch, 56)``): read back from a
    torch.export program, the reshape is a call in fx's generated code, which fails on longer inputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x))
        return self.fc(y.view(y.size(0), 56))


@pytest.mark.parametrize("option, expected", [("--input-shape", "the model does not take inputs of shape [batch, 1, 40]"), ("--evaluate", "--evaluate: the model fails")])
def test_a_failure_in_generated_code_is_one_line(tmp_path, capsys, option, expected):
    """torch.fx's excerpt of its generated code (traceback, code lines, ``<--- HERE``) stays off
    stderr: the command's one error line says what failed."""
    export(FixedFeaturesNet(), torch.randn(2, 1, 32), tmp_path / "net.pt2")
    torch.save((torch.randn(9, 1, 40), torch.zeros(9, dtype=torch.long)), tmp_path / "eval.pt")
    code, _, err = run(capsys, tmp_path / "net.pt2", option, "1,40" if option == "--input-shape" else tmp_path / "eval.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {expected}") and "is invalid for input of size" in err, err
    assert not (tmp_path / "net.snn.pt").exists()


class TransposingNet(nn.Module):
    """Takes [L, 1] examples (channels last) and transposes them for its Conv1d: on [L] examples
    the transpose raises IndexError, which is not a RuntimeError."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def traced_pt(tmp_path):
    """A traced TransposingNet, saved as a GraphModule; its data is [B, 32, 1]."""
    torch.manual_seed(0)
    torch.save(fx.symbolic_trace(TransposingNet().eval()), tmp_path / "gm.pt")
    return tmp_path / "gm.pt"


def test_a_failure_in_generated_code_left_uncaught_keeps_its_excerpt(traced_pt, capsys):
    """An error that the command does not say in one line is left uncaught; fx cut its traceback
    at the generated code, so fx's excerpt of that code is the only line that says where the model
    failed, and it stays on stderr."""
    model = torch.load(traced_pt, weights_only=False)
    with pytest.raises(IndexError, match="Dimension out of range"), without_fx_excerpts(lambda error: False):
        model(torch.randn(2, 32))
    err = capsys.readouterr().err
    assert "generated forward function" in err and "x.transpose(1, 2)" in err and "<--- HERE" in err, err


def test_calibration_data_of_the_wrong_rank_is_one_line(traced_pt, tmp_path, capsys):
    """The same IndexError while calibrating is the network's input error: one line, no excerpt."""
    torch.save([torch.randn(4, 32)], tmp_path / "calib.pt")  # [B, 32]: the transpose fails
    code = main(["convert", str(traced_pt), "--trust-pickle", "--calibrate", str(tmp_path / "calib.pt")], plugins=[])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Dimension out of range" in err, err


def test_an_excerpt_is_kept_only_for_its_own_error(traced_pt, capsys):
    """The excerpt of a failure handled on the way is not shown for another, later error."""
    model = torch.load(traced_pt, weights_only=False)
    with pytest.raises(ValueError, match="later"), without_fx_excerpts(lambda error: False):
        with pytest.raises(IndexError):
            model(torch.randn(2, 32))
        raise ValueError("later")
    assert "generated forward function" not in capsys.readouterr().err


@pytest.mark.parametrize("traced", [True, False])
def test_a_failure_on_the_evaluation_data_is_one_line_naming_where(tmp_path, capsys, traced):
    """Any error of the model on the evaluation data (here IndexError) is the command's one line,
    naming the data and where the model failed: the node of a traced model, whose generated code
    leaves no traceback, or the source line of a plain one."""
    torch.manual_seed(0)
    model = TransposingNet().eval()
    torch.save(fx.symbolic_trace(model) if traced else model, tmp_path / "model.pt")
    torch.save((torch.randn(9, 32), torch.zeros(9, dtype=torch.long)), tmp_path / "eval.pt")  # [B, 32], not [B, 32, 1]
    code, _, err = run(capsys, tmp_path / "model.pt", "--trust-pickle", "--input-shape", "32,1", "--evaluate", tmp_path / "eval.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: --evaluate: the model fails on the evaluation inputs of shape (9, 32)") and str(tmp_path / "eval.pt") in err, err
    where = "at node `transpose` (transpose) on its input [batch, 32]" if traced else "test_cli_messages.py:"
    assert where in err and "IndexError: Dimension out of range" in err, err
    if not traced:
        assert "`x = x.transpose(1, 2)`" in err, err
    assert not (tmp_path / "model.snn.pt").exists()
