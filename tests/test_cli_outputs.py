"""``ann2snn convert``'s outputs and messages: every output checked before any work (the drawing's
format, files it did not write, inputs and data folders never replaced), all of them put in
place or none, argument errors and unreadable model files in one ``error:`` line, and the
(inputs, targets) pair of --evaluate accepted by --calibrate."""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ann2snn import cli
from ann2snn.cli import main


class Tiny(nn.Module):
    """Conv1d + ReLU + linear on [1, 16] inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.fc = nn.Linear(2 * 14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Evil:
    """Unpickling it would run a shell command: a malicious ``__reduce__`` (never unpickled here)."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture
def folder(tmp_path) -> Path:
    """A folder with an exported program ``model.pt2``, calibration inputs ``calib.pt`` and an
    (inputs, targets) pair ``test.pt``."""
    torch.manual_seed(0)
    model = Tiny().eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 16),)), tmp_path / "model.pt2")
    torch.save(torch.randn(16, 1, 16), tmp_path / "calib.pt")
    inputs = torch.randn(12, 1, 16)
    torch.save((inputs, model(inputs).argmax(1)), tmp_path / "test.pt")
    return tmp_path


def run(capsys, *args: object, plugins: list | None = None) -> tuple[int, str, str]:
    code = main(["convert", *map(str, args)], plugins=plugins or [])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(code: int, err: str, *words: str) -> str:
    """The single ``error:`` line of a failed run, holding every word in ``words``."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden staging included) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1, 2: the drawing's name is checked before any work --------------------------------------------
@pytest.mark.parametrize(("name", "said"), [("drawing", "has no suffix"), ("d.pt", "has the suffix .pt, not an image format")])
def test_a_drawing_name_without_an_image_suffix_is_refused_before_any_work(folder, capsys, name, said):
    before = snapshot(folder)
    code, out, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--report", folder / "r.md", "--draw", folder / name)
    one_error_line(code, err, said, ".png, .pdf or .svg")
    assert out == "" and snapshot(folder) == before  # no conversion ran; nothing written


def test_a_drawing_name_is_checked_before_the_model_is_read(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "missing.pt2", "--draw", tmp_path / "d.pt")
    one_error_line(code, err, "--draw", "not an image format")


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_a_drawing_is_written_and_replaced_on_the_next_run(folder, capsys, suffix):
    pytest.importorskip("matplotlib")
    drawing = folder / f"graph{suffix}"
    for _ in range(2):  # the second run replaces the first one's drawing without --overwrite
        code, out, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--draw", drawing)
        assert code == 0 and drawing.stat().st_size > 0 and out.rstrip().endswith(f"{drawing}"), err


# -- 1: all outputs or none --------------------------------------------------------------------------
def failing_on(name: str, monkeypatch) -> None:
    """Make the rename that puts ``name`` in place fail, as a full disk or a vanished folder would."""
    place = cli.Outputs._place

    def flaky(source: Path, target: Path) -> None:
        if target.name == name:
            raise OSError(28, "No space left on device")
        place(source, target)

    monkeypatch.setattr(cli.Outputs, "_place", staticmethod(flaky))


def test_a_failure_while_putting_outputs_in_place_leaves_the_earlier_ones_as_they_were(folder, capsys, monkeypatch):
    outputs = ("-o", folder / "snn.pt", "--report", folder / "r.md")
    assert run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", *outputs)[0] == 0
    before = snapshot(folder)
    failing_on("r.md", monkeypatch)
    code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--T", "3", *outputs)
    one_error_line(code, err, "cannot put the outputs in place", "nothing was changed")
    assert snapshot(folder) == before  # the SNN written first was taken back and the old one restored


def test_a_failure_while_putting_outputs_in_place_removes_new_files(folder, capsys, monkeypatch):
    before = snapshot(folder)
    failing_on("r.md", monkeypatch)
    code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "-o", folder / "snn.pt", "--report", folder / "r.md")
    one_error_line(code, err, "nothing was changed")
    assert snapshot(folder) == before


# -- 3: outputs never replace other files, inputs or data ------------------------------------------
@pytest.mark.parametrize("option", ["--report", "--nir", "--draw"])
def test_an_existing_file_is_not_replaced_by_an_output_unless_told(folder, capsys, option):
    if option == "--nir":
        pytest.importorskip("nir")
    target = folder / {"--report": "notes.md", "--nir": "graph.nir", "--draw": "photo.png"}[option]
    target.write_bytes(b"somebody's file")
    code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", option, target)
    one_error_line(code, err, f"{option} {target} exists", "left untouched", "--overwrite")
    assert target.read_bytes() == b"somebody's file" and not (folder / "model.snn.pt").exists()


def test_an_existing_file_is_replaced_with_overwrite(folder, capsys):
    (folder / "notes.txt").write_text("old notes")
    code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--report", folder / "notes.txt", "--overwrite")
    assert code == 0 and (folder / "notes.txt").read_text().startswith("| node |"), err


def test_an_own_report_and_nir_graph_are_replaced_without_being_asked(folder, capsys):
    pytest.importorskip("nir")
    outputs = ("--report", folder / "r.md", "--nir", folder / "g.nir")
    for T in ("4", "5"):
        code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--T", T, *outputs)
        assert code == 0, err
    assert "T=5" in (folder / "r.md").read_text()


def test_an_output_is_never_an_input_even_with_overwrite(folder, capsys):
    (folder / "link.pt").symlink_to(folder / "calib.pt")
    before = snapshot(folder)
    code, _, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "calib.pt", "--report", folder / "link.pt", "--overwrite")
    one_error_line(code, err, "is the same file as --calibrate")
    assert snapshot(folder) == before


class DataDirPlugin(cli.CliPlugin):
    """A plugin with a ``--data-dir`` option, like the audio zoo's."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", help="a data folder")


