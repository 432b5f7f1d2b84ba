"""ann2snn.profile: spike counts, synaptic operations, MACs and energy checked against hand counts."""

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.profile import AC_PJ, MAC_PJ


class LinearPair(nn.Module):
    """x -> Linear(2, 3) -> ReLU -> Linear(3, 2): three neurons whose spikes can be counted by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 2)
        with torch.no_grad():
            self.a.weight.copy_(torch.tensor([[0.6, 0.0], [0.0, 1.2], [-1.0, 0.0]]))
            self.a.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def tiny_snn() -> ann2snn.SpikingNetwork:
    # Thresholds stay 1 (no calibration); the neurons receive 0.6, 1.2 and -1 at every step.
    return ann2snn.convert(LinearPair(), T=5, learn_tau=False, input_shape=(2,))


# Membrane from 0.5, subtract reset, spike when above 1, T = 5 steps:
#   input 0.6: 1.1 s, 0.7, 1.3 s, 0.9, 1.5 s  -> 3 spikes
#   input 1.2: spikes every step               -> 5 spikes
#   input -1 : never                           -> 0 spikes
SPIKES = 3 + 5 + 0
ACS_B = SPIKES * 2  # every spike reaches the 2 outputs of layer b
MACS_A = 2 * 3  # one dense pass of layer a per example


@pytest.mark.parametrize("mode, macs_a", [("layer", MACS_A), ("step", 5 * MACS_A)])
def test_profile_matches_hand_count(mode, macs_a):
    result = ann2snn.profile(tiny_snn(), [torch.ones(4, 2)], mode=mode)
    rows = {row.name: row for row in result.layers}
    assert [row.name for row in result.layers] == ["a", "relu_neuron", "b"]
    neuron, a, b = rows["relu_neuron"], rows["a"], rows["b"]
    assert result.examples == 4 and result.T == 5 and result.mode == mode
    assert neuron.neurons == 3 and neuron.spikes == SPIKES
    assert neuron.firing_rate == pytest.approx(SPIKES / (3 * 5))
    # a's input is the analog input under direct encoding: MACs, once per example in layer mode
    # (the time-invariant input is processed once) and once per step in step mode.
    assert (a.input, a.macs, a.acs, a.cnn_macs) == ("analog", macs_a, 0, MACS_A)
    assert (b.input, b.acs, b.macs, b.cnn_macs) == ("spikes", ACS_B, 0, 3 * 2)
    assert result.cnn_macs == 12
    assert result.energy_pj == pytest.approx(ACS_B * AC_PJ + macs_a * MAC_PJ)
    assert result.cnn_energy_pj == pytest.approx(12 * MAC_PJ)
    assert result.firing_rate == pytest.approx(SPIKES / 15)


def test_profile_counts_conv_fan_out_at_padded_borders():
    """A spike at the border of a padded conv reaches fewer outputs than one in the interior."""
    snn = ann2snn.convert(nn.Sequential(nn.ReLU(), nn.Conv1d(1, 2, 3, padding=1)), T=1, learn_tau=False, input_shape=(1, 4))
    x = torch.tensor([[[2.0, 0.0, 2.0, 0.0]]])  # neurons at positions 0 and 2 spike once
    conv = {row.name: row for row in ann2snn.profile(snn, x).layers}["1"]
    # position 0 feeds outputs 0 and 1, position 2 feeds outputs 1, 2 and 3, each in 2 channels
    assert conv.acs == (2 + 3) * 2
    assert conv.cnn_macs == 4 * 2 * 3


def test_profile_rate_encoder_counts_input_events():
    snn = ann2snn.convert(LinearPair(), T=5, learn_tau=False, input_shape=(2,), encoder="latency")
    x = torch.tensor([[1.0, 0.0]])  # one input spike (the zero never fires) at the first step
    rows = {row.name: row for row in ann2snn.profile(snn, x).layers}
    assert rows["a"].input == "spikes"
    assert rows["a"].acs == 1 * 3 and rows["a"].macs == 0


def test_profile_table_and_restores_mode():
    snn = tiny_snn()
    result = ann2snn.profile(snn, [(torch.ones(2, 2), torch.zeros(2))], mode="step")
    assert snn.mode == "layer"
    text = str(result)
    assert text.splitlines()[0].split()[:5] == ["layer", "kind", "input", "neurons", "rate"]
    assert "relu_neuron" in text and "spikes/neuron/step" in text.splitlines()[-1]


def test_layer_and_step_mode_count_the_same_spikes_with_gated_max_pooling():
    """Layer mode may fuse a neuron with the gated max pool after it; the profile must still
    count the neuron's own spikes, not the pooled ones."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.randn(4, 1, 22)
    snn = ann2snn.convert(model, T=6, learn_tau=False, calibration=[x])
    with torch.no_grad():
        snn(x)  # a layer-mode forward first, as in use
    layer, step = (ann2snn.profile(snn, x, mode=mode) for mode in ("layer", "step"))
    for a, b in zip(layer.layers, step.layers):
        assert (a.name, a.neurons, a.spikes, a.acs) == (b.name, b.neurons, b.spikes, b.acs)
    neuron = next(row for row in layer.layers if row.kind == "neuron")
    assert neuron.neurons == 4 * 20 and neuron.spikes > 0


