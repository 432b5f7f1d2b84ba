"""One test group per graph pass: structure (networkx) and numbers (analog mode equals the CNN)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.graph import has_chain, joins, kind_counts, nodes_of_kind, to_networkx
from snn_test_nets import INPUT_SHAPE, RELU_FORMS_SITES, ReluFormsNet, ResidualConcatNet


def trained_bn(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics, then switch to evaluation."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def analog_output(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), snn.analog_mode():
        return snn.run_network(x)


def test_every_relu_form_becomes_its_own_neuron():
    model = ReluFormsNet().eval()
    snn = ann2snn.convert(model, learn_tau=False)
    graph = to_networkx(snn.network)
    counts = kind_counts(graph)
    assert counts["neuron"] == RELU_FORMS_SITES
    assert counts["relu"] == 0 and "clamp" not in counts and "clamp_min" not in counts
    assert len({graph.nodes[n]["target"] for n in nodes_of_kind(graph, "neuron")}) == RELU_FORMS_SITES
    x = torch.randn(32, 8)
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-6)  # in-place semantics kept


def test_capped_relus_cap_the_threshold():
    snn = ann2snn.convert(ReluFormsNet().eval(), learn_tau=False, calibration=[torch.randn(64, 8) * 10])
    caps = {m.source.split()[0]: m for m in snn.network.modules() if isinstance(m, ann2snn.SpikingNeuron) and m.cap}
    assert set(caps) == {"ReLU6", "Hardtanh", "torch.clamp"}
    assert caps["ReLU6"].cap == 6.0 and caps["Hardtanh"].cap == 2.0 and caps["torch.clamp"].cap == 3.0
    for neuron in caps.values():
        assert float(neuron.threshold.max()) <= neuron.cap


def test_batchnorm_is_folded_and_numerics_kept():
    model = trained_bn(ResidualConcatNet())
    snn = ann2snn.convert(model, learn_tau=False)
    graph = to_networkx(snn.network)
    assert kind_counts(graph)["batchnorm"] == 0
    assert len(snn.report.by_action("folded")) == 2
    x = torch.randn(8, *INPUT_SHAPE)
    logits = analog_output(snn, x)
    assert torch.allclose(F.log_softmax(logits, -1), model(x), atol=1e-5)


def test_unfoldable_batchnorm_is_kept_and_reported():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    trained_bn(model)
    snn = ann2snn.convert(model, learn_tau=False)
    assert kind_counts(to_networkx(snn.network))["batchnorm"] == 1
    assert any("could not be folded" in w for w in snn.report.warnings)
    x = torch.randn(5, 4)
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-6)


def test_dropout_removed_softmax_kept_as_output_head_readout_marked():
    snn = ann2snn.convert(ResidualConcatNet().eval(), learn_tau=False)
    counts = kind_counts(to_networkx(snn.network))
    assert counts["dropout"] == 0 and "log_softmax" not in counts
    assert {e.before for e in snn.report.dropped} == {"Dropout `drop`"}
    assert [e.before for e in snn.report.by_action("head")] == ["F.log_softmax"]
    assert snn.output_head == [("log_softmax", -1)]
    (readout,) = snn.report.by_action("readout")
    assert readout.node == "fc"
    assert "1 output head op applied to the output averaged over T" in snn.report.summary()


class TutorialM5Head(nn.Module):
    """The torchaudio tutorial's ending: linear readout, then log_softmax (trained with nll_loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 5, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = F.adaptive_avg_pool1d(F.relu(self.conv(x)), 1).flatten(1)
        return F.log_softmax(self.fc(x), dim=1)


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_output_head_gives_the_cnns_kind_of_values_and_its_loss_at_large_T(mode):
    torch.manual_seed(0)
    model = TutorialM5Head().eval()
    x, y = torch.randn(64, 1, 32), torch.randint(0, 4, (64,))
    snn = ann2snn.convert(model, T=256, learn_tau=False, calibration=[x], mode=mode)
    with torch.no_grad():
        out = snn(x)
        assert torch.allclose(out.exp().sum(1), torch.ones(64), atol=1e-5)  # log-probabilities, as the CNN's
        cnn_nll, snn_nll = F.nll_loss(model(x), y), F.nll_loss(out, y)
        assert abs(float(snn_nll) - float(cnn_nll)) < 0.02 * float(cnn_nll), (float(snn_nll), float(cnn_nll))
        snn.reset()
        assert torch.allclose(snn.step(x).exp().sum(1), torch.ones(64), atol=1e-5)


