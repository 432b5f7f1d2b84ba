"""The training loop shared by CNNs and converted SNNs: AdamW, one-cycle schedule, early stopping
on validation loss, resumable atomic checkpoints, optional DistributedDataParallel.

``fit`` composes the parts: ``optimiser_and_schedule``, ``train_one_epoch``, ``sync_buffers``
(DDP), ``validate``, ``EarlyStopping``, and the checkpoint's ``TrainState``
(``zoo.harness.train_state``, the schema of what a checkpoint holds)."""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from ann2snn_zoo.harness.evaluate import Metrics, evaluate
from ann2snn_zoo.harness.train_state import History, TrainState, load_train_state, save_train_state

__all__ = [
    "EarlyStopping", "History", "TrainConfig", "TrainState", "fit", "optimiser_and_schedule", "parameter_groups",
    "device_problem", "resolve_device", "seed_everything", "sync_buffers", "time_constants", "train_one_epoch", "validate",
]  # fmt: skip


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    patience: int = 8  # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available, else CPU
    max_batches: Optional[int] = None  # per epoch; for quick runs and tests
    progress: bool = True
    tau_lr_scale: float = 1.0  # learning rate of membrane time constants (``time_constants``) over ``lr``


def device_problem(text: str, kinds: tuple[str, ...] = ("cpu", "cuda", "mps"), allow_auto: bool = True) -> str | None:
    """Why ``text`` is not a device this machine can run on, as one line that names the way out,
    or None when it is. ``kinds`` are the device types the caller runs on; ``allow_auto`` lets
    "auto" (CUDA when available, else CPU) pass."""
    if allow_auto and text == "auto":
        return None
    names = (["auto"] if allow_auto else []) + [name for kind in kinds for name in ([kind, "cuda:N"] if kind == "cuda" else [kind])]
    choices = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
    instead = "--device cpu (or auto)" if allow_auto else "--device cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        return f"{text!r} is not a device; pass {choices}"
    if device.type not in kinds:
        return f"{text}: this runs on {choices}; pass one of those"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"{text}: this machine has no usable CUDA GPU; pass {instead}"
        if device.index is not None and device.index >= count:
            return f"{text}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}; pass one of those"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"{text}: MPS is not available on this machine; pass {instead}"
    return None


def resolve_device(device: str) -> torch.device:
    """The torch device ``device`` names; "auto" is CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels (CPU runs repeat exactly)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _cuda_rng_states(device: torch.device) -> list[torch.Tensor]:
    """The CUDA generators' states when training on the GPU (dropout there draws from them), else []."""
    return torch.cuda.get_rng_state_all() if device.type == "cuda" else []


def _loader(dataset: Dataset, config: TrainConfig, epoch: int) -> DataLoader:
    """Shuffled batches, reproducible per (seed, epoch) whether or not the run was resumed."""
    if dist.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=True, seed=config.seed)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, drop_last=False)


