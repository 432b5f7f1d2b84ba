"""Gated max pooling in half precision: the running spike count is kept in float32, because
bfloat16 holds integers exactly only up to 256 (float16 up to 2048) and a count kept in the
network's type stops growing there, losing the spikes of every longer run. Checked on every path
(the gates, layer mode, time chunks, step mode, a converted network's fused loops and training
paths; the max over dimensions and adaptive pooling); float32 and float64 pools keep their
counts, and so their arithmetic, in their own type."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.temporal import GatedMaxPool, NeuronPool
from ann2snn.temporal_ops import GatedAdaptiveMaxPool, GatedMaxReduce, RateIncrement, RateMean

#: Half-precision types and a sequence long enough for counts past their largest exact integer.
HALF_RUNS = [(torch.bfloat16, 600), (torch.float16, 2500)]


def _dense_spikes(steps: int, dtype: torch.dtype) -> torch.Tensor:
    """[steps, 2, 3, 8] spikes, 9 in 10 at every position, so that counts pass ``0.8 * steps``."""
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(steps, 2, 3, 8, generator=generator) < 0.9).to(dtype)


def _gated(path: str, spikes: torch.Tensor) -> torch.Tensor:
    """The output of a fresh ``GatedMaxPool(1, 2)`` for ``spikes`` [T, B, C, L] on ``path``."""
    steps = spikes.shape[0]
    pool = GatedMaxPool(1, 2)
    if path in ("inference gate", "differentiable gate"):
        gate = pool.spike_gate(spikes[0], steps, differentiable=path == "differentiable gate")
        return torch.stack([gate(z) for z in spikes])
    if path == "inference gate, batch slices":  # as the neuron's sliced loop calls it
        gate = pool.spike_gate(spikes[0], steps, differentiable=False)
        out = spikes.new_empty(steps, 2, 3, 4)
        for t, z in enumerate(spikes):
            gate(z[:1], slice(0, 1), out=out[t, :1])
            gate(z[1:], slice(1, 2), out=out[t, 1:])
        return out
    if path == "sequence gate, time chunks":
        pool.chunked, pool.sequence_steps = True, steps
        return torch.cat([pool.gate_sequence(part, steps) for part in spikes.split(steps // 3)])
    if path == "layer mode":
        pool.time_steps = steps
        return pool(spikes.flatten(0, 1)).unflatten(0, (steps, -1))
    return torch.stack([pool(z) for z in spikes])  # step mode


PATHS = ["inference gate", "inference gate, batch slices", "differentiable gate", "sequence gate, time chunks", "layer mode", "step mode"]


@pytest.mark.parametrize("dtype, steps", HALF_RUNS)
@pytest.mark.parametrize("path", PATHS)
def test_half_precision_pool_emits_the_max_of_counts_past_the_exact_integers(path, dtype, steps):
    spikes = _dense_spikes(steps, dtype)
    expected = F.max_pool1d(spikes.float().sum(0), 2)
    assert expected.max() > {torch.bfloat16: 256, torch.float16: 2048}[dtype]
    out = _gated(path, spikes)
    assert out.dtype == dtype
    assert torch.equal(out.float().sum(0), expected)


@pytest.mark.parametrize("path", ["differentiable gate", "sequence gate, time chunks", "layer mode", "step mode"])
def test_half_precision_gradients_reach_the_leaders_float32_finds(path):
    """In training the gradient goes to each window's leading position: the same positions, and
    so the same gradients, as in float32 (exact in both: the output gradient is 0 or 1)."""
    spikes = _dense_spikes(600, torch.float32)
    weights = (torch.rand(600, 2, 3, 4, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        x = spikes.to(dtype).detach().requires_grad_()
        (_gated(path, x) * weights.to(dtype)).sum().backward()
        grads.append(x.grad.float())
    assert torch.equal(grads[0], grads[1]) and grads[0].sum() > 0


@pytest.mark.parametrize("regime", ["layer mode", "time chunks", "step mode"])
def test_half_precision_max_reduce_and_adaptive_pool_count_past_256(regime):
    """``GatedMaxReduce`` and ``GatedAdaptiveMaxPool`` count in float32 too: two positions firing
    in turn have counts of 300 after 600 steps, which bfloat16 would hold at 256."""
    steps = 600
    spikes = torch.zeros(steps, 2, 3, 2, dtype=torch.bfloat16)
    spikes[0::2, ..., 0] = spikes[1::2, ..., 1] = 1
    for module in (GatedMaxReduce(-1), GatedAdaptiveMaxPool(1, 1)):
        if regime == "step mode":
            out = torch.stack([module(z) for z in spikes])
        else:
            module.time_steps, module.sequence_steps, module.chunked = (steps, steps, False) if regime == "layer mode" else (200, steps, True)
            out = torch.cat([module(part.flatten(0, 1)) for part in spikes.split(module.time_steps)])
        assert out.dtype == torch.bfloat16
        assert out.float().sum() == 300 * 2 * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_count_type_and_output_type(dtype):
    """Float32 and float64 pools count in their own type (their arithmetic is what it was); half
    precision counts in float32, and every output keeps the input's type."""
    spikes = _dense_spikes(3, dtype)
    pool = GatedMaxPool(1, 2)
    assert pool(spikes[0]).dtype == dtype  # step mode
    assert pool.count.dtype == (torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype)


