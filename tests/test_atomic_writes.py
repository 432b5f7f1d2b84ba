"""Writes are all or nothing: a writer that fails midway (after part of the file reached the disk)
leaves the previous file byte for byte and no partial or temporary file beside it. Checked for
``ann2snn.save``, harness checkpoints, NIR export, the experiment's report files (CSV, markdown,
plots, ``results.jsonl`` repair) and the ``ann2snn convert`` outputs, which are replaced together
or not at all.

Each failing writer first writes its real output, then cuts the file it wrote to half its size and
raises: what a full disk or a crash leaves. A writer that writes straight to the target therefore
leaves a half file where the previous one was, and fails these tests."""

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.cli import main as cli_main
from ann2snn_zoo.harness import load_checkpoint, save_checkpoint
from ann2snn_zoo.harness.summary import write_outputs


class DiskFull(OSError):
    pass


def cut_in_half(path) -> None:
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def failing_midway(real, path_argument: int = 1):
    """``real`` (a writer taking the output path as positional argument ``path_argument``), made to
    fail after writing half of its output."""

    def write(*args, **kwargs):
        real(*args, **kwargs)
        cut_in_half(args[path_argument])
        raise DiskFull("No space left on device (planted)")

    return write


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} | {str(p.relative_to(folder)) + "/": b"" for p in folder.rglob("*") if p.is_dir()}


def small_snn(T: int) -> ann2snn.SpikingNetwork:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 12, 2)).eval()
    return ann2snn.convert(model, T=T, calibration=[torch.randn(8, 1, 16)], input_shape=(1, 16))


def test_save_failing_midway_keeps_the_previous_network(tmp_path, monkeypatch):
    target = tmp_path / "snn.pt"
    ann2snn.save(small_snn(T=4), target)
    before = listing(tmp_path)
    monkeypatch.setattr(torch, "save", failing_midway(torch.save))
    with pytest.raises(DiskFull):
        ann2snn.save(small_snn(T=8), target)
    monkeypatch.undo()
    assert listing(tmp_path) == before
    assert ann2snn.load(target).T == 4


def test_checkpoint_failing_midway_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "cnn.pt"
    save_checkpoint(target, {"state_dict": {"w": torch.zeros(1000)}, "epoch": 1})
    before = listing(tmp_path)
    monkeypatch.setattr(torch, "save", failing_midway(torch.save))
    with pytest.raises(DiskFull):
        save_checkpoint(target, {"state_dict": {"w": torch.ones(1000)}, "epoch": 2})
    monkeypatch.undo()
    assert listing(tmp_path) == before
    assert load_checkpoint(target)["epoch"] == 1


def test_nir_export_failing_midway_keeps_the_previous_graph(tmp_path, monkeypatch):
    nir = pytest.importorskip("nir")
    from ann2snn.nir_export import export_nir

    target = tmp_path / "snn.nir"
    export_nir(small_snn(T=4), target)
    before = listing(tmp_path)
    monkeypatch.setattr(nir, "write", failing_midway(nir.write, path_argument=0))
    with pytest.raises(DiskFull):
        export_nir(small_snn(T=8), target)
    monkeypatch.undo()
    assert listing(tmp_path) == before
    assert nir.read(target).nodes  # still a whole, readable graph


def result_rows(top1: float) -> list[dict]:
    common = dict(model="m5", seed=0, top5=100.0, loss=0.5, eval_s=0.1)
    return [
        dict(cell="cnn", kind="cnn", top1=top1, epoch_s=1.0, epochs=3, **common),
        *[dict(cell=f"zs{T}", kind="zero-shot", neuron="IF", T=T, encoder="direct", top1=top1 - T, **common) for T in (2, 8)],
        *[dict(cell=f"rt{flag}", kind="retrained", neuron="LIF", T=4, learn_tau=flag, top1=top1 - 1, epoch_s=2.0, snn_cnn_epoch_ratio=2.0,
               firing_rates={"a_neuron": 0.1, "b_neuron": 0.2}, synops=1.0, macs=2.0, energy_pj=1.0, cnn_energy_pj=2.0, **common) for flag in (False, True)],
        dict(cell="scratch", kind="scratch", neuron="LIF", T=4, top1=top1 - 20, epoch_s=2.0, snn_cnn_epoch_ratio=2.0, epochs=1, **common),
    ]  # fmt: skip


