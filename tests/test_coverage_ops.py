"""Issue 13: what users bring converts. Linear and identity ops are carried, global and adaptive
max pooling is gated, every refusal is listed at once, an ignored input is refused, input sizes
can be left free, analog islands see rates and converge with T, the supported-ops table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError


def analog_output(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), snn.analog_mode():
        return snn.run_network(x)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp(min=1e-6))


def step_layer_and_limit(model: nn.Module, x: torch.Tensor, T: int = 512, **options) -> tuple[ann2snn.SpikingNetwork, float, float]:
    """Convert an IF network calibrated at the 100th percentile; return it, the largest step-mode
    vs layer-mode difference at T=16, and the relative error against the CNN at ``T``."""
    options = dict(learn_tau=False, calibration=[x], percentile=100.0, correction="none") | options
    snn = ann2snn.convert(model, T=16, **options)
    with torch.no_grad():
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
        snn.mode, snn.T = "layer", T
        error = relative_error(snn(x), model(x))
    return snn, float((layer - step).abs().max()), error


# -- 1. linear and identity ops carried ---------------------------------------------------------
class Linear1d(nn.Module):
    """An audio-style 1-D net through every linear op the issue names (and identities in eval)."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.ops import StochasticDepth

        self.conv = nn.Conv1d(1, 6, 5, stride=2)
        self.up = nn.ConvTranspose1d(6, 6, 4, stride=2, padding=1)
        self.depth = StochasticDepth(0.3, "row")
        self.upsample = nn.Upsample(scale_factor=2, mode="linear")
        self.reflect = nn.ReflectionPad1d(2)
        self.replicate = nn.ReplicationPad1d((1, 2))
        self.drops = nn.Sequential(nn.Dropout(0.2), nn.AlphaDropout(0.2), nn.FeatureAlphaDropout(0.1), nn.Dropout1d(0.1))
        self.conv2 = nn.Conv1d(6, 8, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.depth(self.up(x))
        x = self.replicate(self.reflect(self.upsample(x)))
        x = F.interpolate(x, scale_factor=0.5, mode="nearest")
        x = F.pad(x, (2, 1), mode="reflect") + F.pad(x, (1, 2), mode="replicate")
        x = F.pad(x, (1, 1), value=0.25)
        x = F.relu(self.conv2(F.feature_alpha_dropout(self.drops(x), 0.1, self.training)))
        return self.fc(x.mean(-1))


class Linear2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.pad = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(4, 4, 3)
        self.bilinear = nn.Upsample(size=(12, 12), mode="bilinear", align_corners=False)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.up(F.relu(self.conv(x)))
        x = F.relu(self.conv2(self.pad(x)))
        x = self.bilinear(x) + F.interpolate(x, size=(12, 12), mode="bicubic", align_corners=True)
        x = F.relu(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("net, shape", [(Linear1d, (1, 40)), (Linear2d, (1, 6, 6))])
def test_linear_and_identity_ops_are_carried_exactly(net, shape):
    torch.manual_seed(0)
    model = net().eval()
    x = torch.randn(16, *shape)
    snn, step_vs_layer, error = step_layer_and_limit(model, x)
    assert not snn.report.analog
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-5)
    assert step_vs_layer < 1e-5
    assert error < 0.05, error


def test_identities_in_eval_are_removed_and_reported():
    snn = ann2snn.convert(Linear1d().eval(), learn_tau=False)
    dropped = sorted(e.before.split()[0] for e in snn.report.dropped)
    assert dropped == sorted(["AlphaDropout", "Dropout", "Dropout1d", "F.feature_alpha_dropout", "FeatureAlphaDropout", "StochasticDepth"]) or dropped == sorted(
        ["AlphaDropout", "Dropout", "Dropout1d", "F.feature_alpha_dropout", "FeatureAlphaDropout", "torchvision.stochastic_depth"]
    )
    names = {n.target for n in snn.network.graph.nodes}
    assert not any("dropout" in str(getattr(t, "__name__", t)) for t in names)
