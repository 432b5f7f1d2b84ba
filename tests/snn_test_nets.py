"""Small CNNs and a small 1-D task shared by the compiler tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tone_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy tones of four frequency bands: a small 1-D classification task."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    t = torch.arange(128) / 128
    freq = 3 + 4 * labels + torch.rand(n, generator=g) * 3
    phase = torch.rand(n, 1, generator=g) * 6.28
    x = torch.sin(2 * torch.pi * freq[:, None] * t + phase) + 1.5 * torch.randn(n, 128, generator=g)
    return x.unsqueeze(1), labels


class ResidualConcatNet(nn.Module):
    """2-D and 1-D convolutions and pooling, a residual add, a concatenation, dropout, softmax."""

    def __init__(self, n_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.pool2d = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.conv1d = nn.Conv1d(16, 8, 3, padding=1)
        self.branch = nn.Conv1d(16, 8, 1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool2d(F.relu(self.bn1(self.conv1(x))))  # [B, 4, 4, 8]
        x = self.relu(self.bn2(self.conv2(x)) + x)  # residual add before the ReLU
        x = x.flatten(1, 2)  # [B, 16, 8]: 2-D -> 1-D
        a = F.max_pool1d(torch.relu(self.conv1d(x)), 2)  # [B, 8, 4]
        b = F.avg_pool1d(self.relu(self.branch(x)), 2)  # [B, 8, 4]
        y = torch.cat([a, b], dim=1)  # [B, 16, 4]
        y = F.adaptive_avg_pool1d(y, 1).flatten(1)
        return F.log_softmax(self.fc(self.drop(y)), dim=-1)


INPUT_SHAPE = (1, 8, 16)


class ReluFormsNet(nn.Module):
    """Every ReLU spelling, one nn.ReLU instance called twice, in-place forms and capped forms."""

    def __init__(self) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(8, 8) for _ in range(11))
        self.shared = nn.ReLU()
        self.relu6 = nn.ReLU6()
        self.hardtanh = nn.Hardtanh(0.0, 2.0)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.fcs
        x = self.shared(f[0](x))
        x = self.shared(f[1](x))
        x = F.relu(f[2](x))
        x = torch.relu(f[3](x))
        x = f[4](x).relu()
        h = f[5](x)
        h.relu_()  # in place: h is read below
        x = F.relu(f[6](h), inplace=True)
        x = self.relu6(f[7](x))
        x = self.hardtanh(f[8](x))
        x = torch.clamp(f[9](x), min=0, max=3.0)
        x = f[10](x).clamp_min(0)
        return self.out(x)


RELU_FORMS_SITES = 11


def path_before_fusion(snn, name: str) -> str:
    """The module path that the converted graph's node ``name`` (a neuron or a pool, named as
    before fusion) now calls: ``name`` itself, or ``<fused>.neuron`` / ``<fused>.pool`` of the
    ``NeuronPool`` that took the node over."""
    from ann2snn.temporal import NeuronPool

    for path, module in snn.network.named_modules():
        if isinstance(module, NeuronPool) and module.node_names and name in module.node_names:
            return f"{path}.{'neuron' if module.node_names[0] == name else 'pool'}"
    return name


def neuron_named(snn, name: str) -> nn.Module:
    """The neuron that the converted graph's node ``name`` called before fusion."""
    return snn.network.get_submodule(path_before_fusion(snn, name))


def assert_modes_agree_with_the_cnn(snn, model: nn.Module, x: torch.Tensor, tolerance: float = 0.05) -> None:
    """Layer mode equals step mode on ``x``, and the SNN's output is within ``tolerance`` of the
    CNN's (mean absolute difference over mean absolute output); ``snn`` keeps its mode."""
    mode = snn.mode
    with torch.no_grad():
        y, layer = model(x), snn(x)
        snn.mode = "step"
        step = snn(x)
    snn.mode = mode
    assert torch.allclose(layer, step, atol=1e-5)
    assert float((layer - y).abs().mean() / y.abs().mean()) < tolerance
