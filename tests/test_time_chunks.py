"""Layer mode in time chunks: k steps at a time, neuron and pool state carried from chunk to chunk,
gives the outputs and gradients of the run over all T steps at once."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import timeloop
from ann2snn.bptt import SubtractResetSequence
from ann2snn.neurons import SpikingNeuron
from ann2snn.temporal import GatedMaxPool, NeuronPool, TimeBroadcast
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet


class StaticSkipNet(nn.Module):
    """A skip connection from before the first neuron to after it: a time-invariant value meets
    spikes (a TimeBroadcast under direct encoding), then max pooling and a 1-D tail."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv1d(6, 8, 3)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        y = F.relu(self.conv2(F.relu(h)) + h)
        y = F.max_pool1d(y, 2)
        y = F.max_pool1d(F.relu(self.conv3(y)), 3)
        return self.fc(y.mean(-1))


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(12, *INPUT_SHAPE)


def run(snn, x, backward=True):
    """Output and gradients (of a fixed function of the output) of one call."""
    snn.zero_grad(set_to_none=True)
    if not backward:
        with torch.no_grad():
            return snn(x), []
    out = snn(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), [p.grad.clone() for p in snn.parameters() if p.grad is not None]


def assert_same(a, b, atol=1e-6):
    (out_a, grads_a), (out_b, grads_b) = a, b
    assert torch.allclose(out_a, out_b, atol=atol), (out_a - out_b).abs().max()
    assert len(grads_a) == len(grads_b)
    for g, h in zip(grads_a, grads_b):
        assert torch.allclose(g, h, atol=1e-5, rtol=1e-4), (g - h).abs().max()


@pytest.mark.parametrize("fused_bptt", [True, False], ids=["fused-bptt", "autograd-bptt"])
@pytest.mark.parametrize("fuse_pools", [True, False], ids=["fused-pools", "pools"])
def test_time_chunks_change_neither_outputs_nor_gradients(data, fused_bptt, fuse_pools, monkeypatch):
    if not fuse_pools:
        monkeypatch.setattr(ann2snn.passes, "fuse_neuron_pools", lambda gm, report: gm)  # the pass not applied
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=16, learn_tau=True, tau=20.0, calibration=[data])
    assert any(isinstance(m, NeuronPool) for m in snn.modules()) == fuse_pools
    for module in snn.modules():
        if isinstance(module, SpikingNeuron):
            module.fused_bptt = fused_bptt
    snn.batch_chunk, snn.time_chunk = 12, 16
    whole = run(snn, data)
    assert any(g.abs().sum() > 0 for g in whole[1])
    for batch_chunk, time_chunk in ((12, 5), (12, 1), (5, 4), (1, 7)):
        snn.batch_chunk, snn.time_chunk = batch_chunk, time_chunk
        assert snn.chunk_plan(data) == (batch_chunk, time_chunk)
        assert_same(run(snn, data), whole)


@pytest.mark.parametrize("learn_tau", [False, True])
def test_time_chunks_in_inference_equal_step_mode(learn_tau):
    """The in-place inference loop (with the fused gate's integer keys carried over) and a static
    skip connection (computed once, broadcast over each chunk's steps)."""
    torch.manual_seed(3)
    x = torch.randn(10, 2, 24)
    snn = ann2snn.convert(StaticSkipNet().eval(), T=24, learn_tau=learn_tau, tau=30.0, calibration=[x])
    assert any(isinstance(m, TimeBroadcast) for m in snn.modules()) and any(isinstance(m, NeuronPool) for m in snn.modules())
    with torch.no_grad():
        snn.mode = "step"
        stepped = snn(x)
        snn.mode = "layer"
        snn.time_chunk = 24
        whole = snn(x)
        assert torch.allclose(whole, stepped, atol=1e-5)
        for time_chunk in (7, 3, 1):
            snn.time_chunk = time_chunk
            assert torch.allclose(snn(x), whole, atol=1e-6)
    snn.time_chunk = 24
    reference = run(snn, x)
    snn.time_chunk = 5
    assert_same(run(snn, x), reference)


def test_time_chunks_with_a_spiking_encoder(data):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=12, learn_tau=False, encoder="latency", calibration=[data])
    with torch.no_grad():
        snn.time_chunk = 12
        whole = snn(data)
        snn.time_chunk = 5
        assert torch.allclose(snn(data), whole, atol=1e-6)


def test_no_state_outlives_a_call(data):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=True, calibration=[data])
    snn.time_chunk = 3
    snn(data).sum().backward()
    for module in snn.temporal_modules():
        assert getattr(module, "v", None) is None and getattr(module, "count", None) is None and getattr(module, "_rank", None) is None
    assert all(m.time_steps == 3 and m.chunked for m in snn.temporal_modules())