def time_constants(model: nn.Module) -> list[nn.Parameter]:
    """The trainable membrane time constants of ``model`` (inside a DistributedDataParallel
    wrapper too): what its ``time_constants()`` returns (``ann2snn.SpikingNetwork`` offers it),
    none for a network without (a CNN)."""
    network = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not callable(getattr(network, "time_constants", None)):
        return []
    found = list(network.time_constants())
    if not all(isinstance(p, nn.Parameter) for p in found):
        raise TypeError(f"{type(network).__name__}.time_constants() must return parameters, got {[type(p).__name__ for p in found]}")
    return [p for p in found if p.requires_grad]


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The trainable parameters; with ``tau_lr_scale != 1`` the time constants form a second group
    whose learning rate is ``lr * tau_lr_scale`` (one epoch at the weights' rate barely moves them)."""
    named = [p for p in model.parameters() if p.requires_grad]
    tau_ids = {id(p) for p in time_constants(model)}
    taus = [p for p in named if id(p) in tau_ids]
    if config.tau_lr_scale == 1.0 or not taus:
        return [{"params": named, "lr": config.lr}]
    rest = [p for p in named if id(p) not in tau_ids]
    return [{"params": rest, "lr": config.lr}, {"params": taus, "lr": config.lr * config.tau_lr_scale}]


def optimiser_and_schedule(model: nn.Module, config: TrainConfig, steps_per_epoch: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``parameter_groups`` and a one-cycle schedule over all ``config.epochs``."""
    groups = parameter_groups(model, config)
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[g["lr"] for g in groups], total_steps=max(1, config.epochs * steps_per_epoch))
    return optimiser, schedule


class EarlyStopping:
    """The best validation loss so far, its epoch and a copy of those weights; ``stop`` once
    ``patience`` epochs in a row brought no better loss."""

    def __init__(self, patience: int, best_loss: float = math.inf, best_epoch: int = -1, best_state: Optional[dict] = None, stale: int = 0) -> None:
        self.patience, self.best_loss, self.best_epoch, self.best_state, self.stale = patience, best_loss, best_epoch, best_state, stale

    @classmethod
    def resume(cls, patience: int, state: TrainState) -> EarlyStopping:
        """Early stopping as it stood after ``state.epoch``: epochs since the best one count."""
        best_epoch = state.history.best_epoch
        stale = state.epoch - best_epoch if best_epoch >= 0 else 0
        return cls(patience, state.best_loss, best_epoch, state.best_state_dict, stale)

    def update(self, epoch: int, loss: float, model: nn.Module) -> bool:
        """Record epoch ``epoch``'s validation ``loss``; keeps ``model``'s weights if it is the best."""
        if loss < self.best_loss:
            self.best_loss, self.best_epoch, self.stale = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return True
        self.stale += 1
        return False

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    total: Optional[int] = None,
    desc: str = "train",
    progress: bool = True,
) -> tuple[float, float]:
    """One pass of cross-entropy training over ``batches`` (optimiser and schedule step per batch);
    returns the mean training loss and the seconds it took."""
    model.train()
    start, loss_sum, seen = time.perf_counter(), 0.0, 0
    bar = tqdm(batches, total=total, desc=desc, leave=False, disable=not progress)
    for x, y in bar:
        x, y = x.to(device), y.to(device)
        optimiser.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_sum += loss.item() * len(y)
        seen += len(y)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return loss_sum / max(seen, 1), time.perf_counter() - start


def sync_buffers(model: nn.Module) -> None:
    """Under DDP, give every rank rank 0's buffers (BN statistics): DDP syncs gradients, not buffers."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


def validate(model: nn.Module, val_set: Dataset, device: torch.device) -> Metrics:
    """Loss and accuracy on the validation set (every rank evaluates all of it)."""
    return evaluate(model, val_set, device=device)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    config: TrainConfig,
    checkpoint: Optional[Path] = None,
    resume: bool = False,
    checkpoint_extra: Optional[dict[str, Any]] = None,
    desc: str = "train",
    log: Callable[[str], None] = print,
) -> History:
    """Train ``model`` in place with cross-entropy; the best-validation-loss weights are kept.

    With ``checkpoint``, the ``TrainState`` after every epoch is written there atomically (with
    ``checkpoint_extra`` merged in, e.g. the zoo model name and config); ``resume`` continues
    from it. Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and the
    data split with a DistributedSampler; only rank 0 writes checkpoints.
    """
    device = resolve_device(config.device)
    model.to(device)
    train_model = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    steps_per_epoch = min(len(_loader(train_set, config, 0)), config.max_batches or math.inf)
    optimiser, schedule = optimiser_and_schedule(model, config, steps_per_epoch)
    history, start_epoch, stopping = History(), 0, EarlyStopping(config.patience)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_train_state(checkpoint, map_location=device)
        model.load_state_dict(state.state_dict)
        optimiser.load_state_dict(state.optimizer)
        schedule.load_state_dict(state.scheduler)
        torch.set_rng_state(state.rng.cpu())  # map_location may have moved it to the GPU
        if state.cuda_rng and device.type == "cuda":  # dropout on the GPU draws from the CUDA generators
            torch.cuda.set_rng_state_all([s.cpu() for s in state.cuda_rng])
        history, start_epoch, stopping = state.history, state.next_epoch, EarlyStopping.resume(config.patience, state)
        if state.finished:
            model.load_state_dict(state.best_state_dict)
            return history
        log(f"{desc}: resuming after epoch {state.epoch + 1}")
    for epoch in range(start_epoch, config.epochs):
        batches = itertools.islice(_loader(train_set, config, epoch), steps_per_epoch)
        progress = config.progress and _is_main_process()
        train_loss, seconds = train_one_epoch(train_model, batches, optimiser, schedule, device, steps_per_epoch, f"{desc} {epoch + 1}/{config.epochs}", progress)
        sync_buffers(model)
        val = validate(model, val_set, device)
        history.epochs.append(dict(epoch=epoch + 1, train_loss=train_loss, val_loss=val.loss, val_top1=val.top1, seconds=seconds))
        stopping.update(epoch, val.loss, model)
        history.best_epoch, history.stopped_early = stopping.best_epoch, stopping.stop
        if _is_main_process():
            log(f"{desc} epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f}, val loss {val.loss:.4f}, val top-1 {val.top1:.1f} %, {seconds:.1f} s")
            if checkpoint is not None:
                save_train_state(checkpoint, TrainState(
                    state_dict=model.state_dict(), optimizer=optimiser.state_dict(), scheduler=schedule.state_dict(),
                    rng=torch.get_rng_state(), cuda_rng=_cuda_rng_states(device), epoch=epoch, history=history,
                    best_loss=stopping.best_loss, best_state_dict=stopping.best_state,
                    finished=history.stopped_early or epoch + 1 == config.epochs, train_config=asdict(config),
                    extra=dict(checkpoint_extra or {}),
                ))  # fmt: skip
        if history.stopped_early:
            log(f"{desc}: early stop after epoch {epoch + 1} (no better validation loss for {config.patience} epochs)")
            break
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    return history
