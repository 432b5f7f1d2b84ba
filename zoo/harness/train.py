"""The training loop shared by CNNs and converted SNNs: AdamW, one-cycle schedule, early stopping
on validation loss, resumable atomic checkpoints, optional DistributedDataParallel."""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from zoo.harness.checkpoint import load_checkpoint, save_checkpoint
from zoo.harness.evaluate import evaluate


@dataclass
class TrainConfig:
    epochs: int = 30
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    patience: int = 8          # epochs without a better validation loss before stopping
    seed: int = 0
    device: str = "auto"       # "auto": CUDA when available, else CPU
    max_batches: Optional[int] = None  # per epoch; for quick runs and tests
    progress: bool = True
    tau_lr_scale: float = 1.0  # learning rate of membrane time constants (``*.leak_logit``) over ``lr``


@dataclass
class History:
    """Per-epoch records and the outcome of a training run."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False

    @property
    def seconds_per_epoch(self) -> float:
        times = [e["seconds"] for e in self.epochs]
        return sum(times) / len(times) if times else math.nan


def resolve_device(device: str) -> torch.device:
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


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The trainable parameters; with ``tau_lr_scale != 1`` the time constants form a second group
    whose learning rate is ``lr * tau_lr_scale`` (one epoch at the weights' rate barely moves them)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    taus = [p for n, p in named if n.endswith("leak_logit")]
    if config.tau_lr_scale == 1.0 or not taus:
        return [{"params": [p for _, p in named], "lr": config.lr}]
    rest = [p for n, p in named if not n.endswith("leak_logit")]
    return [{"params": rest, "lr": config.lr}, {"params": taus, "lr": config.lr * config.tau_lr_scale}]


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

    With ``checkpoint``, the state after every epoch is written there atomically (with
    ``checkpoint_extra`` merged in, e.g. the zoo model name and config); ``resume`` continues
    from it. Under ``torch.distributed`` the model is wrapped in DistributedDataParallel and the
    data split with a DistributedSampler; only rank 0 writes checkpoints.
    """
    device = resolve_device(config.device)
    model.to(device)
    train_model = nn.parallel.DistributedDataParallel(model) if dist.is_initialized() else model
    steps_per_epoch = min(len(_loader(train_set, config, 0)), config.max_batches or math.inf)
    groups = parameter_groups(model, config)
    optimiser = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=[g["lr"] for g in groups], total_steps=max(1, config.epochs * steps_per_epoch))
    history, start_epoch, best_loss, best_state = History(), 0, math.inf, None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, map_location=device)
        model.load_state_dict(state["state_dict"])
        optimiser.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"].cpu())  # map_location may have moved it to the GPU
        if state.get("cuda_rng") and device.type == "cuda":  # dropout on the GPU draws from the CUDA generators
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        history = History(state["history"], state["best_epoch"], state.get("stopped_early", False))
        best_loss, best_state = state["best_loss"], state["best_state_dict"]
        start_epoch = state["epoch"] + 1
        if state.get("finished"):
            model.load_state_dict(best_state)
            return history
        log(f"{desc}: resuming after epoch {state['epoch'] + 1}")
    stale = start_epoch - history.best_epoch - 1 if history.best_epoch >= 0 else 0
    for epoch in range(start_epoch, config.epochs):
        train_model.train()
        start, total, seen = time.perf_counter(), 0.0, 0
        batches = itertools.islice(_loader(train_set, config, epoch), steps_per_epoch)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{config.epochs}", leave=False, disable=not (config.progress and _is_main_process()))
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            optimiser.zero_grad(set_to_none=True)
            loss = F.cross_entropy(train_model(x), y)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(y)
            seen += len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        seconds = time.perf_counter() - start
        if dist.is_initialized():  # DDP syncs gradients, not buffers: give every rank rank 0's BN statistics
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)
        val = evaluate(model, val_set, device=device)
        record = dict(epoch=epoch + 1, train_loss=total / max(seen, 1), val_loss=val.loss, val_top1=val.top1, seconds=seconds)
        history.epochs.append(record)
        if val.loss < best_loss:
            best_loss, history.best_epoch, stale = val.loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        history.stopped_early = stale >= config.patience
        finished = history.stopped_early or epoch + 1 == config.epochs
        if _is_main_process():
            log(f"{desc} epoch {epoch + 1}/{config.epochs}: train loss {record['train_loss']:.4f}, val loss {val.loss:.4f}, val top-1 {val.top1:.1f} %, {seconds:.1f} s")
            if checkpoint is not None:
                save_checkpoint(checkpoint, {
                    **(checkpoint_extra or {}), "state_dict": model.state_dict(), "optimizer": optimiser.state_dict(),
                    "scheduler": schedule.state_dict(), "rng": torch.get_rng_state(), "cuda_rng": _cuda_rng_states(device),
                    "epoch": epoch, "history": history.epochs, "best_epoch": history.best_epoch, "best_loss": best_loss,
                    "stopped_early": history.stopped_early,
                    "best_state_dict": best_state, "finished": finished, "train_config": asdict(config),
                })  # fmt: skip
        if history.stopped_early:
            log(f"{desc}: early stop after epoch {epoch + 1} (no better validation loss for {config.patience} epochs)")
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
