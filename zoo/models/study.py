"""The three audio CNNs of the study this project answers, reimplemented in our own words.

Reference: "Retraining SNN Conversions: CNN to SNN for Audio Classification Tasks" (NTU final
year project) and its code, github.com/Eve-ning/snn_voice (``snn_voice/model``: ``mx/m5``,
``piczak``, ``hjh``), read at commit be50843. The study trained them on Speech Commands (35
words) resampled to 4 kHz: M5 on the raw waveform, the other two on 60-band log-mel
spectrograms (a 60 ms window, so n_fft = 240 at 4 kHz, and the transform's default hop of half
a window). ``zoo.registry`` gives each its front end (``STUDY_FRONT_END`` for the spectrogram
models, 4 kHz waveform for M5); the layer structure below follows the study's code.
"""

from __future__ import annotations

import torch
from torch import nn

#: The study's spectrogram front end (FrontEnd settings): 4 kHz, 60 mel bands, 60 ms windows
#: (240 samples) every 30 ms.
STUDY_FRONT_END = {"sample_rate": 4000, "n_mels": 60, "n_fft": 240, "hop": 120}
#: The study's waveform front end: 4 kHz.
STUDY_WAVEFORM = {"sample_rate": 4000}


def _conv1d_block(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv1d (padding kernel // 2 - 1, as the study) + BatchNorm1d + ReLU + MaxPool1d(4)."""
    return nn.Sequential(nn.Conv1d(c_in, c_out, kernel, stride, padding=kernel // 2 - 1), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(4))


class StudyM5(nn.Module):
    """The study's M5 variant (its ``M5CNN``; after Dai et al., ICASSP 2017), wider than the
    torchaudio-tutorial M5 of ``zoo.models.m5``: four blocks of Conv1d + BatchNorm1d + ReLU +
    MaxPool1d(4) with 128, 128, 256 and 512 channels (``width`` scales them; 128 is the study's),
    the first with an 80-tap kernel at stride 4, the others with 3 taps, each padded by
    ``kernel // 2 - 1``; global average pooling; one linear layer.

    Input: raw waveform [B, in_channels, samples] (the study's: [B, 1, 4000], 1 s at 4 kHz).
    Output: logits [B, n_classes].
    Parameters (default config, 10 classes): 559,114.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, width: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv1d_block(in_channels, width, 80, stride=4),
            _conv1d_block(width, width, 3),
            _conv1d_block(width, 2 * width, 3),
            _conv1d_block(2 * width, 4 * width, 3),
        )
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


class StudyPiczak(nn.Module):
    """The study's Piczak CNN (its ``PiczakCNN``; after Piczak, MLSP 2015), which differs from
    ``zoo.models.piczak`` (the paper's) in its head: global average pooling over the feature
    map, then 5,000-unit hidden layers. Two blocks of Conv2d + MaxPool2d (+ Dropout) + ReLU: 80
    filters spanning all but 3 mel bands (57 of the study's 60) and 6 frames, max-pooled 4 x 3
    with stride 1 x 3, dropout 0.5; then 80 filters of 1 x 3, max-pooled 1 x 3. Then Linear +
    Dropout(0.5) + ReLU twice (``hidden`` units, 5,000 in the study) and a linear output.
    (Pooling before the ReLU equals pooling after it; the converter handles either order.)

    Input: log-mel spectrogram [B, in_channels, n_mels, frames] (the study's: 60 bands, 34
    frames at 4 kHz); ``n_mels`` sizes the first kernel.
    Output: logits [B, n_classes].
    Parameters (default config, 10 classes): 25,506,730 (the 5,000 x 5,000 layer is 98 % of them).
    """

    def __init__(self, n_classes: int = 10, n_mels: int = 60, in_channels: int = 1, filters: int = 80, hidden: int = 5000, dropout: float = 0.5) -> None:
        super().__init__()
        if n_mels < 4:
            raise ValueError(f"StudyPiczak needs at least 4 mel bands, got {n_mels}")
        self.conv1 = nn.Conv2d(in_channels, filters, kernel_size=(n_mels - 3, 6))
        self.pool1 = nn.MaxPool2d((4, 3), stride=(1, 3))
        self.drop1 = nn.Dropout(dropout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(filters, filters, kernel_size=(1, 3))
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 3))
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(filters, hidden)
        self.drop3 = nn.Dropout(dropout)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, hidden)
        self.drop4 = nn.Dropout(dropout)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.drop1(self.pool1(self.conv1(x))))
        x = self.relu2(self.pool2(self.conv2(x)))
        x = torch.flatten(self.gap(x), 1)
        x = self.relu3(self.drop3(self.fc1(x)))
        x = self.relu4(self.drop4(self.fc2(x)))
        return self.fc3(x)


class StudyHJH(nn.Module):
    """The study's third and smallest audio CNN (its ``HjhCNN``): Conv2d(5 x 5, 8 filters,
    "same" padding) + BatchNorm2d + ReLU + MaxPool2d(2), Conv2d(5 x 5, 16 filters, "same") +
    BatchNorm2d + ReLU, global average pooling, one linear layer (``widths`` scales the filters).

    Input: log-mel spectrogram [B, in_channels, n_mels, frames] (the study's: 60 bands at 4 kHz).
    Output: logits [B, n_classes].
    Parameters (default config, 10 classes): 3,642.
    """

    def __init__(self, n_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (8, 16)) -> None:
        super().__init__()
        a, b = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, a, 5, padding="same"), nn.BatchNorm2d(a), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 5, padding="same"), nn.BatchNorm2d(b), nn.ReLU(),
        )  # fmt: skip
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(b, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


def build_m5(n_classes: int, input_shape: tuple[int, ...], **options) -> StudyM5:
    """The study's M5 for waveform input of shape (channels, samples)."""
    return StudyM5(n_classes, in_channels=input_shape[0], **options)


def build_piczak(n_classes: int, input_shape: tuple[int, ...], **options) -> StudyPiczak:
    """The study's Piczak CNN for log-mel input of shape (channels, n_mels, frames)."""
    return StudyPiczak(n_classes, n_mels=input_shape[1], in_channels=input_shape[0], **options)


def build_hjh(n_classes: int, input_shape: tuple[int, ...], **options) -> StudyHJH:
    """The study's small CNN for log-mel input of shape (channels, n_mels, frames)."""
    return StudyHJH(n_classes, in_channels=input_shape[0], **options)