def test_max_pool_over_spikes_is_gated_and_structure_kept():
    snn = ann2snn.convert(ResidualConcatNet().eval(), learn_tau=False, maxpool="gated")
    graph = to_networkx(snn.network)
    counts = kind_counts(graph)
    assert counts["gated_pool"] == 2 and counts["maxpool"] == 0
    assert has_chain(graph, ["conv", "neuron", "gated_pool"])
    assert counts["neuron"] == 4  # F.relu, self.relu twice (one neuron per call site), torch.relu
    join_kinds = sorted(graph.nodes[v]["kind"] for v in joins(graph))
    assert join_kinds == ["add", "cat"]


def test_max_pool_as_average_pool():
    snn = ann2snn.convert(ResidualConcatNet().eval(), learn_tau=False, maxpool="avg")
    counts = kind_counts(to_networkx(snn.network))
    assert counts["gated_pool"] == 0 and counts["maxpool"] == 0 and counts["avgpool"] >= 2


def test_max_pool_before_relu_is_swapped_behind_the_neuron():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.MaxPool1d(2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 2)).eval()
    snn = ann2snn.convert(model, learn_tau=False)
    graph = to_networkx(snn.network)
    assert has_chain(graph, ["conv", "neuron", "gated_pool", "flatten"])
    x = torch.randn(6, 1, 16)
    assert torch.allclose(analog_output(snn, x), model(x), atol=1e-6)


def test_max_pool_on_the_input_path_stays_a_max_pool():
    model = nn.Sequential(nn.MaxPool1d(2), nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 2)).eval()
    snn = ann2snn.convert(model, learn_tau=False)
    counts = kind_counts(to_networkx(snn.network))
    assert counts["maxpool"] == 1 and counts["gated_pool"] == 0


def test_gated_max_pool_passes_the_most_active_input():
    pool = ann2snn.GatedMaxPool(1, kernel_size=2)
    # position 0 fires every 3rd step, position 1 every 2nd step: position 1 wins after a few steps
    spikes = [torch.tensor([[[float(t % 3 == 0), float(t % 2 == 0)]]]) for t in range(60)]
    out = torch.cat([pool(s) for s in spikes]).flatten()
    assert out[30:].mean() == pytest.approx(0.5, abs=0.02)  # the rate of the faster input, not the OR of both


def test_time_broadcast_where_the_input_meets_spikes():
    class InputSkip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)) + x)

    snn = ann2snn.convert(InputSkip().eval(), learn_tau=False)
    graph = to_networkx(snn.network)
    assert kind_counts(graph)["time_broadcast"] == 1
    x = torch.randn(3, 4)
    snn.mode = "layer"
    layer = snn(x)
    snn.mode = "step"
    assert torch.allclose(layer, snn(x), atol=1e-6)


@pytest.mark.parametrize(
    "dims, options, shape",
    [
        (1, dict(kernel_size=2), (3, 4, 17)),
        (1, dict(kernel_size=4), (3, 4, 30)),
        (2, dict(kernel_size=2), (3, 4, 9, 11)),
        (2, dict(kernel_size=(2, 3)), (3, 4, 8, 10)),
        (2, dict(kernel_size=3, stride=2, padding=1), (3, 4, 9, 9)),
        (2, dict(kernel_size=2, ceil_mode=True), (3, 4, 7, 9)),
    ],
    ids=["1d-k2-odd", "1d-k4", "2d-k2-odd", "2d-k2x3", "2d-overlapping-padded", "2d-ceil"],
)
def test_fast_spike_gate_equals_the_indexed_gate(dims, options, shape):
    """The no-grad gate (integer keys, max over strided slices where windows tile the input) picks
    the same spikes as the differentiable gate (max pooling with indices, then gather)."""
    torch.manual_seed(0)
    pool = ann2snn.GatedMaxPool(dims, **options)
    spikes = (torch.rand(20, *shape) < 0.3).float()
    fast = pool.spike_gate(spikes[0], 20, differentiable=False)
    indexed = pool.spike_gate(spikes[0], 20, differentiable=True)
    for z in spikes:
        expected = indexed(z)
        assert torch.equal(fast(z), expected)
    assert expected.shape == pool._pool(spikes[0]).shape
