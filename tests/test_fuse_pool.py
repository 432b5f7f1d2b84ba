"""``passes.fuse_neuron_pools``: a neuron read only by a gated max pool or an average pool becomes
one ``NeuronPool`` node. The graph it leaves, and that it changes no number: outputs and gradients
equal the unfused network's (an average pool's bit for bit), step mode still equals layer mode,
and hooks on the neuron or the pool see what they saw unfused."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.analysis import graph_neurons, module_of
from ann2snn.graph import kind_counts, to_networkx
from ann2snn.neurons import SpikingNeuron
from ann2snn.temporal import GatedMaxPool, NeuronPool
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet


class UnfusableNet(nn.Module):
    """A neuron read by a max pool and by a mean (two readers), and a max pool reading an add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        pooled = F.max_pool1d(h, 2).mean(-1)
        joined = F.max_pool1d(F.relu(self.conv2(h)) + h, 2).mean(-1)
        return self.fc(torch.cat([pooled + h.mean(-1), joined], 1))


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(10, *INPUT_SHAPE)


def convert(model: nn.Module, data: torch.Tensor, fuse: bool = True, **options) -> ann2snn.SpikingNetwork:
    """Convert with the pipeline as it is, or with ``fuse_neuron_pools`` left out. Thresholds from
    a fixed percentile and no correction: calibration then never runs the SNN, whose outputs
    differ between the two in the last bits (a fused pool gates spikes, then scales them by the
    threshold; an unfused one gates the scaled spikes), so both get the same thresholds."""
    options = {"percentile": 99.9, "correction": "none", **options}
    if fuse:
        return ann2snn.convert(model, calibration=[data], **options)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ann2snn.passes, "fuse_neuron_pools", lambda gm, report: gm)
        return ann2snn.convert(model, calibration=[data], **options)


def fused_modules(snn: ann2snn.SpikingNetwork) -> list[NeuronPool]:
    return [m for m in snn.network.modules() if isinstance(m, NeuronPool)]


def test_each_neuron_and_its_only_reader_a_pool_become_one_node(data):
    snn = convert(ResidualConcatNet().eval(), data, T=8, learn_tau=False)
    nodes = [n for n in snn.network.graph.nodes if isinstance(module_of(snn.network, n), NeuronPool)]
    assert len(nodes) == 3
    for node in nodes:
        fused = module_of(snn.network, node)
        assert isinstance(fused.neuron, SpikingNeuron) and dict(fused.named_children()).keys() == {"neuron", "pool"}
    pools = sorted(type(module_of(snn.network, n).pool).__name__ for n in nodes)
    assert pools == ["GatedMaxPool", "GatedMaxPool", "TiledAvgPool1d"]  # the average pool: F.avg_pool1d(h, 2), lowered
    assert [module_of(snn.network, n).node_names for n in nodes][-1] == ("relu_3_neuron", "avg_pool1d_tiled")  # as before fusion
    modules = [type(module_of(snn.network, n)) for n in snn.network.graph.nodes if n.op == "call_module"]
    assert GatedMaxPool not in modules  # every gated pool here read a neuron alone
    names = [name for name, _ in graph_neurons(snn.network)]
    assert f"{nodes[0].target}.neuron" in names and len(names) == 4
    report = {entry.node: entry for entry in snn.report.entries}
    assert any(entry.module == f"{nodes[0].target}.neuron" and f"`{nodes[0].target}.neuron`" in entry.after for entry in report.values())
    assert any(entry.module == f"{nodes[0].target}.pool" and f"`{nodes[0].target}.pool`" in entry.after for entry in report.values())
    for name in names:  # calibration found each entry by its module: thresholds are reported
        assert snn.report.entry_for_module(name).threshold is not None
    graph = to_networkx(snn.network)  # drawn as what it computes: neuron -> gated pool
    assert kind_counts(graph)["gated_pool"] == 2 and kind_counts(graph)["avgpool"] == 1 and kind_counts(graph)["neuron"] == 4
    assert graph.has_edge(f"{nodes[0].name}.neuron", f"{nodes[0].name}.pool")


def test_a_neuron_with_two_readers_and_a_pool_of_a_sum_stay_apart():
    torch.manual_seed(0)
    x = torch.randn(6, 2, 12)
    snn = convert(UnfusableNet().eval(), x, T=6, learn_tau=False)
    assert fused_modules(snn) == []
    assert sum(isinstance(m, GatedMaxPool) for m in snn.network.modules()) == 2


