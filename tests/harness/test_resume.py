"""Resume: a training run killed mid-epoch and resumed from its checkpoint ends exactly like a run
that was never interrupted: the whole per-epoch history, the early stop, the last epoch's weights,
the optimiser and schedule state, the RNG state, and the best weights it hands back.

The run trains with augmentation (random time shifts drawn from torch's global RNG) and stops
early; the kill falls after the best epoch and before the early stop, so the early-stopping
counter is non-zero in the checkpoint it resumes from.
"""

from pathlib import Path

import pytest
import torch

import ann2snn_zoo as zoo
from ann2snn_zoo.harness import TrainConfig, fit, load_checkpoint

PATIENCE = 3


class Killed(Exception):
    pass


class KillAfter(torch.utils.data.Dataset):
    """``dataset``, except that reading item number ``n`` (counted over all reads) raises Killed:
    a kill in the middle of a training epoch. Draws no random numbers."""

    def __init__(self, dataset, n: int) -> None:
        self.dataset, self.n, self.reads = dataset, n, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        if self.reads > self.n:
            raise Killed
        return self.dataset[i]


@pytest.fixture(scope="module")
def splits():
    return zoo.data.load_splits("synthetic", front_end=zoo.FrontEnd(kind="waveform"), n_per_class=6, augment=zoo.Augment(shift_s=0.1))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create("m5", n_classes=10, n_channel=4)


def config(seed: int) -> TrainConfig:
    return TrainConfig(epochs=10, lr=0.1, batch_size=16, patience=PATIENCE, seed=seed, progress=False, max_batches=3)


def quiet(_: str) -> None:
    pass


def without_seconds(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def assert_same(a, b, where: str = "") -> None:
    """Equal nested checkpoint content: tensors bit for bit, numbers and strings exactly."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def reference_run(splits, tmp_path: Path):
    """An uninterrupted run that stops early, with its best epoch after the first: the first
    training seed from 3 on that gives one (a few tries at most; each run takes a fraction of a second)."""
    for seed in range(3, 13):
        checkpoint = tmp_path / f"reference-{seed}.pt"
        net = model()
        history = fit(net, splits["train"], splits["val"], config(seed), checkpoint, log=quiet)
        if history.stopped_early and history.best_epoch >= 1:
            return seed, net, history, checkpoint
    pytest.fail("no seed made the reference run stop early after epoch 1; the test cannot check resuming across the counter")


def test_a_run_killed_mid_epoch_and_resumed_equals_an_uninterrupted_run(splits, tmp_path):
    seed, reference, expected, reference_checkpoint = reference_run(splits, tmp_path)
    best = expected.best_epoch  # 0-based
    assert len(expected.epochs) == best + PATIENCE + 1  # stopped PATIENCE epochs after the best one

    # Kill in the middle of epoch best + 2 (0-based): the checkpoint then holds epoch best + 1,
    # one epoch without improvement, so the early-stopping counter is 1 when the run resumes.
    steps, batch = config(seed).max_batches, config(seed).batch_size
    kill_at = (best + 2) * steps * batch + batch + batch // 2
    checkpoint = tmp_path / "killed.pt"
    with pytest.raises(Killed):
        fit(model(), KillAfter(splits["train"], kill_at), splits["val"], config(seed), checkpoint, log=quiet)
    state = load_checkpoint(checkpoint)
    assert state["epoch"] == best + 1 and not state["finished"]
    assert len(state["history"]) == best + 2

    messages: list[str] = []
    torch.manual_seed(12345)  # whatever the RNG holds before the resume must not matter
    resumed = model()
    history = fit(resumed, splits["train"], splits["val"], config(seed), checkpoint, resume=True, log=messages.append)
    assert messages[0].endswith(f"resuming after epoch {best + 2}")

    # The history: every epoch's losses and accuracy, the best epoch, the early stop.
    assert without_seconds(history.epochs) == without_seconds(expected.epochs)
    assert (history.best_epoch, history.stopped_early) == (expected.best_epoch, expected.stopped_early)
    # The returned model holds the best epoch's weights in both runs.
    assert_same(reference.state_dict(), resumed.state_dict(), "best weights")
    # The last checkpoint: the last epoch's weights, optimiser and schedule state, RNG state,
    # best weights and loss, the early-stopping outcome.
    final, uninterrupted = load_checkpoint(checkpoint), load_checkpoint(reference_checkpoint)
    assert final["epoch"] == uninterrupted["epoch"] == len(expected.epochs) - 1 and final["finished"]
    for key in ("state_dict", "optimizer", "scheduler", "rng", "best_epoch", "best_loss", "best_state_dict"):
        assert_same(uninterrupted[key], final[key], key)
    assert without_seconds(final["history"]) == without_seconds(uninterrupted["history"])
    assert any(not torch.equal(final["state_dict"][k], v) for k, v in final["best_state_dict"].items()), "the last epoch's weights equal the best epoch's: the check of the last epoch would be vacuous"


def test_resuming_a_finished_run_returns_its_history_and_best_weights(splits, tmp_path):
    seed, reference, expected, checkpoint = reference_run(splits, tmp_path)
    again = model()
    history = fit(again, splits["train"], splits["val"], config(seed), checkpoint, resume=True, log=quiet)
    assert without_seconds(history.epochs) == without_seconds(expected.epochs)
    assert (history.best_epoch, history.stopped_early) == (expected.best_epoch, True)
    assert_same(reference.state_dict(), again.state_dict(), "best weights")
