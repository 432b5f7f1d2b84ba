"""Evaluation: loss, top-1 and top-5 accuracy; per-layer firing rates of a spiking network."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import ann2snn


@dataclass
class Metrics:
    loss: float
    top1: float
    top5: float
    n: int
    seconds: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "cpu") -> Metrics:
    """Mean cross-entropy and top-1 / top-5 accuracy (in %) of ``model`` on ``dataset``."""
    was_training = model.training
    model.eval()
    loss = correct1 = correct5 = n = 0.0
    start = time.perf_counter()
    for x, y in DataLoader(dataset, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(1).sum().item()
        n += len(y)
    model.train(was_training)
    return Metrics(loss / n, 100 * correct1 / n, 100 * correct5 / n, int(n), time.perf_counter() - start)


@torch.no_grad()
def firing_rates(snn: ann2snn.SpikingNetwork, dataset: Dataset, batches: int = 2, batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean spikes per neuron per time step, per spiking layer, on the first ``batches`` batches."""
    neurons = {name: m for name, m in snn.network.named_modules() if isinstance(m, ann2snn.SpikingNeuron)}
    totals = {name: 0.0 for name in neurons}
    counts = {name: 0 for name in neurons}
    saved_mode = snn.mode
    snn.mode = "step"  # per-step outputs are the neurons' own spikes (layer mode may fuse pooling)

    def hook(name: str):
        def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
            totals[name] += (output != 0).float().sum().item()
            counts[name] += output.numel()
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in neurons.items()]
    try:
        for k, (x, _) in enumerate(DataLoader(dataset, batch_size=batch_size)):
            if k == batches:
                break
            snn(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
        snn.mode = saved_mode
    return {name: totals[name] / max(counts[name], 1) for name in neurons}
