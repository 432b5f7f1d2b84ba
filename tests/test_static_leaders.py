"""The first IF neuron under direct encoding, fused with a gated max pool, runs on each window's
largest input where that is provably exact (``SpikingNeuron._static_leaders``): the outputs are
bit for bit those of gating every position's spikes, and windows whose inputs rounding could
reorder send the call down the full loop."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.neurons import SpikingNeuron
from ann2snn.temporal import GatedMaxPool, NeuronPool
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet

EPS = torch.finfo(torch.float32).eps


class WindowNet(nn.Module):
    """The neuron sees the input itself (a 1 x 1 convolution of weight 1): chosen windows."""

    def __init__(self, dims: int = 1, kernel: int = 4, stride: int | None = None) -> None:
        super().__init__()
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.MaxPool2d)
        self.conv, self.pool = conv(1, 1, 1), pool(kernel, stride)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.conv(x)))


@pytest.fixture
def taken(monkeypatch) -> list[bool]:
    """Whether each call of ``_static_leaders`` took the max-pooled path."""
    calls: list[bool] = []
    original = SpikingNeuron._static_leaders

    def spy(self, *args, **kwargs):
        leaders = original(self, *args, **kwargs)
        calls.append(leaders is not None)
        return leaders

    monkeypatch.setattr(SpikingNeuron, "_static_leaders", spy)
    return calls


def full_loop(snn: ann2snn.SpikingNetwork, x: torch.Tensor, monkeypatch) -> torch.Tensor:
    """The output of gating every position's spikes (the max-pooled path switched off)."""
    with monkeypatch.context() as patch, torch.no_grad():
        patch.setattr(SpikingNeuron, "_static_leaders", lambda self, *args, **kwargs: None)
        return snn(x)


def window_snn(x: torch.Tensor, T: int, **net) -> ann2snn.SpikingNetwork:
    snn = ann2snn.convert(WindowNet(**net).eval(), T=T, calibration=[x], per_channel=False)
    neuron = next(m for m in snn.network.modules() if isinstance(m, SpikingNeuron))
    neuron.threshold.fill_(1.0)  # currents are the inputs themselves
    return snn


@pytest.mark.parametrize("time_chunk", [None, 3])
def test_a_converted_net_runs_on_the_windows_leaders_with_the_same_bits(monkeypatch, taken, time_chunk):
    torch.manual_seed(0)
    x = torch.randn(6, *INPUT_SHAPE)
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=16, calibration=[x])
    snn.time_chunk = time_chunk
    taken.clear()
    with torch.no_grad():
        out = snn(x)
    assert taken and all(taken)  # the 2-D first layer: its 2 x 2 windows tile
    assert torch.equal(out, full_loop(snn, x, monkeypatch))
    fused = next(m for m in snn.network.modules() if isinstance(m, NeuronPool) and isinstance(m.pool, GatedMaxPool))
    assert fused.pool.count is None  # the gate never ran


def near_tie_windows(base: float, ulps: list[int]) -> torch.Tensor:
    """One window of four positions per entry: ``base`` and values ``ulps`` float steps below it."""
    top = torch.tensor(base)
    rows = []
    for k in ulps:
        below = top.clone()
        for _ in range(k):
            below = torch.nextafter(below, torch.tensor(-math.inf))
        rows.append(torch.stack([below, top, below, top - 0.25]))
    return torch.cat(rows).view(1, 1, -1)


@pytest.mark.parametrize("base", [0.3, 0.7, 0.999])
def test_nearly_equal_inputs_below_the_threshold_take_the_full_loop(monkeypatch, taken, base):
    x = near_tie_windows(base, [1, 2, 3])  # within 4 eps: rounding could swap their order
    snn = window_snn(x, T=64)
    taken.clear()  # conversion ran it too
    with torch.no_grad():
        out = snn(x)
    assert taken == [False]
    assert torch.equal(out, full_loop(snn, x, monkeypatch))


@pytest.mark.parametrize("base, ulps", [(0.3, [40, 100]), (0.7, [20, 64]), (1.5, [1, 2]), (-0.2, [1, 2]), (0.6, [0])])
def test_inputs_apart_above_the_threshold_or_below_zero_take_the_leaders(monkeypatch, taken, base, ulps):
    """Far enough apart (at least 4 eps in current), a leader above 1 (it fires at every step),
    a window whose largest current is below 0 (nothing fires), or exact ties (equal spikes)."""
    x = near_tie_windows(base, ulps)
    snn = window_snn(x, T=64)
    taken.clear()  # conversion ran it too
    with torch.no_grad():
        out = snn(x)
    assert taken == [True]
    assert torch.equal(out, full_loop(snn, x, monkeypatch))


def test_close_windows_agree_with_the_full_loop_over_many_steps(monkeypatch, taken):
    """Windows whose smaller inputs lie 4.5 to 22.5 eps below the largest (or tie with it), where
    rounding over many steps matters most, take the leaders and match the gated pool over 300
    steps; windows with inputs closer than 4 eps take the full loop."""
    torch.manual_seed(1)
    base = torch.rand(2000, 1) * 0.98 + 0.01
    clear = torch.randint(0, 6, (2000, 4)).float() * 4.5 * EPS  # 0 (a tie) or at least 4.5 eps below
    clear[:, 0] = 0.0
    near = torch.randint(1, 8, (2000, 4)).float() * 0.5 * EPS
    for offsets, leaders in ((clear, True), (near, False)):
        x = (base - offsets).reshape(4, 1, -1)
        snn = window_snn(x, T=300)
        for example in x.split(1):
            taken.clear()
            with torch.no_grad():
                out = snn(example)
            assert taken == [leaders]
            assert torch.equal(out, full_loop(snn, example, monkeypatch))


def test_overlapping_windows_leaky_neurons_and_gradients_take_the_full_loop(monkeypatch, taken):
    torch.manual_seed(2)
    x = torch.rand(2, 1, 9, 9)
    overlapping = window_snn(x, T=8, dims=2, kernel=3, stride=2)
    taken.clear()
    with torch.no_grad():
        overlapping(x)
    assert taken == [False]
    taken.clear()
    leaky = ann2snn.convert(WindowNet().eval(), T=8, calibration=[x[:, :, 0]], tau=4.0)
    taken.clear()
    with torch.no_grad():
        leaky(x[:, :, 0])
    assert taken == [] or taken == [False]  # an LIF neuron never takes it
    taken.clear()
    trained = window_snn(x[:, :, 0], T=8)
    taken.clear()
    trained(x[:, :, 0].requires_grad_()).sum().backward()
    assert not any(taken)