@pytest.mark.parametrize("learn_tau", [False, True])
def test_fused_and_unfused_networks_compute_the_same_numbers(data, learn_tau):
    model = ResidualConcatNet().eval()
    fused = convert(model, data, T=12, learn_tau=learn_tau, tau=20.0)
    plain = convert(model, data, T=12, learn_tau=learn_tau, tau=20.0, fuse=False)
    assert len(fused_modules(fused)) == 3 and fused_modules(plain) == []
    weights = torch.linspace(-1, 1, 10 * 4).view(10, 4)
    results = []
    for snn in (fused, plain):
        with torch.no_grad():
            inferred = snn(data)
        out = snn(data)
        (out * weights).sum().backward()
        neurons = [neuron for _, neuron in graph_neurons(snn.network)]
        grads = [snn.network.conv1.weight.grad, snn.network.fc.weight.grad] + [n.leak_logit.grad for n in neurons if learn_tau]
        with torch.no_grad():
            snn.mode = "step"
            stepped = snn(data)
        results.append((inferred, out.detach(), grads, stepped))
    (inferred, trained, grads, stepped), (inferred_plain, trained_plain, grads_plain, stepped_plain) = results
    assert torch.allclose(inferred, inferred_plain, atol=1e-6) and torch.allclose(trained, trained_plain, atol=1e-6)
    assert torch.allclose(trained, inferred, atol=1e-6)
    for g, h in zip(grads, grads_plain, strict=True):
        assert torch.allclose(g, h, atol=1e-5, rtol=1e-4), (g - h).abs().max()
    assert torch.equal(stepped, stepped_plain)  # step mode never fuses
    assert torch.allclose(stepped, inferred, atol=1e-5)


def test_hooks_on_the_neuron_see_its_own_spikes_and_change_nothing(data):
    snn = convert(ResidualConcatNet().eval(), data, T=8, learn_tau=False)
    fused = fused_modules(snn)[0]
    with torch.no_grad():
        expected = snn(data)
        seen = {}
        handles = [
            fused.neuron.register_forward_hook(lambda module, args, out: seen.update(neuron=(args[0].shape, out))),
            fused.register_forward_hook(lambda module, args, out: seen.update(fused=out)),
        ]
        try:
            assert torch.equal(snn(data), expected)
        finally:
            for handle in handles:
                handle.remove()
    input_shape, spikes = seen["neuron"]  # the first neuron's input is the same at every step: [B, ...]
    assert spikes.shape == (8 * len(data), *input_shape[1:])  # the unpooled spike train of every step
    theta = fused.neuron._broadcast(fused.neuron.threshold, spikes.dim())
    assert set((spikes / theta).unique().tolist()) <= {0.0, 1.0}
    assert seen["fused"].shape == fused.pool._pool(spikes).shape  # the node's output is pooled


def test_profile_counts_the_neurons_own_spikes(data):
    model = ResidualConcatNet().eval()
    fused = convert(model, data, T=8, learn_tau=False)
    plain = convert(model, data, T=8, learn_tau=False, fuse=False)
    counts = [[(row.kind, row.spikes, row.acs, row.macs) for row in ann2snn.profile(snn, [data]).layers] for snn in (fused, plain)]
    assert counts[0] == counts[1]
    assert any(row.name.endswith(".neuron") for row in ann2snn.profile(fused, [data]).neuron_layers)


def test_save_and_load_keep_the_fused_node(data, tmp_path):
    snn = convert(ResidualConcatNet().eval(), data, T=8, learn_tau=False)
    name = next(name for name, _ in graph_neurons(snn.network) if name.endswith(".neuron"))
    assert f"network.{name}.threshold" in snn.state_dict()
    ann2snn.save(snn, tmp_path / "snn.pt")
    loaded = ann2snn.load(tmp_path / "snn.pt")
    assert len(fused_modules(loaded)) == 3 and fused_modules(loaded)[-1].node_names == fused_modules(snn)[-1].node_names
    with torch.no_grad():
        assert torch.equal(loaded(data), snn(data))