def fail_csv(monkeypatch):
    real = csv.DictWriter.writerow
    calls = []

    def writerow(self, row):
        calls.append(row)
        if len(calls) > 2:
            raise DiskFull("No space left on device (planted)")
        return real(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", writerow)


def fail_markdown(monkeypatch):
    monkeypatch.setattr(Path, "write_text", failing_midway(Path.write_text, path_argument=0))


def fail_plot(monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.setattr(Figure, "savefig", failing_midway(Figure.savefig))


@pytest.mark.parametrize("name, fail", [("csv", fail_csv), ("markdown", fail_markdown), ("accuracy_vs_T", fail_plot)])
def test_report_file_failing_midway_is_left_as_it_was(tmp_path, monkeypatch, name, fail):
    out = tmp_path / "run"
    paths = write_outputs(result_rows(90.0), out, finetune_T=4, histories={"cnn-m5-s0": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}]})
    before = listing(out)
    fail(monkeypatch)
    with pytest.raises(DiskFull):
        write_outputs(result_rows(60.0), out, finetune_T=4)
    monkeypatch.undo()
    after = listing(out)
    assert after[paths[name].name] == before[paths[name].name], f"{paths[name].name} changed"
    assert after.keys() == before.keys(), f"left behind: {sorted(after.keys() - before.keys())}"
    write_outputs(result_rows(60.0), out, finetune_T=4)  # the same write, not failing, changes the file: the check above can fail
    assert listing(out)[paths[name].name] != before[paths[name].name]


def test_results_repair_failing_midway_keeps_the_rows(tmp_path, monkeypatch):
    from ann2snn_zoo.harness.run_folder import read_rows

    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps({"cell": c, "top1": 50.0}) + "\n" for c in "abc") + '{"cell": "d", "to')  # a torn last line
    before = listing(tmp_path)
    fail_markdown(monkeypatch)
    with pytest.raises(DiskFull), pytest.warns(UserWarning, match="torn last line"):
        read_rows(path)
    monkeypatch.undo()
    assert listing(tmp_path) == before
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r["cell"] for r in read_rows(path)] == ["a", "b", "c"]
    assert path.read_text().count("\n") == 3 and listing(tmp_path).keys() == before.keys()


# -- the command line: its outputs are replaced together or not at all -----------------------------
@pytest.fixture
def model_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5, stride=2), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 1, 32),)), tmp_path / "model.pt2")
    torch.save(torch.randn(20, 1, 32, generator=torch.Generator().manual_seed(1)), tmp_path / "calib.pt")
    return tmp_path


def convert(folder: Path, T: int, nir: bool = True) -> int:
    extra = ["--nir", str(folder / "snn.nir")] if nir else []
    return cli_main(["convert", str(folder / "model.pt2"), "--calibrate", str(folder / "calib.pt"), "--T", str(T), "--no-learn-tau",
                     "-o", str(folder / "snn.pt"), "--report", str(folder / "report.md"), *extra])  # fmt: skip


@pytest.mark.parametrize("failing", ["-o", "--nir"])
def test_cli_outputs_are_all_replaced_or_none(model_files, monkeypatch, capsys, failing):
    if failing == "--nir":
        nir = pytest.importorskip("nir")
    with_nir = failing == "--nir"
    assert convert(model_files, T=4, nir=with_nir) == 0
    before = listing(model_files)
    if failing == "-o":
        monkeypatch.setattr(torch, "save", failing_midway(torch.save))
    else:
        monkeypatch.setattr(nir, "write", failing_midway(nir.write, path_argument=0))
    capsys.readouterr()
    assert convert(model_files, T=8, nir=with_nir) != 0
    monkeypatch.undo()
    assert "No space left on device" in capsys.readouterr().err
    after = listing(model_files)
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"a failed run changed {changed}"
    assert after.keys() == before.keys(), f"left behind: {sorted(after.keys() - before.keys())}"
    assert convert(model_files, T=8, nir=with_nir) == 0  # the same run, not failing, changes every output
    assert all(listing(model_files)[name] != before[name] for name in ("snn.pt", "report.md"))


def test_a_folder_or_a_missing_folder_is_named_before_writing(tmp_path):
    """``save`` / ``export_nir`` onto a folder, or into a folder that does not exist: the error
    names the path and what to do, not a temporary name or h5py's internals."""
    snn = ann2snn.convert(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval(), T=4, input_shape=(4,))
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a folder: give the name of the file") as raised:
        ann2snn.save(snn, tmp_path)
    assert ".partial" not in str(raised.value)
    for write, name in ((ann2snn.save, "snn.pt"), (ann2snn.export_nir, "snn.nir")):
        with pytest.raises(FileNotFoundError, match="the folder .*missing does not exist \\(create it first\\)"):
            write(snn, tmp_path / "missing" / name)
    assert list(tmp_path.iterdir()) == []
