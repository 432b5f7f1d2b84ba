"""No output clobbers an earlier one: ``ann2snn convert`` does not replace a file that is not a
network ``ann2snn.save`` wrote (a fine-tuned SNN's training checkpoint) unless told, ``train.py``
names its SNN checkpoint apart from convert's default output, and refuses to retrain over an
existing checkpoint without --resume or --overwrite."""

import wave
from pathlib import Path

import pytest
import torch

import ann2snn
import ann2snn_zoo as zoo
from ann2snn.cli import main as cli_main
from ann2snn_zoo.harness import train_cli
from ann2snn_zoo.harness.checkpoint import load_checkpoint, save_checkpoint
from test_cli import small_net


class Started(Exception):
    """Raised by a stand-in data loader: the run got past its checks."""


def one_line_error(capsys, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- ann2snn convert -------------------------------------------------------------------------------
@pytest.fixture
def model_files(tmp_path) -> Path:
    torch.export.save(torch.export.export(small_net(), (torch.randn(2, 1, 32),)), tmp_path / "model.pt2")
    torch.save(torch.randn(8, 1, 32), tmp_path / "calib.pt")
    return tmp_path


def convert(capsys, folder: Path, *extra: str) -> int:
    code = cli_main(["convert", str(folder / "model.pt2"), "--calibrate", str(folder / "calib.pt"), "--T", "4", *extra])
    return code


def test_convert_keeps_a_training_checkpoint_at_its_output_unless_told(model_files, capsys):
    target = model_files / "model.snn.pt"  # convert's default output
    save_checkpoint(target, {"state_dict": {"w": torch.ones(3)}, "kind": "snn", "epoch": 4})
    before = target.read_bytes()
    code = convert(capsys, model_files)
    one_line_error(capsys, code, str(target), "--overwrite", "not a network written by ann2snn.save")
    assert target.read_bytes() == before
    assert load_checkpoint(target)["epoch"] == 4

    assert convert(capsys, model_files, "--overwrite") == 0
    assert ann2snn.load(target).T == 4


def test_convert_replaces_its_own_network_without_being_asked(model_files, capsys):
    target = model_files / "snn.pt"
    assert convert(capsys, model_files, "-o", str(target)) == 0
    assert convert(capsys, model_files, "-o", str(target), "--T", "6") == 0  # the last --T counts
    assert ann2snn.load(target).T == 6


def test_convert_refuses_any_other_existing_file(model_files, capsys):
    target = model_files / "notes.txt"
    target.write_text("my notes")
    code = convert(capsys, model_files, "-o", str(target))
    one_line_error(capsys, code, str(target), "--overwrite")
    assert target.read_text() == "my notes"


# -- train.py: existing checkpoints ----------------------------------------------------------------
@pytest.fixture
def no_data(monkeypatch):
    """A data loader that stops the run once it got past its checks."""

    def load_splits(*args, **kwargs):
        raise Started

    monkeypatch.setattr(zoo.data, "load_splits", load_splits)


def test_train_refuses_an_existing_checkpoint_without_resume_or_overwrite(tmp_path, capsys, no_data):
    checkpoint = tmp_path / "cnn.pt"
    checkpoint.write_bytes(b"a finished run's weights")
    code = train_cli.main(["-o", str(checkpoint), "--no-progress", "--device", "cpu"])
    one_line_error(capsys, code, str(checkpoint), "--resume", "--overwrite")
    assert checkpoint.read_bytes() == b"a finished run's weights"
    for flag in ("--resume", "--overwrite"):  # either says what to do with it: the run starts
        with pytest.raises(Started):
            train_cli.main(["-o", str(checkpoint), "--no-progress", "--device", "cpu", flag])


def test_train_refuses_an_existing_snn_checkpoint(tmp_path, capsys, no_data):
    snn = train_cli.snn_checkpoint(tmp_path / "cnn.pt")
    snn.write_bytes(b"a fine-tuned SNN")
    code = train_cli.main(["-o", str(tmp_path / "cnn.pt"), "--snn-T", "4", "--no-progress", "--device", "cpu"])
    one_line_error(capsys, code, str(snn), "--resume", "--overwrite")
    with pytest.raises(Started):  # without --snn-T it is not an output of the run
        train_cli.main(["-o", str(tmp_path / "cnn.pt"), "--no-progress", "--device", "cpu"])


def test_train_refuses_existing_rank_weights(tmp_path, capsys, no_data):
    rank = tmp_path / "cnn[1].rank0.pt"  # glob characters in the name are taken literally
    rank.write_bytes(b"rank 0's weights")
    code = train_cli.main(["-o", str(tmp_path / "cnn[1].pt"), "--save-rank-weights", "--no-progress", "--device", "cpu"])
    one_line_error(capsys, code, str(rank), "--overwrite")
    assert rank.read_bytes() == b"rank 0's weights"


def test_train_refuses_a_folder_as_checkpoint(tmp_path, capsys, no_data):
    code = train_cli.main(["-o", str(tmp_path), "--overwrite", "--no-progress", "--device", "cpu"])
    one_line_error(capsys, code, str(tmp_path), "folder")


def test_train_resume_and_overwrite_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit:
        train_cli.parse_args(["--resume", "--overwrite"])
    assert exit.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("device", ["foo", "cuda", "cuda:7"])
def test_train_refuses_devices_it_does_not_have(device, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit:
        train_cli.parse_args(["--device", device])
    assert exit.value.code == 2 and "--device" in capsys.readouterr().err


def test_the_snn_checkpoint_is_not_where_convert_writes():
    cnn = Path("runs") / "cnn.pt"
    assert train_cli.snn_checkpoint(cnn) == Path("runs") / "cnn.snn-finetuned.pt"
    assert train_cli.snn_checkpoint(cnn) != cnn.with_suffix(".snn.pt") != cnn


def test_train_then_convert_keeps_the_fine_tuned_snn(tmp_path, monkeypatch, capsys):
    load_splits = zoo.data.load_splits
    monkeypatch.setattr(zoo.data, "load_splits", lambda *args, **kwargs: load_splits(*args, **kwargs, n_per_class=2))
    cnn = tmp_path / "cnn.pt"
    argv = ["-o", str(cnn), "--epochs", "1", "--max-batches", "1", "--snn-T", "2", "--snn-epochs", "1", "--no-progress", "--device", "cpu"]
    assert train_cli.main(argv) == 0
    snn = tmp_path / "cnn.snn-finetuned.pt"
    assert load_checkpoint(snn)["kind"] == "snn" and not (tmp_path / "cnn.snn.pt").exists()
    assert cli_main(["convert", str(snn), "-o", str(tmp_path / "again.snn.pt")]) == 2  # the SNN's checkpoint is no CNN
    assert "training checkpoint of an SNN fine-tuned by ann2snn train --snn-T" in capsys.readouterr().err
    network = ann2snn.load(tmp_path / "cnn.finetuned.snn.pt")  # the fine-tuned SNN, as a network file
    assert isinstance(network, ann2snn.SpikingNetwork) and network.T == 2
    kept = load_checkpoint(snn)
    weights = kept["best_state_dict"] if kept.get("best_epoch", -1) >= 0 else kept["state_dict"]
    assert weights.keys() == network.state_dict().keys() and all(torch.equal(network.state_dict()[k], v) for k, v in weights.items())
    fine_tuned = snn.read_bytes()
    assert cli_main(["convert", str(cnn), "--T", "2"]) == 0  # writes its default output, cnn.snn.pt
    assert ann2snn.load(tmp_path / "cnn.snn.pt").T == 2
    assert snn.read_bytes() == fine_tuned
    capsys.readouterr()
    assert train_cli.main(argv) == 2  # a second run neither retrains over the first nor clobbers it
    assert snn.read_bytes() == fine_tuned


def test_compiled_neurons_flag_reaches_the_fine_tuned_snn(tmp_path, monkeypatch):
    """--compiled-neurons sets snn.compiled_neurons for the SNN's fine-tuning (the fit itself is
    skipped here: compiling takes tens of seconds; tests/test_compiled_steps.py checks the kernels)."""
    load_splits = zoo.data.load_splits
    monkeypatch.setattr(zoo.data, "load_splits", lambda *args, **kwargs: load_splits(*args, **kwargs, n_per_class=2))
    real_fit, seen = train_cli.fit, []

    def fit(model, *args, **kwargs):
        if isinstance(model, ann2snn.SpikingNetwork):
            seen.append(model.compiled_neurons)
            return None
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(train_cli, "fit", fit)
    argv = ["--epochs", "1", "--max-batches", "1", "--snn-T", "2", "--snn-epochs", "1", "--no-progress", "--device", "cpu"]
    assert train_cli.main(["-o", str(tmp_path / "a.pt"), *argv, "--compiled-neurons"]) == 0
    assert train_cli.main(["-o", str(tmp_path / "b.pt"), *argv]) == 0
    assert seen == [True, False]


@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
@pytest.mark.parametrize("inside", ["fsdd/cnn.pt", "fsdd/recordings/runs/cnn.pt"])
def test_train_refuses_outputs_inside_its_data_folder(inside, flag, tmp_path, capsys, no_data):
    """As ann2snn convert does: a checkpoint written into the data folder would change the data set."""
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    for take in range(2):  # a data folder as FSDD lays it out: 8 kHz mono WAV files
        with wave.open(str(recordings / f"0_george_{take}.wav"), "wb") as clip:
            clip.setparams((1, 2, 8000, 800, "NONE", "not compressed"))
            clip.writeframes(bytes(1600))
    before = sorted(tmp_path.rglob("*"))
    argv = ["--dataset", "fsdd", "--data-dir", str(tmp_path / "fsdd"), "--snn-T", "2", "--no-progress", "--device", "cpu", *flag]
    code = train_cli.main([*argv, "-o", str(tmp_path / inside)])
    one_line_error(capsys, code, str(tmp_path / inside), f"inside the data folder {tmp_path / 'fsdd'}", "elsewhere")
    assert sorted(tmp_path.rglob("*")) == before
    with pytest.raises(Started):  # beside the data folder, the run starts
        train_cli.main([*argv, "-o", str(tmp_path / "runs" / "cnn.pt")])
    with pytest.raises(Started):  # a generated data set reads no folder
        train_cli.main([*argv, "--dataset", "synthetic", "-o", str(tmp_path / inside)])


@pytest.mark.parametrize(
    "flags, said",
    [(["--compiled-neurons"], "--compiled-neurons sets"), (["--learn-tau"], "--learn-tau sets"), (["--snn-epochs", "3", "--learn-tau"], "--learn-tau and --snn-epochs set")],
)
def test_train_refuses_snn_options_without_an_snn(flags, said, capsys):
    """The SNN's options without --snn-T were silently ignored: one line says what is missing."""
    with pytest.raises(SystemExit) as exit:
        train_cli.parse_args(flags)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit.value.code == 2 and len(lines) == 1 and f"{said} up the SNN's fine-tuning: give --snn-T too" in lines[0], lines
    args = train_cli.parse_args([*flags, "--snn-T", "4"])
    assert args.snn_epochs == (3 if "--snn-epochs" in flags else train_cli.SNN_EPOCHS)