#: Steps of the network runs: past bfloat16's 256 for the positions that fire at every step.
STEPS = 400


@pytest.fixture(scope="module")
def half_network():
    """A converted Conv1d-ReLU-MaxPool1d net in bfloat16 whose output is the gated pool's (tests
    take a copy) and its input, of shape [8, 1, 16]."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten()).eval()
    x = torch.rand(8, 1, 16)
    return ann2snn.convert(model, T=STEPS, learn_tau=False, calibration=[x]).to(torch.bfloat16), x.bfloat16()


@pytest.mark.parametrize(
    "mode, time_chunk, grad, fused_bptt",
    [
        ("layer", None, False, True),
        ("layer", 150, False, True),
        ("layer", None, True, True),
        ("layer", 150, True, True),
        ("layer", None, True, False),
        ("step", None, False, True),
        ("step", None, True, False),
    ],
)
def test_half_precision_network_pools_every_spike(half_network, mode, time_chunk, grad, fused_bptt):
    """Each window of a bfloat16 network passes the largest spike count of its positions: with
    the neuron fused with its pool (the inference loop, the fused BPTT, the reference autograd
    loop, time chunks, step mode) as when a hook on the neuron makes it run alone, whose spikes
    give the expected counts."""
    snn, x = copy.deepcopy(half_network[0]), half_network[1]
    x_seq = x.expand(STEPS, *x.shape).contiguous()
    snn.mode, snn.time_chunk, snn.batch_chunk = mode, time_chunk, 8
    fused = next(m for m in snn.modules() if isinstance(m, NeuronPool))
    fused.neuron.fused_bptt = fused_bptt
    theta = fused.neuron.threshold.float().view(1, -1, 1)
    seen = []
    hook = fused.neuron.register_forward_hook(lambda module, args, out: None if module.analog else seen.append(out.detach()))
    with torch.set_grad_enabled(grad):
        alone = ann2snn.run_sequence(snn, x_seq.clone().requires_grad_(grad), return_sequence=True)
        hook.remove()
        together = ann2snn.run_sequence(snn, x_seq.clone().requires_grad_(grad), return_sequence=True)
    spikes = torch.cat([s.unflatten(0, (-1, 8)) for s in seen]).float() / theta  # [T, B, C, L]
    expected = F.max_pool1d(spikes.sum(0), 2)
    assert expected.max() > 256
    assert together.dtype == torch.bfloat16
    for out in (alone, together):
        assert torch.equal((out.detach().float().unflatten(-1, (4, -1)) / theta).sum(0), expected)


@pytest.mark.parametrize("mode, time_chunk", [("step", None), ("layer", 4)])
def test_half_precision_readouts_are_summed_over_time_in_float32(mode, time_chunk):
    """The output averages T readouts: summed in bfloat16 over 600 steps it drifted by about 0.08
    from the float32 network's (outputs up to about 0.2); summed in float32, by bfloat16's own
    rounding of the weights and inputs only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4 * 7, 3)).eval()
    x = torch.rand(8, 1, 16)
    snn = ann2snn.convert(model, T=600, learn_tau=False, calibration=[x], mode=mode)
    snn.time_chunk = time_chunk
    half = copy.deepcopy(snn).to(torch.bfloat16)
    with torch.no_grad():
        reference, out = snn(x), half(x.bfloat16())
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.01


def _rate_module_outputs(module: torch.nn.Module, frames: torch.Tensor, regime: str) -> torch.Tensor:
    """``module`` (RateMean, RateIncrement) over ``frames`` [T, ...]: step by step, or in layer
    mode in time chunks of 100 steps."""
    if regime == "step":
        return torch.stack([module(frame) for frame in frames])
    module.chunked, module.time_steps = True, 100
    return torch.cat([module(chunk.flatten(0, 1)).unflatten(0, (100, -1)) for chunk in frames.split(100)])


@pytest.mark.parametrize("regime", ["step", "layer"])
def test_half_precision_analog_island_sums_past_256_steps(regime):
    """An analog island's running mean and increments over 600 steps in bfloat16: the running sum
    stopped at 256 (so the mean of ones fell to 256 / t) and ``t * y - (t - 1) * y`` cancelled to
    0 or 1 instead of y; both are formed in float32, their outputs in bfloat16."""
    ones = torch.ones(600, 2, 3, dtype=torch.bfloat16)
    means = _rate_module_outputs(RateMean(), ones, regime)
    assert means.dtype == torch.bfloat16 and torch.equal(means, ones)
    y = torch.full((600, 2, 3), 0.3, dtype=torch.bfloat16)
    increments = _rate_module_outputs(RateIncrement(), y, regime)
    assert increments.dtype == torch.bfloat16 and torch.equal(increments, y)
