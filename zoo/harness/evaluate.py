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


def run_profile(snn: ann2snn.SpikingNetwork, dataset: Dataset, batches: int = 2, batch_size: int = 64, device: str | torch.device = "cpu") -> dict:
    """Firing rate per spiking layer, synaptic operations and energy (``ann2snn.profile``) on the
    first ``batches`` batches of ``dataset``, as plain numbers for a results row."""
    inputs = [x.to(device) for (x, _), _ in zip(DataLoader(dataset, batch_size=batch_size), range(batches))]
    profile = ann2snn.profile(snn, inputs)
    return dict(
        firing_rates={row.name: row.firing_rate for row in profile.neuron_layers},
        synops=profile.acs,
        macs=profile.macs,
        energy_pj=profile.energy_pj,
        cnn_energy_pj=profile.cnn_energy_pj,
    )
