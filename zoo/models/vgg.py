"""A VGG-style 2-D CNN for log-mel spectrograms."""

import torch
from torch import nn

from ann2snn_zoo.models.activation import make_activation


def _conv_bn_act(c_in: int, c_out: int, activation: str, levels: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(c_out), make_activation(activation, levels)]


class VGG(nn.Module):
    """VGG-style CNN (Simonyan & Zisserman, "Very deep convolutional networks for large-scale
    image recognition", ICLR 2015), scaled down for keyword spotting on log-mel features.

    Input: log-mel spectrogram [B, in_channels, n_mels, frames] (default [B, 1, 40, 101]).
    Output: logits [B, n_classes].
    Layers: one stage per entry of `widths`, each `convs_per_stage` x (3x3 Conv2d + BatchNorm2d
    + ReLU), MaxPool2d(2) between stages, AdaptiveAvgPool2d(1), flatten, linear.
    `activation`: "relu" or "qcfs" (``ann2snn.QCFS`` with `levels` steps, conversion-aware training).
    Parameters (default config, 10 classes): 72,666.
    """

    def __init__(
        self,
        n_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, ...] = (16, 32, 64),
        convs_per_stage: int = 2,
        activation: str = "relu",
        levels: int = 8,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                layers += _conv_bn_act(c_in, width, activation, levels)
                c_in = width
        self.features = nn.Sequential(*layers)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gap(self.features(x))
        return self.fc(torch.flatten(x, 1))


def build(n_classes: int, input_shape: tuple[int, ...], **options) -> VGG:
    """Build the VGG for log-mel input of shape (channels, n_mels, frames)."""
    return VGG(n_classes, in_channels=input_shape[0], **options)