class AveragePoolNet(nn.Module):
    """Average pools after neurons: a (4, 3) window (PyTorch's kernel), a 2 x 2 one (lowered to
    strided sums) and a global adaptive one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.pool1 = nn.AvgPool2d((4, 3), stride=(1, 3))
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.pool2 = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(6, 8, 3, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.fc(self.gap(F.relu(self.conv3(x))).flatten(1))


@pytest.mark.parametrize("neuron, learn_tau", [("subtract", False), ("subtract", True), ("reset-to-zero", False)])
def test_average_pools_run_inside_the_neurons_loop_bit_for_bit(neuron, learn_tau, monkeypatch):
    """Inference and training with every average pool run inside its neuron's loop, batch slice
    by batch slice, give the outputs and gradients of the unfused network, bit for bit."""
    torch.manual_seed(0)
    x = torch.randn(6, 1, 12, 12)
    model = AveragePoolNet().eval()
    fused = convert(model, x, T=5, learn_tau=learn_tau, tau=20.0, neuron=neuron)
    plain = convert(model, x, T=5, learn_tau=learn_tau, tau=20.0, neuron=neuron, fuse=False)
    averages = fused_modules(fused)
    assert [type(m.pool).__name__ for m in averages] == ["AvgPool2d", "TiledAvgPool2d", "AdaptiveAvgPool2d"]
    seen = []  # the batch sizes each average pool is called with
    for module in averages:
        module.pool.forward = lambda input, pool=module.pool: (seen.append((type(pool).__name__, len(input))), type(pool).forward(pool, input))[1]
    monkeypatch.setattr(ann2snn.neurons, "SLICE_BYTES", 4 * 12 * 12 * 4 * 2)  # two examples per slice: several slices
    for time_chunk in (None, 2):  # whole sequence, and time chunks carrying the membranes
        fused.time_chunk = plain.time_chunk = time_chunk
        seen.clear()
        with torch.no_grad():
            assert torch.equal(fused(x), plain(x))
        sizes = [size for _, size in seen]
        assert sizes and max(sizes) <= len(x) and 2 in sizes  # each step's slices pooled inside the loop, never the whole train
    fused.time_chunk = plain.time_chunk = None
    fused.pool_static_input = True  # an approximation for gated max pools only: average pools stay exact
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))
    fused.pool_static_input = False
    for time_chunk in (None, 2):  # training: pooled inside the fused loop (IF, LIF), or after the reference loop
        fused.time_chunk = plain.time_chunk = time_chunk
        fused.zero_grad(), plain.zero_grad()
        seen.clear()
        out, expected = fused(x), plain(x)
        assert torch.equal(out, expected)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weights).sum().backward()
        (expected * weights).sum().backward()
        if neuron == "subtract":  # the fused backward through time: each slice pooled, and differentiated, in its loop
            assert max(size for kind, size in seen if kind != "AdaptiveAvgPool2d") <= len(x)  # (adaptive: after the loop)
        grads = {name: p.grad for name, p in fused.named_parameters() if p.grad is not None}
        for name, p in plain.named_parameters():  # the same parameters, under the fused or unfused module path
            if p.grad is not None:
                match = [g for other, g in grads.items() if other.split(".")[-1] == name.split(".")[-1] and g.shape == p.grad.shape and torch.equal(g, p.grad)]
                assert match, name


def test_hooks_on_an_average_pool_see_the_unpooled_train(data):
    torch.manual_seed(0)
    x = torch.randn(4, 1, 12, 12)
    snn = convert(AveragePoolNet().eval(), x, T=6, learn_tau=False)
    fused = fused_modules(snn)[0]
    seen = {}
    with torch.no_grad():
        expected = snn(x)
        handle = fused.pool.register_forward_hook(lambda module, args, out: seen.update(input=args[0], out=out))
        try:
            assert torch.equal(snn(x), expected)
        finally:
            handle.remove()
    assert seen["input"].shape[0] == 6 * len(x) and seen["out"].shape[-2:] == (9, 4)


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), nn.AvgPool2d(3, stride=2), nn.AdaptiveAvgPool2d(2)])
def test_a_pool_called_with_a_keyword_input_converts_unfused(pool):
    class KeywordPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = pool
            self.fc = nn.LazyLinear(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.pool(input=F.relu(self.conv(x))).flatten(1))

    torch.manual_seed(0)
    x = torch.randn(4, 1, 6, 6)
    model = KeywordPool()
    model(x)
    snn = convert(model.eval(), x, T=3)
    assert fused_modules(snn) == []  # a call with keywords is left as it is
    with torch.no_grad():
        assert snn(x).shape == (4, 3)


def test_backward_hooks_on_a_fused_average_pool_see_its_own_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 12, 12)
    snn = convert(AveragePoolNet().eval(), x, T=5)
    fused = fused_modules(snn)[0]
    seen = {}
    fused.pool.register_full_backward_hook(lambda module, grad_in, grad_out: seen.update(pool=grad_out[0].shape))
    fused.neuron.register_full_backward_hook(lambda module, grad_in, grad_out: seen.update(neuron=grad_out[0].shape))
    snn(x).sum().backward()
    assert seen["neuron"] == (5 * len(x), 4, 12, 12) and seen["pool"] == (5 * len(x), 4, 9, 4)  # the unpooled train's gradient, then the pooled one's
