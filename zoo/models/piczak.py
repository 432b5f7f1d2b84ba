"""The environmental-sound CNN of Piczak (2015), sized for 1 s log-mel inputs."""

import torch
from torch import nn


class Piczak(nn.Module):
    """Piczak, "Environmental sound classification with convolutional neural networks",
    MLSP 2015: two conv + ReLU + max-pool + dropout blocks, two fully connected ReLU layers
    with dropout, linear output.

    The first conv spans all but 3 mel bands (57 of 60 in the paper) and 6 frames, max-pooled
    4x3 with stride 1x3; the second is 1x3, max-pooled 1x3. The paper's hidden layers have
    5,000 units for 41-frame inputs; `hidden` scales them down (500 by default).
    Input: log-mel spectrogram [B, in_channels, n_mels, frames] (default [B, 1, 40, 101]); the
    shape is needed at construction to size the first fully connected layer.
    Output: logits [B, n_classes].
    Parameters (default config, 10 classes): 693,130.
    """

    def __init__(
        self,
        n_classes: int = 10,
        n_mels: int = 40,
        frames: int = 101,
        in_channels: int = 1,
        filters: int = 80,
        hidden: int = 500,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if n_mels < 4 or frames < 20:
            raise ValueError(f"Piczak needs at least 4 mel bands and 20 frames, got {n_mels} x {frames}")
        self.conv1 = nn.Conv2d(in_channels, filters, kernel_size=(n_mels - 3, 6))
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d((4, 3), stride=(1, 3))
        self.drop1 = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(filters, filters, kernel_size=(1, 3))
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 3))
        self.drop2 = nn.Dropout(dropout)
        t = ((frames - 5) - 3) // 3 + 1  # conv1 then pool1 along time
        t = ((t - 2) - 3) // 3 + 1  # conv2 then pool2
        self.fc1 = nn.Linear(filters * t, hidden)
        self.relu3 = nn.ReLU()
        self.drop3 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, hidden)
        self.relu4 = nn.ReLU()
        self.drop4 = nn.Dropout(dropout)
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.pool1(self.relu1(self.conv1(x))))
        x = self.drop2(self.pool2(self.relu2(self.conv2(x))))
        x = torch.flatten(x, 1)
        x = self.drop3(self.relu3(self.fc1(x)))
        x = self.drop4(self.relu4(self.fc2(x)))
        return self.fc3(x)


def build(n_classes: int, input_shape: tuple[int, ...], **options) -> Piczak:
    """Build the Piczak CNN for log-mel input of shape (channels, n_mels, frames)."""
    in_channels, n_mels, frames = input_shape
    return Piczak(n_classes, n_mels=n_mels, frames=frames, in_channels=in_channels, **options)
