"""Calibration computes the values it promises, checked against independent computations
(issue 16): thresholds are percentiles of the positive activations, per channel where asked, with
a silent channel falling back to the layer value; "auto" picks the candidate with the smallest
output error; batch norm is folded only where exact; the user's model is left as it was."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.calibrate import AUTO_CANDIDATES, AUTO_EXAMPLES


class OneLayer(nn.Module):
    """conv -> ReLU -> linear, with channel 3 silent (its bias far below zero)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, 4, 3)
        self.fc = nn.Linear(4 * 14, 2)
        with torch.no_grad():
            self.conv.bias[3] = -100.0

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def _neuron(snn) -> ann2snn.SpikingNeuron:
    return next(m for m in snn.network.modules() if isinstance(m, ann2snn.SpikingNeuron))


@pytest.mark.parametrize("percentile", [50.0, 90.0, 99.9])
def test_per_layer_threshold_is_the_percentile_of_the_positive_activations(percentile):
    model, x = OneLayer().eval(), torch.randn(64, 1, 16)
    snn = ann2snn.convert(model, T=8, learn_tau=False, calibration=[x], percentile=percentile, per_channel=False, correction="none")
    with torch.no_grad():
        activation = F.relu(model.conv(x))
    positive = activation[activation > 0]
    assert float(_neuron(snn).threshold) == pytest.approx(float(torch.quantile(positive, percentile / 100)), rel=1e-5)


def test_per_channel_thresholds_are_each_channels_percentile_and_silent_channels_take_the_layers():
    model, x = OneLayer().eval(), torch.randn(64, 1, 16)
    snn = ann2snn.convert(model, T=8, learn_tau=False, calibration=[x], percentile=90.0, per_channel=True, correction="none")
    with torch.no_grad():
        activation = F.relu(model.conv(x))
    layer = torch.quantile(activation[activation > 0], 0.9)
    threshold = _neuron(snn).threshold
    assert threshold.shape == (4,)
    for c in range(3):
        row = activation[:, c][activation[:, c] > 0]
        assert float(threshold[c]) == pytest.approx(float(torch.quantile(row, 0.9)), rel=1e-5), c
    assert float(threshold[3]) == pytest.approx(float(layer), rel=1e-5)  # never active: the layer's value
    assert len(set(threshold[:3].tolist())) == 3


def test_auto_picks_the_candidate_closest_to_the_cnns_outputs(tone_cnn):
    model, calibration, _ = tone_cnn
    batches = list(calibration.split(64))
    held = torch.cat(batches)[:AUTO_EXAMPLES]
    errors = {}
    with torch.no_grad():
        reference = model(held)
        for candidate in AUTO_CANDIDATES:
            snn = ann2snn.convert(model, T=4, learn_tau=False, calibration=batches, percentile=candidate, correction="none")
            out = snn(held)  # classifier outputs: top-1 disagreement first, then squared error
            errors[candidate] = (float((out.argmax(1) != reference.argmax(1)).float().mean()), float((out - reference).pow(2).mean()))
    auto = ann2snn.convert(model, T=4, learn_tau=False, calibration=batches, percentile="auto", correction="none")
    assert len(set(errors.values())) > 1, errors  # the choice matters
    assert auto.report.settings["percentile_chosen"] == min(errors, key=errors.get), errors


class SharedConv(nn.Module):
    """The conv output is read by the batch norm and by a second branch: folding the batch norm
    into the conv would change what the second branch sees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4 * 6, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((F.relu(self.bn(y)) + F.relu(y)).flatten(1))


def test_batchnorm_is_not_folded_into_a_conv_with_other_readers():
    torch.manual_seed(0)
    model = SharedConv()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(8, 1, 8)
    snn = ann2snn.convert(model, T=4, learn_tau=False, calibration=[x])
    with torch.no_grad(), snn.analog_mode():
        assert torch.allclose(snn.network(x), model(x), atol=1e-5)


def test_streaming_with_the_latency_encoder_equals_the_forward_pass():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2)).eval()
    x = torch.rand(4, 1, 8)
    snn = ann2snn.convert(model, T=6, learn_tau=False, calibration=[x], encoder="latency", mode="step", correction="none")
    with torch.no_grad():
        whole = snn(x)
        snn.reset()
        streamed = torch.stack([snn.step(x) for _ in range(6)]).mean(0)
    assert torch.allclose(whole, streamed, atol=1e-6)


def test_convert_leaves_every_submodule_mode_and_parameter_of_the_users_model(tone_cnn):
    model = tone_cnn[0]
    calibration = tone_cnn[1]
    model.train()
    model.bn1.eval()  # a mixed state, as a user may leave it
    modes = {name: m.training for name, m in model.named_modules()}
    params = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        ann2snn.convert(model, T=4, learn_tau=True, calibration=calibration.split(64))
        assert {name: m.training for name, m in model.named_modules()} == modes
        assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    finally:
        model.eval()


def test_layer_and_step_mode_gradients_are_equal(tone_cnn):
    model, calibration, x_test = tone_cnn
    snn = ann2snn.convert(model, T=6, learn_tau=True, tau=20.0, calibration=calibration.split(64))
    grads = {}
    for mode in ("layer", "step"):
        snn.mode = mode
        snn.zero_grad()
        F.cross_entropy(snn(x_test[:16]), torch.zeros(16, dtype=torch.long)).backward()
        grads[mode] = {k: p.grad.clone() for k, p in snn.named_parameters() if p.grad is not None}
    assert grads["layer"].keys() == grads["step"].keys() and grads["layer"]
    for k in grads["layer"]:
        assert torch.allclose(grads["layer"][k], grads["step"][k], rtol=1e-4, atol=1e-6), k
