"""An unreadable checkpoint is reported in one complete sentence: the file, that it is corrupt or
not a checkpoint, and the way out; not a cut-off piece of torch's advice (weights_only=False...)."""

import zipfile

import pytest
import torch
from torch import nn

from ann2snn_zoo.harness import train_cli
from ann2snn_zoo.harness.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def garbage(path):
    path.write_bytes(bytes(range(256)) * 4)


def not_an_archive(path):
    path.write_bytes(b"PK\x03\x04" + b"junk" * 50)


def truncated(path):
    save_checkpoint(path, {"state_dict": {"w": torch.randn(1000)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def pickled_module(path):
    torch.save({"state_dict": {}, "model": nn.Linear(2, 2)}, path)


def empty_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/other", b"nothing")


TORCH_ADVICE = ("weights_only", "torch.load", "file an issue", "miniz", "If you are seeing", "add_safe_globals")


@pytest.mark.parametrize("make", [garbage, not_an_archive, truncated, pickled_module, empty_zip])
def test_unreadable_checkpoint_message_is_complete(tmp_path, make):
    path = tmp_path / "ck.pt"
    make(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path} is corrupt or not a checkpoint: ")
    assert message.endswith("it was left untouched: pass another checkpoint path, or delete it to train from scratch")
    assert not any(words in message for words in TORCH_ADVICE), message
    assert message.count("(") == message.count(")") and len(message) < 300


def test_pickled_objects_are_named_as_such(tmp_path):
    path = tmp_path / "ck.pt"
    pickled_module(path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)


def test_train_resume_from_a_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    path = tmp_path / "ck.pt"
    not_an_archive(path)
    before = path.read_bytes()
    code = train_cli.main(["-o", str(path), "--resume", "--epochs", "1", "--max-batches", "1", "--no-progress", "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path} is corrupt or not a checkpoint"), lines
    assert lines[0].endswith("delete it to train from scratch") and "miniz" not in lines[0]
    assert path.read_bytes() == before