def test_chunk_plan(data, monkeypatch):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=10, learn_tau=False, calibration=[data])
    assert snn.batch_chunk is None and snn.time_chunk is None
    largest = snn._largest_activation_bytes(data[:1])
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 24 * largest)  # 24 example-steps per chunk
    assert snn.chunk_plan(data) == (3, 5)  # 3 examples x 8 steps fit; 10 steps: 5 + 5
    assert snn.chunk_size(data) == 2  # examples for callers that run all T steps at once
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 100 * largest)
    assert snn.chunk_plan(data) == (12, 5)  # the whole batch x 8 steps fit; 10 steps: 5 + 5
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 24 * largest)
    monkeypatch.setattr(timeloop, "MIN_TIME_CHUNK", 1)
    assert snn.chunk_plan(data) == (12, 2)  # the whole batch first
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 7 * largest)  # under one step of the batch: slices
    assert snn.chunk_plan(data) == (6, 1)  # 12 examples in two even slices
    monkeypatch.setattr(timeloop, "MIN_TIME_CHUNK", 8)
    assert snn.chunk_plan(data) == (1, 5)  # 1 example x 7 steps; 10 steps: 5 + 5
    monkeypatch.setattr(timeloop, "CHUNK_BYTES", 24 * largest)
    snn.batch_chunk = 4
    assert snn.chunk_plan(data) == (4, 5)  # 6 steps fit; spread evenly: 5 + 5
    snn.batch_chunk, snn.time_chunk = None, 3
    assert snn.chunk_plan(data) == (6, 3)  # as asked: 3 + 3 + 3 + 1 steps; 8 examples fit: 6 + 6
    snn.time_chunk = 100
    assert snn.chunk_plan(data) == (2, 10)
    with pytest.raises(ann2snn.ConversionError, match="time_chunk"):
        snn.time_chunk = 0
    monkeypatch.setattr(GatedMaxPool, "supports_time_chunks", False)  # a module that cannot carry state
    snn.time_chunk = 3
    assert snn.chunk_plan(data)[1] == 10


def test_saved_networks_keep_their_time_chunk(data, tmp_path):
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=False, calibration=[data])
    snn.time_chunk = 3
    with torch.no_grad():
        expected = snn(data)
    path = tmp_path / "snn.pt"
    ann2snn.save(snn, path)
    loaded = ann2snn.load(path)
    assert loaded.time_chunk == 3
    with torch.no_grad():
        assert torch.allclose(loaded(data), expected, atol=1e-6)
    state = {k: v for k, v in snn.__getstate__().items() if k != "_time_chunk"}
    old = ann2snn.SpikingNetwork.__new__(ann2snn.SpikingNetwork)
    old.__setstate__(state)
    assert old.time_chunk is None


@pytest.mark.parametrize("repeated", [False, True])
def test_fused_sequence_hands_its_membrane_on_with_gradients(repeated):
    """SubtractResetSequence over 9 steps equals 4 + 5 steps chained through ``final``/``initial``."""
    torch.manual_seed(0)
    beta = torch.tensor([0.9, 0.95, 1.0]).view(3, 1).requires_grad_()
    current = (torch.rand(2, 3, 4) if repeated else torch.rand(9, 2, 3, 4)).mul(0.8).requires_grad_()
    initial = torch.full((2, 3, 4), 0.5)
    weights = torch.randn(9, 2, 3, 4)
    whole, final = SubtractResetSequence.apply(current, beta, 9, repeated, initial)
    ((whole * weights).sum() + final.sum()).backward()
    expected = whole.detach(), current.grad.clone(), beta.grad.clone()
    current.grad = beta.grad = None
    first, middle = SubtractResetSequence.apply(current if repeated else current[:4], beta, 4, repeated, initial)
    second, final = SubtractResetSequence.apply(current if repeated else current[4:], beta, 5, repeated, middle)
    chained = torch.cat([first, second])
    ((chained * weights).sum() + final.sum()).backward()
    assert torch.equal(chained.detach(), expected[0])
    assert torch.allclose(current.grad, expected[1], atol=1e-6)
    assert torch.allclose(beta.grad, expected[2], atol=1e-5)


def test_gate_state_crosses_between_gate_kinds():
    """A chunk may run the differentiable gate and the next the inference gate (or back): the
    running count carries over either way."""
    torch.manual_seed(0)
    pool = GatedMaxPool(1, 3)
    spikes = (torch.rand(12, 2, 4, 9) > 0.6).float()
    reference = pool.spike_gate(spikes[0], 12, differentiable=True)
    expected = torch.stack([reference(z) for z in spikes])
    pool.chunked, pool.sequence_steps = True, 12
    outs = []
    for start, differentiable in ((0, False), (4, True), (8, False)):
        gate = pool.spike_gate(spikes[0], 4, differentiable=differentiable)
        outs += [gate(z) for z in spikes[start : start + 4]]
    assert torch.equal(torch.stack(outs), expected)


