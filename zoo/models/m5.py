"""M5: the raw-waveform 1-D CNN of Dai et al. (2017), as in the torchaudio Speech Commands tutorial."""

import torch
import torch.nn.functional as F
from torch import nn

from ann2snn_zoo.models.activation import make_activation

_POOLS = {"max": nn.MaxPool1d, "avg": nn.AvgPool1d}


class M5(nn.Module):
    """M5 (Dai, Dai, Qu, Li, Das: "Very deep convolutional neural networks for raw waveforms",
    ICASSP 2017), in the form of the torchaudio Speech Commands tutorial.

    Input: raw waveform [B, in_channels, samples] (default [B, 1, 8000]: 1 s at 8 kHz).
    Output: logits [B, n_classes].
    Layers: Conv1d(k=80, stride) + BN + ReLU + pool(4), then three blocks of Conv1d(k=3) + BN +
    ReLU + pool(4) with n, 2n, 2n channels, global average pool, linear.
    `pool` picks MaxPool1d ("max", the paper's) or AvgPool1d ("avg", easier to convert).
    `activation`: "relu" (``F.relu``, as in the tutorial) or "qcfs" (``ann2snn.QCFS`` with
    `levels` steps, for conversion-aware training).
    Parameters (default config, 10 classes): 25,290.
    """

    def __init__(
        self,
        n_classes: int = 10,
        in_channels: int = 1,
        n_channel: int = 32,
        stride: int = 16,
        pool: str = "max",
        activation: str = "relu",
        levels: int = 8,
    ) -> None:
        super().__init__()
        self.activations = None if activation == "relu" else nn.ModuleList(make_activation(activation, levels) for _ in range(4))
        pool_cls = _POOLS[pool]
        self.conv1 = nn.Conv1d(in_channels, n_channel, kernel_size=80, stride=stride)
        self.bn1 = nn.BatchNorm1d(n_channel)
        self.pool1 = pool_cls(4)
        self.conv2 = nn.Conv1d(n_channel, n_channel, kernel_size=3)
        self.bn2 = nn.BatchNorm1d(n_channel)
        self.pool2 = pool_cls(4)
        self.conv3 = nn.Conv1d(n_channel, 2 * n_channel, kernel_size=3)
        self.bn3 = nn.BatchNorm1d(2 * n_channel)
        self.pool3 = pool_cls(4)
        self.conv4 = nn.Conv1d(2 * n_channel, 2 * n_channel, kernel_size=3)
        self.bn4 = nn.BatchNorm1d(2 * n_channel)
        self.pool4 = pool_cls(4)
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc1 = nn.Linear(2 * n_channel, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self._activate(0, self.bn1(self.conv1(x))))
        x = self.pool2(self._activate(1, self.bn2(self.conv2(x))))
        x = self.pool3(self._activate(2, self.bn3(self.conv3(x))))
        x = self.pool4(self._activate(3, self.bn4(self.conv4(x))))
        x = torch.flatten(self.gap(x), 1)
        return self.fc1(x)

    def _activate(self, k: int, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.activations is None else self.activations[k](x)


def build(n_classes: int, input_shape: tuple[int, ...], **options) -> M5:
    """Build M5 for waveform input of shape (channels, samples)."""
    return M5(n_classes, in_channels=input_shape[0], **options)
