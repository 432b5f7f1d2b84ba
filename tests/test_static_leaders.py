"""The first IF neuron under direct encoding, fused with a gated max pool, runs on each window's
largest input (``SpikingNeuron._static_leaders``): the outputs are bit for bit those of gating
every position's spikes, however close the inputs of a window, whatever T."""

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


@pytest.mark.parametrize("base, ulps", [(0.3, [1, 2, 3]), (0.999, [1, 2]), (0.7, [20, 64]), (1.5, [1, 2]), (-0.2, [1, 2]), (0.6, [0])])
def test_nearly_equal_inputs_take_the_leaders_with_the_same_bits(monkeypatch, taken, base, ulps):
    """Inputs a few float steps apart below the threshold (rounding cannot reorder their spike
    counts), a leader above 1 (it fires at every step), a window below 0, exact ties."""
    x = near_tie_windows(base, ulps)
    snn = window_snn(x, T=600)
    taken.clear()  # conversion ran it too
    with torch.no_grad():
        out = snn(x)
    assert taken == [True]
    assert torch.equal(out, full_loop(snn, x, monkeypatch))


def test_close_windows_agree_with_the_full_loop_over_many_steps(monkeypatch, taken):
    """Windows of values 0 to 7 half-eps steps apart, per-channel offsets and initial potentials
    at the ends of [0, 1], 300 steps, overlapping and padded windows too."""
    torch.manual_seed(1)
    base = torch.rand(2000, 1) * 0.98 + 0.01
    x = (base - torch.randint(0, 8, (2000, 4)).float() * 0.5 * EPS).reshape(4, 1, -1)
    for kernel, stride in ((4, None), (3, 2)):
        snn = window_snn(x, T=300, kernel=kernel, stride=stride)
        neuron = next(m for m in snn.network.modules() if isinstance(m, SpikingNeuron))
        for initial, bias in ((0.0, 0.0), (1.0, 0.0), (0.5, 0.75)):
            neuron.set_correction(bias=torch.tensor(bias), initial=torch.tensor(initial))
            taken.clear()
            with torch.no_grad():
                out = snn(x)
            assert taken == [True]
            assert torch.equal(out, full_loop(snn, x, monkeypatch))


@pytest.mark.parametrize(
    "net, shape",
    [
        (nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.MaxPool1d(2), nn.Linear(4, 3)), (5, 6)),
        (nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6, 3)), (5, 2, 8)),
    ],
)
def test_pools_of_inputs_without_a_batch_dimension_convert(taken, net, shape):
    """A MaxPool1d after a Linear layer pools [N, F] as one example without a batch dimension
    (and a MaxPool2d pools [N, C, L] so): its windows span examples and channels, so the leaders
    are not taken, and the neuron takes one threshold, not one per channel (per-channel
    thresholds failed on the pooled shape)."""
    torch.manual_seed(3)
    net, x = net.eval(), torch.randn(*shape)
    snn = ann2snn.convert(net, T=256, calibration=[x])
    neuron = next(m for m in snn.network.modules() if isinstance(m, SpikingNeuron))
    taken.clear()
    with torch.no_grad():
        out = snn(x)
        assert not any(taken) and neuron.threshold.dim() == 0
        assert (out - net(x)).abs().max() < 0.05 * net(x).abs().max()


def test_leaky_neurons_and_gradients_take_the_full_loop(monkeypatch, taken):
    torch.manual_seed(2)
    x = torch.rand(2, 1, 9)
    leaky = ann2snn.convert(WindowNet().eval(), T=8, calibration=[x], tau=4.0)
    taken.clear()
    with torch.no_grad():
        leaky(x)
    assert not any(taken)  # an LIF neuron never takes it
    trained = window_snn(x, T=8)
    taken.clear()
    trained(x.requires_grad_()).sum().backward()
    assert not any(taken)