@pytest.mark.parametrize("learn_tau", [False, True])
def test_neuron_loop_in_batch_slices_is_bit_identical(data, monkeypatch, learn_tau):
    """Inference runs each neuron's loop over cache-sized batch slices (``neurons.SLICE_BYTES``):
    the same operations per element, so the same bits, with fused gates and chunks too."""
    from ann2snn import neurons

    snn = ann2snn.convert(ResidualConcatNet().eval(), T=12, learn_tau=learn_tau, tau=30.0, calibration=[data])
    assert any(isinstance(m, NeuronPool) for m in snn.modules())
    with torch.no_grad():
        whole = snn(data)
        monkeypatch.setattr(neurons, "SLICE_BYTES", 1)  # one example per slice
        assert torch.equal(snn(data), whole)
        snn.time_chunk = 5
        chunked = snn(data)
        monkeypatch.setattr(neurons, "SLICE_BYTES", 2**30)
        assert torch.equal(snn(data), chunked)


@pytest.mark.parametrize("repeated", [False, True])
def test_fused_sequence_in_batch_slices_is_bit_identical(repeated):
    torch.manual_seed(1)
    beta = torch.tensor([0.9, 0.95, 1.0]).view(3, 1).requires_grad_()
    current = (torch.rand(5, 3, 4) if repeated else torch.rand(7, 5, 3, 4)).mul(0.8).requires_grad_()
    initial = torch.rand(5, 3, 4).requires_grad_()
    weights = torch.randn(7, 5, 3, 4)
    results = []
    for rows in (0, 2, 1):
        current.grad = beta.grad = initial.grad = None
        spikes, final = SubtractResetSequence.apply(current, beta, 7, repeated, initial, rows)
        ((spikes * weights).sum() + (final * final).sum()).backward()
        results.append((spikes.detach(), final.detach(), current.grad.clone(), beta.grad.clone(), initial.grad.clone()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b) if a.dim() else torch.allclose(a, b)


def test_pooling_static_input_first_is_an_option(data):
    """``pool_static_input`` (off by default): the first neuron, whose input is the same at every
    step, runs on the max-pooled input instead of gating its pooled spikes; its output is the
    spike train of each window's largest input, times the threshold."""
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=32, learn_tau=False, calibration=[data])
    assert snn.pool_static_input is False
    fused = next(m for m in snn.network.modules() if isinstance(m, NeuronPool))
    first, pool = fused.neuron, fused.pool
    assert first.static_source
    seen = {}
    fused.register_forward_hook(lambda module, args, out: seen.update(out=out, x=args[0]))  # a hook on the neuron would unfuse it
    with torch.no_grad():
        exact = snn(data)
        snn.pool_static_input = True
        approximate = snn(data)
        snn.time_chunk = 5
        assert torch.allclose(snn(data), approximate, atol=1e-6)
        snn.time_chunk = None
        approximate = snn(data)
        reference = SpikingNeuron(learn_tau=False)
        reference.load_state_dict(first.state_dict())
        reference.time_steps, reference.broadcast_input = 32, True
        assert torch.equal(seen["out"], reference(pool._pool(seen["x"])))
        snn.mode = "step"
        assert torch.allclose(snn(data), exact, atol=1e-5)  # step mode is unchanged
    assert (approximate - exact).abs().mean() < 0.1 * exact.abs().mean()
    snn.mode = "layer"
    out = snn(data)
    out.sum().backward()
    assert snn.network.get_submodule("conv1").weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "dims, options, shape",
    [(1, dict(kernel_size=4), (3, 5, 37)), (2, dict(kernel_size=2), (2, 3, 7, 9)), (2, dict(kernel_size=3, stride=2, padding=1), (2, 3, 8, 9)), (1, dict(kernel_size=3, ceil_mode=True), (2, 3, 10))],
)
def test_leading_positions_equal_index_returning_max_pooling(dims, options, shape):
    """The differentiable spike gate finds each window's leading position from integer keys: the
    same maxima and indices (ties to the first position) as max_pool(return_indices=True)."""
    torch.manual_seed(0)
    pool = GatedMaxPool(dims, **options)
    for steps in (3, 40):
        count = torch.randint(0, steps + 1, shape).float()
        expected, index = pool._pool(count, return_indices=True)
        leading, found = pool._leading(count, steps)
        assert torch.equal(leading, expected) and torch.equal(found, index)
    huge = torch.full(shape, 2.0**22)  # keys beyond float32's integers: float64
    huge[..., 0] += 1
    assert torch.equal(pool._leading(huge, 2**22 + 1)[1], pool._pool(huge, return_indices=True)[1])


