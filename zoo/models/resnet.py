"""A ResNet-style keyword-spotting net on log-mel features, after res8 / res15."""

import torch
from torch import nn

from ann2snn_zoo.models.activation import make_activation

_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN layers; the identity is added before the final ReLU."""

    def __init__(self, width: int, activation: str = "relu", levels: int = 8) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = make_activation(activation, levels)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = make_activation(activation, levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu2(y + x)


class ResNet(nn.Module):
    """ResNet for small-footprint keyword spotting, in the spirit of res8 (Tang & Lin, "Deep
    residual learning for small-footprint keyword spotting", ICASSP 2018), with the standard
    ResNet ordering out = relu(bn(conv(...)) + identity).

    Input: log-mel spectrogram [B, in_channels, n_mels, frames] (default [B, 1, 40, 101]).
    Output: logits [B, n_classes].
    Layers: stem 3x3 Conv2d + BN + ReLU, optional pooling (`pool` = "avg" or "max" with kernel
    `pool_size`, res8's 4x3 average pool by default; None for none), `n_blocks` residual blocks
    of `width` channels, AdaptiveAvgPool2d(1), flatten, linear.
    `activation`: "relu" or "qcfs" (``ann2snn.QCFS`` with `levels` steps, conversion-aware training).
    Parameters (default config, 10 classes): 110,845.
    """

    def __init__(
        self,
        n_classes: int = 10,
        in_channels: int = 1,
        width: int = 45,
        n_blocks: int = 3,
        pool: str | None = "avg",
        pool_size: tuple[int, int] = (4, 3),
        activation: str = "relu",
        levels: int = 8,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [
            nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            make_activation(activation, levels),
        ]
        if pool is not None:
            stem.append(_POOLS[pool](pool_size))
        self.stem = nn.Sequential(*stem)
        self.blocks = nn.Sequential(*(ResidualBlock(width, activation, levels) for _ in range(n_blocks)))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gap(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def build(n_classes: int, input_shape: tuple[int, ...], **options) -> ResNet:
    """Build the ResNet for log-mel input of shape (channels, n_mels, frames)."""
    return ResNet(n_classes, in_channels=input_shape[0], **options)