@pytest.mark.parametrize("how", ["NAME:PATH", "folder", "--data-dir"])
def test_an_output_never_goes_into_an_input_data_folder(folder, capsys, how):
    data = folder / "data"
    (data / "recordings").mkdir(parents=True)
    (data / "recordings" / "0_a_0.wav").write_bytes(b"RIFF....WAVE")
    before = snapshot(folder)
    source = {"NAME:PATH": [f"fsdd:{data}"], "folder": [data], "--data-dir": ["fsdd", "--data-dir", data]}[how]
    for output in (data / "recordings" / "0_a_0.wav", data / "new.md"):
        code, _, err = run(capsys, folder / "model.pt2", "--calibrate", *source, "--report", output, "--overwrite", plugins=[DataDirPlugin()])
        one_error_line(code, err, f"--report {output} is inside the data folder", "write it elsewhere")
    assert snapshot(folder) == before


# -- 4: one line for argument errors and unreadable model files -------------------------------------
@pytest.mark.parametrize("args", [["--T", "0"], ["--batch-size", "x"], ["--no-such-flag"]])
def test_argument_errors_are_one_line(folder, capsys, args):
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(folder / "model.pt2"), *args], plugins=[])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ann2snn") and ": error: " in err and "usage:" not in err and "--help" in err


def test_space_separated_steps_are_pointed_to_commas(folder, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(folder / "model.pt2"), "--T", "8", "16"], plugins=[])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1 and "unrecognized arguments: 16; " in err and "--T 8,16" in err, err


def test_a_plain_pickle_is_refused_without_torch_warnings(tmp_path, capsys):
    with (tmp_path / "model.pkl").open("wb") as file:
        pickle.dump(Tiny(), file, protocol=4)
    with warnings.catch_warnings(record=True) as caught:  # what would print on stderr outside pytest
        warnings.simplefilter("always")
        code, _, err = run(capsys, tmp_path / "model.pkl")
    one_error_line(code, err, "holds pickled Python objects", "--trust-pickle")
    assert [str(w.message) for w in caught] == []


def test_a_text_file_is_not_a_model_file_and_the_kinds_are_listed(tmp_path, capsys):
    (tmp_path / "model.txt").write_text("elephant\n")
    code, _, err = run(capsys, tmp_path / "model.txt")
    line = one_error_line(code, err, "is not a model file", "torch.export program (.pt2)", "ONNX model (.onnx)")
    assert "KeyError" not in line


@pytest.mark.parametrize("name", ["model.pt2", "model.pt"])
def test_a_truncated_model_file_is_said_to_be_damaged(folder, capsys, name):
    data = (folder / "model.pt2").read_bytes()
    (folder / f"cut.{name}").write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, folder / f"cut.{name}")
    one_error_line(code, err, "is truncated or damaged")


def test_pickled_code_in_a_torch_file_is_refused_in_our_words(tmp_path, capsys):
    torch.save({"weights": Evil()}, tmp_path / "evil.pt")
    assert zipfile.is_zipfile(tmp_path / "evil.pt")
    code, out, err = run(capsys, tmp_path / "evil.pt")
    line = one_error_line(code, err, f"holds pickled code (it calls {os.system.__module__}.system", "--trust-pickle only if you trust")
    assert "weights_only" not in line and "will likely succeed" not in line and "pwned" not in out


def test_a_state_dict_of_an_own_model_suggests_exporting_it(tmp_path, capsys):
    torch.save(Tiny().state_dict(), tmp_path / "weights.pt")
    code, _, err = run(capsys, tmp_path / "weights.pt")
    one_error_line(code, err, "plain state dict", "torch.export", "torch.onnx.export")


# -- 5: --calibrate reads the pair that --evaluate documents ----------------------------------------
def test_calibrate_takes_the_inputs_of_an_evaluation_pair(folder, capsys):
    code, out, err = run(capsys, folder / "model.pt2", "--calibrate", folder / "test.pt", "--evaluate", folder / "test.pt", "-o", folder / "snn.pt")
    assert code == 0 and (folder / "snn.pt").exists() and "no --calibrate data" not in err, err
    assert "calibration" not in err and "CNN accuracy" in out
