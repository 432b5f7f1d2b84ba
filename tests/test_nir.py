"""NIR export: graph structure and parameters read back with nir.read, the neuron mapping checked
against an Euler step, and a cross-library import (snnTorch) compared spike for spike."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.analysis import graph_neurons
from snn_test_nets import neuron_named

nir = pytest.importorskip("nir")


class ConvNet(nn.Module):
    """Conv2d -> ReLU -> AvgPool2d -> Conv2d -> ReLU -> flatten -> Linear -> ReLU -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6 * 2 * 2, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.c1(x)))
        x = torch.relu(self.c2(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


class ResidualNet(nn.Module):
    """A residual join of two neuron outputs, a skip from the input, 1-D and adaptive pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(2, 4, 3, padding=1)
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.skip = nn.Conv1d(2, 4, 1)
        self.pool = nn.MaxPool1d(2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.stem(x))
        b = F.relu(self.conv(a) + a + self.skip(x))
        b = self.pool(b)
        return self.fc(torch.flatten(F.adaptive_avg_pool1d(b, 1), 1))


def convert(model: nn.Module, x: torch.Tensor, **options) -> ann2snn.SpikingNetwork:
    """Per-layer thresholds and no correction unless asked: the mapping is checked on simple values."""
    torch.manual_seed(0)
    for key, value in dict(per_channel=False, percentile=99.9, correction="none").items():
        options.setdefault(key, value)
    return ann2snn.convert(model.eval(), T=options.pop("T", 8), learn_tau=False, calibration=[x], **options)


def node_types(graph) -> dict[str, str]:
    return {name: type(node).__name__ for name, node in graph.nodes.items()}


def test_round_trip_structure_and_folded_thresholds(tmp_path):
    torch.manual_seed(0)
    model, x = ConvNet(), torch.rand(6, 1, 8, 8)
    snn = convert(model, x, maxpool="avg")
    ann2snn.export_nir(snn, tmp_path / "snn.nir")
    graph = nir.read(tmp_path / "snn.nir")
    assert [p.name for p in tmp_path.iterdir()] == ["snn.nir"]
    assert node_types(graph) == {
        "x": "Input",
        "c1": "Conv2d",
        "relu_neuron": "IF",
        "pool": "AvgPool2d",
        "c2": "Conv2d",
        "relu_1_neuron": "IF",
        "flatten": "Flatten",
        "fc1": "Affine",
        "relu_2_neuron": "IF",
        "fc2": "Affine",
        "output": "Output",
    }
    assert sorted(graph.edges) == sorted(
        [
            ("x", "c1"),
            ("c1", "relu_neuron"),
            ("relu_neuron", "pool"),
            ("pool", "c2"),
            ("c2", "relu_1_neuron"),
            ("relu_1_neuron", "flatten"),
            ("flatten", "fc1"),
            ("fc1", "relu_2_neuron"),
            ("relu_2_neuron", "fc2"),
            ("fc2", "output"),
        ]
    )
    neurons = {name: neuron_named(snn, name) for name in ("relu_neuron", "relu_1_neuron", "relu_2_neuron")}
    theta = {name: float(n.threshold) for name, n in neurons.items()}
    first = graph.nodes["relu_neuron"]
    assert first.v_threshold.shape == (4, 8, 8) and np.allclose(first.v_threshold, theta["relu_neuron"])
    assert np.allclose(first.r, 1.0) and np.allclose(first.v_reset, 0.0)
    assert first.metadata["reset"] == "subtract" and np.allclose(first.metadata["v_init"], theta["relu_neuron"] / 2)
    # Spikes leave the NIR neurons with height 1: each threshold is folded into the next weights.
    assert np.allclose(graph.nodes["c1"].weight, model.c1.weight.detach().numpy())
    assert np.allclose(graph.nodes["c2"].weight, model.c2.weight.detach().numpy() * theta["relu_neuron"], rtol=1e-6)
    assert np.allclose(graph.nodes["fc1"].weight, model.fc1.weight.detach().numpy() * theta["relu_1_neuron"], rtol=1e-6)
    assert np.allclose(graph.nodes["fc2"].bias, model.fc2.bias.detach().numpy())
    assert list(graph.nodes["pool"].kernel_size) == [2, 2]
    assert (graph.nodes["flatten"].start_dim, list(graph.nodes["flatten"].input_type["input"])) == (0, [6, 2, 2])
    assert graph.metadata["T"] == 8 and graph.metadata["dt"] == 1.0


def test_residual_joins_scale_nodes_and_1d_pooling():
    torch.manual_seed(0)
    x = torch.randn(8, 2, 8)
    snn = convert(ResidualNet(), x, maxpool="avg")
    graph = ann2snn.export_nir(snn)
    types = node_types(graph)
    stem, join = "relu_neuron", "relu_1_neuron"
    # The join is three edges into the second neuron: the conv, the stem's spikes through a
    # Scale node (no single layer reads them alone), and the skip conv of the input.
    into_join = sorted(src for src, dst in graph.edges if dst == join)
    assert into_join == ["conv", f"{stem}_scale", "skip"]
    assert types[f"{stem}_scale"] == "Scale"
    theta = float(neuron_named(snn, stem).threshold)
    assert np.allclose(graph.nodes[f"{stem}_scale"].scale, theta)
    assert ("x", "skip") in graph.edges and (stem, "conv") in graph.edges
    assert np.allclose(graph.nodes["conv"].weight, snn.network.get_submodule("conv").weight.detach().numpy() * theta, rtol=1e-6)
    # 1-D average pools become dense Conv1d nodes that average each channel's window.
    pool = graph.nodes["pool_avg"]
    assert types["pool_avg"] == "Conv1d" and pool.weight.shape == (4, 4, 2)
    assert np.allclose(pool.weight, np.eye(4)[:, :, None] * 0.5) and pool.stride == 2
    gap = graph.nodes["adaptive_avg_pool1d"]
    assert types["adaptive_avg_pool1d"] == "Conv1d" and np.allclose(gap.weight, np.eye(4)[:, :, None] * 0.25)


def test_time_broadcast_is_identity():
    class InputSkip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding=1)
            self.fc = nn.Linear(16, 2)

        def forward(self, x):
            return self.fc((torch.relu(self.conv(x)) + x).flatten(1))

    torch.manual_seed(0)
    snn = convert(InputSkip(), torch.randn(4, 2, 8))
    assert any(type(m).__name__ == "TimeBroadcast" for m in snn.network.modules())
    graph = ann2snn.export_nir(snn)
    assert "TimeBroadcast" not in node_types(graph).values()
    assert ("x", "flatten") in graph.edges and ("relu_neuron_scale", "flatten") in graph.edges


def test_lif_mapping_equals_our_step():
    """LIF: tau = 1/(1-beta), r = tau, v_leak = 0; one Euler step with dt = 1 is our update."""
    torch.manual_seed(0)
    snn = ann2snn.convert(nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).eval(), T=12, learn_tau=False, tau=10.0, calibration=[torch.randn(16, 3)], per_channel=False, correction="none")
    graph = ann2snn.export_nir(snn)
    lif = graph.nodes["_1_neuron"]
    assert type(lif).__name__ == "LIF"
    assert np.allclose(lif.tau, 10.0) and np.allclose(lif.r, 10.0) and np.allclose(lif.v_leak, 0.0)
    neuron = snn.network.get_submodule("_1_neuron")
    currents = torch.randn(12, 5) * float(neuron.threshold)
    v, euler_spikes = torch.as_tensor(lif.metadata["v_init"]).float(), []
    for current in currents:  # NIR's continuous LIF, Euler step dt = 1, subtractive reset
        v = v + 1.0 / torch.as_tensor(lif.tau) * (torch.as_tensor(lif.v_leak) - v + torch.as_tensor(lif.r) * current)
        z = (v > torch.as_tensor(lif.v_threshold)).float()
        v = v - z * torch.as_tensor(lif.v_threshold)
        euler_spikes.append(z)
    neuron.reset()
    with torch.no_grad():
        ours = [neuron(current[None])[0] / neuron.threshold for current in currents]
    assert torch.equal(torch.stack(euler_spikes), torch.stack(ours))
    assert torch.stack(ours).sum() > 0


def test_per_channel_thresholds_fold_per_input_channel():
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    model = ConvNet()
    snn = convert(model, x, per_channel=True)
    graph = ann2snn.export_nir(snn)
    theta = neuron_named(snn, "relu_neuron").threshold.numpy()
    assert theta.shape == (4,) and np.allclose(graph.nodes["relu_neuron"].v_threshold[:, 0, 0], theta)
    assert np.allclose(graph.nodes["c2"].weight, model.c2.weight.detach().numpy() * theta[None, :, None, None], rtol=1e-6)
    theta2 = neuron_named(snn, "relu_1_neuron").threshold.numpy()  # 6 channels x 2 x 2 flattened
    assert np.allclose(graph.nodes["fc1"].weight, model.fc1.weight.detach().numpy() * np.repeat(theta2, 4)[None, :], rtol=1e-6)


def test_refusals(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 2, 8)
    with pytest.raises(ann2snn.ConversionError, match="max pooling has no NIR primitive.*maxpool='avg'"):
        ann2snn.export_nir(convert(ResidualNet(), x, maxpool="gated"), tmp_path / "gated.nir")
    assert list(tmp_path.iterdir()) == []
    uncalibrated = ann2snn.convert(ConvNet(), T=4, learn_tau=False)
    with pytest.raises(ann2snn.ConversionError, match="needs the input shape"):
        ann2snn.export_nir(uncalibrated)
    assert type(ann2snn.export_nir(uncalibrated, input_shape=(1, 8, 8)).nodes["c1"]).__name__ == "Conv2d"


# -- cross-library import ------------------------------------------------------------------------
def bound_thresholds(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> None:
    """Raise each threshold, layer by layer, above the largest current its neuron receives in one
    step. Then no membrane holds a second spike after a reset, the one case where snnTorch's
    ``reset_delay=False`` neuron (which postpones such a spike by a step) differs from ours."""
    for _, neuron in graph_neurons(snn.network):  # in graph order: each layer sees the raised ones before it
        largest = []
        hook = neuron.register_forward_hook(lambda module, inputs, output: largest.append((inputs[0] + module._broadcast(module.bias, inputs[0].dim())).max()))
        with torch.no_grad():
            snn(x)
        hook.remove()
        neuron.set_threshold(torch.maximum(neuron.threshold, max(largest) * 1.01))


@pytest.mark.parametrize("with_bias", [False, True])
def test_snntorch_import_matches_spike_for_spike(tmp_path, with_bias):
    """Export, read back, import with snnTorch, run both for T steps on the same inputs and
    compare every neuron's spike train and the averaged readout.

    Known differences, configured away rather than hidden:
    - snnTorch 1.0.0 maps NIR IF nodes to ``Leaky(beta=0.9, init_hidden=False)``: a leak NIR's IF
      does not have, and a neuron that returns (spikes, membrane) tuples, which the nirtorch
      executor then feeds to the next layer. We set beta = 1 and init_hidden = True.
    - NIR has no initial membrane; ours starts at theta/2 (metadata ``v_init``), which we load
      into snnTorch's membrane before each example.
    - Reset by subtraction is snnTorch's default, as ours; see ``bound_thresholds`` for the one
      corner where the two subtractive resets differ.
    With ``with_bias`` every neuron has a per-channel input offset (as bias correction sets), which
    must travel in the biases of the conv layers feeding the neurons.
    """
    snntorch = pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir

    torch.manual_seed(0)
    T, x = 16, torch.rand(4, 1, 8, 8)
    snn = convert(ConvNet(), x, T=T, mode="step", per_channel=with_bias)
    if with_bias:
        for _, neuron in graph_neurons(snn.network):
            neuron.set_correction(bias=0.2 * neuron.threshold * torch.randn(neuron.threshold.shape))
    bound_thresholds(snn, x)
    ann2snn.export_nir(snn, tmp_path / "snn.nir")
    graph = nir.read(tmp_path / "snn.nir")
    imported = import_from_nir(graph)
    leaky = {name: m for name, m in imported.named_modules() if isinstance(m, snntorch.Leaky)}
    assert sorted(leaky) == ["relu_1_neuron", "relu_2_neuron", "relu_neuron"]

    ours: dict[str, list[torch.Tensor]] = {name: [] for name in leaky}
    hooks = [neuron_named(snn, name).register_forward_hook(lambda m, i, o, n=name: ours[n].append(o != 0)) for name in leaky]
    with torch.no_grad():
        expected = snn(x)
    for hook in hooks:
        hook.remove()

    theirs: dict[str, list[torch.Tensor]] = {name: [] for name in leaky}
    for name, module in leaky.items():
        module.register_forward_hook(lambda m, i, o, n=name: theirs[n].append(o != 0))
    readouts = []
    with torch.no_grad():
        for example in x:  # NIR shapes have no batch dimension: run one example at a time
            for name, module in leaky.items():
                module.beta.fill_(1.0)
                module.init_hidden = True
                module.mem = torch.as_tensor(graph.nodes[name].metadata["v_init"]).float()
            state, total = None, 0.0
            for _ in range(T):
                out, state = imported(example, state)
                total = total + out
            readouts.append(total / T)

    for name in leaky:
        mine = torch.stack(ours[name])  # [T, B, ...]
        other = torch.stack(theirs[name]).unflatten(0, (x.shape[0], T)).transpose(0, 1)
        assert mine.shape == other.shape
        assert torch.equal(mine, other), f"{name}: {int((mine != other).sum())} of {mine.numel()} spikes differ"
        assert 0 < int(mine.sum()) < mine.numel()
    assert torch.allclose(torch.stack(readouts), expected, atol=1e-5)
    assert not math.isclose(float(expected.std()), 0.0)


def test_free_or_unknown_sizes_are_refused_naming_input_shape(tmp_path):
    """A NIR graph has fixed sizes: a network with a free length (input_shape=(1, None)) or none at
    all exports only with a concrete input_shape=, and the refusal says how."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    free = ann2snn.convert(model, T=4, learn_tau=False, calibration=[torch.randn(8, 1, 32)], input_shape=(1, None), correction="none")
    unknown = ann2snn.convert(model, T=4, learn_tau=False)
    how = r"input_shape=\(1, 8000\)\)"
    for snn, options, said in (
        (free, {}, r"snn.input_shape\) \[1, None\] has free \(None\) sizes"),
        (free, {"input_shape": (1, None)}, r"the input_shape given \[1, None\] has free"),
        (unknown, {}, "does not know it"),
    ):
        with pytest.raises(ann2snn.ConversionError, match=f"needs the input shape.*{said}.*ann2snn.export_nir\\(snn, path, {how}"):
            ann2snn.export_nir(snn, tmp_path / "free.nir", **options)
    assert list(tmp_path.iterdir()) == []
    for snn in (free, unknown):
        graph = ann2snn.export_nir(snn, tmp_path / "fixed.nir", input_shape=(1, 8000))
        assert list(graph.nodes[next(iter(graph.nodes))].input_type["input"]) == [1, 8000]
