"""The training checkpoint's schema (``zoo.harness.train_state``): the version-1 layout, files
written before the version entry, other versions and non-training files refused by name; and
the loop's parts (early stopping) on their own."""

import math

import pytest
import torch
from torch import nn

from ann2snn_zoo.harness import CheckpointError, TrainConfig, fit
from ann2snn_zoo.harness.checkpoint import load_checkpoint, save_checkpoint
from ann2snn_zoo.harness.train import EarlyStopping
from ann2snn_zoo.harness.train_state import VERSION_KEY, History, TrainState, load_train_state, save_train_state

#: The version-1 layout: what the harness wrote before the schema had a name (plus the version).
VERSION_1 = [
    "model", "config", "state_dict", "optimizer", "scheduler", "rng", "cuda_rng", "epoch", "history", "best_epoch", "best_loss",
    "stopped_early", "best_state_dict", "finished", "train_config", VERSION_KEY,
]  # fmt: skip


class Killed(Exception):
    pass


def tiny_run(path, epochs=2, kill_at=None):
    """A small run checkpointed to ``path``; ``kill_at``: killed once epoch ``kill_at`` (1-based) is written."""
    torch.manual_seed(0)
    x, y = torch.randn(24, 3), torch.randint(0, 2, (24,))
    data = torch.utils.data.TensorDataset(x, y)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    config = TrainConfig(epochs=epochs, lr=1e-2, batch_size=8, seed=1, progress=False, device="cpu")

    def log(message):
        if kill_at is not None and path.is_file() and load_checkpoint(path)["epoch"] + 1 == kill_at:
            raise Killed

    try:
        history = fit(model, data, data, config, path, checkpoint_extra={"model": "tiny", "config": {"n": 4}}, log=log)
    except Killed:
        history = None
    return model, data, config, history


def test_a_checkpoint_holds_the_version_1_layout_and_reads_back(tmp_path):
    path = tmp_path / "ck.pt"
    _, _, _, history = tiny_run(path)
    payload = load_checkpoint(path)
    assert [k for k in payload if k != "sha256"] == VERSION_1 and payload[VERSION_KEY] == 1
    state = load_train_state(path)
    assert state.extra == {"model": "tiny", "config": {"n": 4}} and state.finished and state.epoch == 1
    assert state.history.epochs == history.epochs and state.history.best_epoch == history.best_epoch
    again = state.to_dict()
    assert list(again) == VERSION_1
    for key in again:
        if isinstance(again[key], torch.Tensor):
            assert torch.equal(again[key], payload[key])
        elif key not in ("state_dict", "best_state_dict", "optimizer"):
            assert again[key] == payload[key], key


def test_a_file_written_before_the_version_entry_is_read_as_version_1(tmp_path):
    path = tmp_path / "ck.pt"
    model, data, config, _ = tiny_run(path, epochs=3, kill_at=2)
    old = load_checkpoint(path)
    assert old["epoch"] == 1 and not old["finished"]
    for key in (VERSION_KEY, "sha256", "cuda_rng", "stopped_early", "train_config"):  # absent from the oldest files
        old.pop(key)
    save_checkpoint(path, old)
    state = load_train_state(path)
    assert state.cuda_rng == [] and state.history.stopped_early is False and state.train_config == {}
    messages = []
    fit(model, data, data, config, path, resume=True, log=messages.append)
    assert messages[0].endswith("resuming after epoch 2")
    assert load_checkpoint(path)[VERSION_KEY] == 1


@pytest.mark.parametrize("version", [2, "1", 0])
def test_another_version_is_refused_naming_the_file_and_the_way_out(tmp_path, version):
    path = tmp_path / "ck.pt"
    tiny_run(path)
    payload = load_checkpoint(path)
    save_checkpoint(path, {**payload, VERSION_KEY: version})
    with pytest.raises(CheckpointError, match=rf"{path} holds training state version {version!r}.*reads version 1.*delete it") as error:
        load_train_state(path)
    if version == 2:
        assert "newer" in str(error.value)


def test_a_model_file_is_not_resumed_but_refused_naming_what_it_lacks(tmp_path):
    path = tmp_path / "model.pt"
    model = nn.Linear(3, 2)
    save_checkpoint(path, {"model": "tiny", "state_dict": model.state_dict()})
    data = torch.utils.data.TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,)))
    with pytest.raises(CheckpointError, match=rf"{path} holds no training state.*lacks optimizer, scheduler"):
        fit(model, data, data, TrainConfig(epochs=1, progress=False, device="cpu"), path, resume=True, log=lambda _: None)
    assert set(load_checkpoint(path)) == {"model", "state_dict", "sha256"}  # left untouched


def test_extras_may_not_overwrite_the_schema():
    state = TrainState({}, {}, {}, torch.get_rng_state(), 0, History(), math.inf, None, False, extra={"epoch": 3})
    with pytest.raises(ValueError, match=r"\['epoch'\]"):
        state.to_dict()


def test_save_and_load_round_trip(tmp_path):
    state = TrainState(
        {"w": torch.ones(2)}, {"state": {}}, {"s": 1}, torch.get_rng_state(), 4, History([{"epoch": 5}], 3, True), 0.5,
        {"w": torch.zeros(2)}, True, train_config={"lr": 1.0}, extra={"kind": "snn"},
    )  # fmt: skip
    save_train_state(tmp_path / "s.pt", state)
    back = load_train_state(tmp_path / "s.pt")
    assert back.history == state.history and back.extra == {"kind": "snn"} and back.best_loss == 0.5 and back.next_epoch == 5
    assert torch.equal(back.best_state_dict["w"], torch.zeros(2)) and torch.equal(back.rng, state.rng)


def test_early_stopping_counts_epochs_without_a_better_loss():
    model = nn.Linear(1, 1)
    stopping = EarlyStopping(patience=2)
    assert stopping.update(0, 1.0, model) and stopping.best_epoch == 0 and not stopping.stop
    with torch.no_grad():
        model.weight.add_(1)
    assert not stopping.update(1, 1.0, model) and not stopping.stop  # equal is not better
    assert not stopping.update(2, 2.0, model) and stopping.stop
    assert not torch.equal(stopping.best_state["weight"], model.weight)  # the best epoch's copy
    state = TrainState({}, {}, {}, torch.get_rng_state(), 5, History([], 3), 0.1, None, False)
    resumed = EarlyStopping.resume(2, state)
    assert (resumed.stale, resumed.best_epoch, resumed.best_loss) == (2, 3, 0.1) and resumed.stop
