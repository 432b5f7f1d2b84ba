"""Property test over random CNNs built from the supported ops (issue 12): 1-D and 2-D
convolutions, max and average pooling, residual adds, concatenation, capped and plain ReLUs,
batch norm. For each: conversion succeeds, the input model is unchanged, step mode equals layer
mode, and the IF network with many steps agrees with its CNN. A seeded generator of our own
(rather than hypothesis) keeps every case reproducible from its number."""

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn

CASES = 200


class Block(nn.Module):
    """One random stage: conv (+ BN) + activation, optionally residual or a concatenated branch,
    optionally pooled."""

    def __init__(self, rng: random.Random, dims: int, channels: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.residual = rng.random() < 0.3
        self.branch = conv(channels, channels, 1) if rng.random() < 0.3 else None
        out = channels if self.residual else rng.choice((2, 3, 4))
        self.conv = conv(channels, out, 3, padding=1)
        self.bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims](out) if rng.random() < 0.5 else None
        self.act = rng.choice(("relu", "F.relu", "relu6", "clamp"))
        pools = {1: (nn.MaxPool1d(2), nn.AvgPool1d(2)), 2: (nn.MaxPool2d(2), nn.AvgPool2d(2))}[dims]
        self.pool = rng.choice(pools + (None,))
        self.out_channels = out + (channels if self.branch is not None else 0)

    def forward(self, x):
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        if self.residual:
            y = y + x
        y = {"relu": torch.relu, "F.relu": F.relu, "relu6": F.relu6, "clamp": lambda v: v.clamp(0, 2.0)}[self.act](y)
        if self.branch is not None:
            y = torch.cat([y, F.relu(self.branch(x))], 1)
        return self.pool(y) if self.pool is not None else y


class RandomCNN(nn.Module):
    def __init__(self, case: int) -> None:
        super().__init__()
        rng = random.Random(case)
        torch.manual_seed(case)
        self.dims = rng.choice((1, 2))
        self.size = 16 if self.dims == 1 else 8
        blocks, channels = [], 1
        for _ in range(rng.randint(1, 3)):
            blocks.append(Block(rng, self.dims, channels))
            channels = blocks[-1].out_channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, 3)
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 1.5)

    def input(self, n: int, seed: int) -> torch.Tensor:
        shape = (n, 1, self.size) if self.dims == 1 else (n, 1, self.size, self.size)
        return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))

    def forward(self, x):
        x = self.blocks(x)
        return self.fc(x.flatten(2).mean(2))


@pytest.mark.parametrize("chunk", range(4))
def test_random_cnns_convert_exactly_in_the_limit(chunk):
    failures = []
    for case in range(chunk, CASES, 4):
        model = RandomCNN(case).eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        x = model.input(16, case)
        snn = ann2snn.convert(model, T=16, learn_tau=False, calibration=[x], percentile=100.0, correction="none")
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), f"case {case}: model changed"
        with torch.no_grad():
            layer = snn(x)
            snn.mode = "step"
            step = snn(x)
            if not torch.allclose(layer, step, atol=1e-5):
                failures.append(f"case {case}: step != layer ({float((layer - step).abs().max()):.2e})")
            snn.mode = "layer"
            snn.T = 512
            cnn = model(x)
            error = float((snn(x) - cnn).norm() / cnn.norm().clamp(min=1e-6))
            if error > 0.1:
                failures.append(f"case {case}: IF at T=512 differs from the CNN by {error:.3f} (relative)")
    assert not failures, failures