class AnalogOps(nn.Module):
    """x -> LeakyReLU (analog, on the input path) -> LinearPair's a -> ReLU -> Linear(3, 4) ->
    GroupNorm(2, 4) (an analog island) -> Linear(4, 2) (reads the island's analog increments)."""

    def __init__(self) -> None:
        super().__init__()
        self.pair = LinearPair()
        self.norm = nn.GroupNorm(2, 4)
        self.c = nn.Linear(4, 2)
        self.pair.b = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.pair.a(nn.functional.leaky_relu(x, 0.1)))
        return self.c(self.norm(self.pair.b(hidden)))


@pytest.mark.parametrize("mode, runs_on_input", [("layer", 1), ("step", 5)])
def test_profile_counts_the_analog_ops(mode, runs_on_input):
    """Per example, T = 5: the LeakyReLU reads the 2 inputs (1 MAC each) once in layer mode, at
    every step in step mode; the island runs at every step: its running mean 4 elements x 1 MAC,
    the GroupNorm 4 x 4 (statistics, normalise, affine), the increments 4 x 2; the Linear after it
    reads analog values: 4 x 2 dense MACs per step. Layer b reads the 8 spikes of LinearPair."""
    with pytest.warns(ann2snn.ConversionWarning):
        snn = ann2snn.convert(AnalogOps(), T=5, learn_tau=False, input_shape=(2,), allow_analog=True)
    result = ann2snn.profile(snn, [torch.ones(3, 2)], mode=mode)
    rows = {row.name: row for row in result.layers}
    expected = {  # name: (kind, input, SNN MACs, CNN MACs)
        "leaky_relu": ("F.leaky_relu", "analog", 2 * runs_on_input, 2),
        "norm_rate_in": ("RateMean", "analog", 4 * 1 * 5, 0),
        "norm": ("GroupNorm", "rates", 4 * 4 * 5, 16),
        "norm_rate_out": ("RateIncrement", "rates", 4 * 2 * 5, 0),
    }
    for name, (kind, reads, macs, cnn_macs) in expected.items():
        row = rows[name]
        assert (row.kind, row.input, row.macs, row.cnn_macs, row.acs, row.analog) == (kind, reads, macs, cnn_macs, 0, True), name
    assert [row.name for row in result.analog_layers] == list(expected)
    assert (rows["c"].input, rows["c"].macs, rows["c"].acs, rows["c"].analog) == ("analog", 4 * 2 * 5, 0, False)
    assert (rows["pair.b"].input, rows["pair.b"].acs) == ("spikes", SPIKES * 4)
    analog_macs = 2 * runs_on_input + 20 + 80 + 40
    assert result.analog_macs == analog_macs
    assert result.macs == analog_macs + MACS_A * runs_on_input + 40
    assert result.cnn_macs == 2 + MACS_A + 3 * 4 + 16 + 4 * 2
    assert result.energy_pj == pytest.approx(SPIKES * 4 * AC_PJ + result.macs * MAC_PJ)
    assert f"({analog_macs:.3g} in analog ops)" in result.summary()