@pytest.mark.parametrize("leak", [True, False])
def test_fused_sequence_scaling_its_input_is_bit_identical(leak):
    """SubtractResetSequence given the layer input, offset and threshold computes (x + bias) / theta
    slice by slice, forward and backward (an IF neuron divides while charging): the same bits as
    autograd through the scaling outside."""
    torch.manual_seed(2)
    theta, bias = torch.tensor([0.5, 1.0, 2.0]).view(3, 1), torch.tensor([0.1, -0.2, 0.0]).view(3, 1)
    beta = torch.tensor([0.9, 0.95, 1.0]).view(3, 1).requires_grad_() if leak else None
    x = torch.rand(6, 4, 3, 5).mul(1.5).requires_grad_()
    initial = torch.full((4, 3, 5), 0.5)
    weights = torch.randn(6, 4, 3, 5)
    results = []
    for inside, rows in ((False, 0), (True, 0), (True, 3)):
        x.grad = None
        if leak:
            beta.grad = None
        if inside:
            spikes, final = SubtractResetSequence.apply(x, beta, 6, False, initial, rows, theta, bias)
        else:
            spikes, final = SubtractResetSequence.apply((x + bias) / theta, beta, 6, False, initial, rows)
        (spikes * weights).sum().backward()
        results.append((spikes.detach(), final.detach(), x.grad.clone()) + ((beta.grad.clone(),) if leak else ()))
    assert results[0][0].sum() > 0
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.mark.parametrize("repeated, leak", [(False, True), (True, True), (False, False)])
def test_fused_sequence_scaling_its_output_is_bit_identical(repeated, leak):
    """SubtractResetSequence given ``scale`` returns the spikes times it, and differentiates the
    product, in its own loops: the same bits, forward and backward, as autograd through
    ``spikes * theta`` outside (the neuron's output without a fused pool)."""
    torch.manual_seed(3)
    theta = torch.tensor([0.5, 1.0, 2.0]).view(3, 1)
    beta = torch.tensor([0.9, 0.95, 1.0]).view(3, 1).requires_grad_()
    x = (torch.rand(4, 3, 5) if repeated else torch.rand(6, 4, 3, 5)).mul(1.5).requires_grad_()
    initial = torch.full((4, 3, 5), 0.5)
    weights = torch.randn(6, 4, 3, 5)
    results = []
    for inside, rows in ((False, 0), (True, 0), (True, 3)):
        x.grad = beta.grad = None
        if inside:
            out, _ = SubtractResetSequence.apply(x, beta, 6, repeated, initial, rows, None, None, theta)
        else:
            spikes, _ = SubtractResetSequence.apply(x, beta, 6, repeated, initial, rows)
            out = spikes * theta
        (out * weights).sum().backward()
        results.append((out.detach(), x.grad.clone(), beta.grad.clone()))
    assert results[0][0].sum() > 0 and results[0][1].abs().sum() > 0
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.mark.parametrize("tau", [math.inf, 20.0])
def test_layer_mode_inference_loop_equals_the_step_bit_for_bit(tau):
    """The layer-mode inference loop, which offsets and scales each slice of the layer input itself
    (an IF neuron divides while charging), emits the spikes of the reference step fed
    ``(x + bias) / theta`` one step at a time, bit for bit."""
    torch.manual_seed(4)
    neuron = SpikingNeuron(tau=tau)
    neuron.set_threshold(torch.tensor([0.3, 0.7, 1.9]))
    neuron.set_correction(bias=torch.tensor([0.05, -0.1, 0.0]))
    x = torch.randn(9, 4, 3, 5) * 2
    with torch.no_grad():
        neuron.time_steps, neuron.broadcast_input = 9, False
        neuron.chunked = True  # keeps the membrane after the last step (as for a next time chunk)
        layer = neuron(x.flatten(0, 1)).unflatten(0, (9, 4))
        theta, bias = neuron.threshold.view(3, 1), neuron.bias.view(3, 1)
        beta = None if math.isinf(tau) else neuron.beta
        u = torch.full((4, 3, 5), 0.5)
        for t in range(9):
            z, u = neuron.step((x[t] + bias) / theta, u, beta)
            assert torch.equal(layer[t], z * theta), t
    assert layer.sum() > 0
    assert torch.equal(neuron.v.view(torch.int32), u.view(torch.int32))  # the membranes too, bit for bit


@pytest.mark.parametrize("learn_tau", [False, True])
def test_step_mode_without_gradients_is_bit_identical(data, learn_tau):
    """Streaming without gradients skips the surrogate's autograd function and the pools' leading
    indices: the same outputs, bit for bit."""
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=10, learn_tau=learn_tau, tau=30.0, calibration=[data], mode="step")
    with torch.no_grad():
        fast = snn(data)
    slow = snn(data)
    assert slow.requires_grad and torch.equal(fast, slow.detach())
