"""Gated max pooling is exact at every step: after t steps a window has emitted exactly the maximum
of its positions' spike counts, so the time average is max pooling of the rates at any T (ties,
which are common at low T, included). Checked on every path: layer mode, step mode, the fused
inference gate, the differentiable gate, time chunks, and the max over dimensions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ann2snn.temporal import GatedMaxPool
from ann2snn.temporal_ops import GatedAdaptiveMaxPool, GatedMaxReduce


def _spikes(steps: int, shape: tuple[int, ...], p: float = 0.4, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((steps,) + shape, generator=generator) < p).float()


def _max_of_counts(spikes: torch.Tensor, pool) -> torch.Tensor:
    """Per step t, the pooled maximum of the counts up to t: [T, B, C, ...]."""
    counts = spikes.cumsum(0)
    return torch.stack([pool(c) for c in counts])


def test_tie_that_the_leader_gate_over_counts():
    """Position 1 spikes at step 1, position 0 (the tie winner) at step 2: the leader's spike
    would pass twice, but the maximum count is 1."""
    pool = GatedMaxPool(1, 2)
    spikes = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(2, 1, 1, 2)
    gate = pool.spike_gate(spikes[0], 2, differentiable=False)
    out = torch.stack([gate(z) for z in spikes])
    assert out.flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_every_gate_emits_the_max_of_counts(steps):
    spikes = _spikes(steps, (3, 4, 12))
    pool = GatedMaxPool(1, 3)
    expected = _max_of_counts(spikes, lambda c: F.max_pool1d(c, 3))
    for differentiable in (False, True):
        gate = pool.spike_gate(spikes[0], steps, differentiable=differentiable)
        out = torch.stack([gate(z) for z in spikes])
        assert set(out.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(out.cumsum(0), expected)
    pool.time_steps = steps  # layer mode, unfused
    assert torch.equal(pool(spikes.flatten(0, 1)).unflatten(0, (steps, -1)).cumsum(0), expected)
    pool.time_steps = None  # step mode
    pool.reset()
    assert torch.equal(torch.stack([pool(z) for z in spikes]).cumsum(0), expected)


@pytest.mark.parametrize("dims, kernel", [(2, 1), (2, (1, 1)), (1, 1)])
def test_one_position_windows_pass_every_spike(dims, kernel):
    """A kernel of one position (MaxPool2d(1)) passes the spikes unchanged, in every regime (the
    2-D max of strided slices once returned the count itself, so the gate emitted nothing)."""
    steps = 5
    spikes = _spikes(steps, (2, 3, 4, 4) if dims == 2 else (2, 3, 6))
    pool = GatedMaxPool(dims, kernel)
    gate = pool.spike_gate(spikes[0], steps, differentiable=False)
    assert torch.equal(torch.stack([gate(z) for z in spikes]), spikes)
    pool.reset()
    assert torch.equal(torch.stack([pool(z) for z in spikes]), spikes)  # step mode


def test_step_mode_keeps_its_peak_only_while_it_owns_the_count():
    """Step mode remembers the windows' largest count between calls instead of pooling the count
    twice per step; a layer-mode chunk that moves the count on, or a reset, must not leave that
    memory stale."""
    steps = 6
    spikes = _spikes(steps, (2, 3, 8), p=0.5, seed=1)
    pool = GatedMaxPool(1, 2)
    expected = _max_of_counts(spikes, lambda c: F.max_pool1d(c, 2))
    outputs = []
    pool.time_steps = None  # step 0 in step mode
    outputs.append(pool(spikes[0]))
    pool.time_steps, pool.sequence_steps, pool.chunked = 3, steps, True  # steps 1-3: one layer-mode chunk
    outputs.extend(pool(spikes[1:4].flatten(0, 1)).unflatten(0, (3, -1)))
    pool.time_steps, pool.chunked = None, False  # steps 4-5 in step mode again, count carried
    outputs.extend(pool(z) for z in spikes[4:])
    assert torch.equal(torch.stack(outputs).cumsum(0), expected)
    pool.reset()  # a new sequence starts from zero counts, not from the old peak
    assert torch.equal(torch.stack([pool(z) for z in spikes]).cumsum(0), expected)


def test_two_d_pool_with_padding_and_ceil_mode():
    spikes = _spikes(6, (2, 3, 7, 5), seed=1)
    pool = GatedMaxPool(2, 3, stride=2, padding=1, ceil_mode=True)
    expected = _max_of_counts(spikes, lambda c: F.max_pool2d(c, 3, 2, 1, ceil_mode=True))
    gate = pool.spike_gate(spikes[0], 6, differentiable=False)
    assert torch.equal(torch.stack([gate(z) for z in spikes]).cumsum(0), expected)


def test_adaptive_and_reduce_are_exact():
    spikes = _spikes(7, (2, 3, 10), seed=2)
    adaptive = GatedAdaptiveMaxPool(1, 1)
    adaptive.time_steps = 7
    out = adaptive(spikes.flatten(0, 1)).unflatten(0, (7, -1))
    assert torch.equal(out.cumsum(0), _max_of_counts(spikes, lambda c: F.adaptive_max_pool1d(c, 1)))
    reduce = GatedMaxReduce(-1)
    reduce.time_steps = 7
    out = reduce(spikes.flatten(0, 1)).unflatten(0, (7, -1))
    assert torch.equal(out.cumsum(0), spikes.cumsum(0).amax(-1))


def test_gradient_reaches_the_leading_position():
    spikes = torch.tensor([[1.0, 0.0, 0.0, 1.0]]).view(1, 1, 1, 4).repeat(3, 1, 1, 1).requires_grad_()
    pool = GatedMaxPool(1, 2)
    gate = pool.spike_gate(spikes[0], 3, differentiable=True)
    torch.stack([gate(z) for z in spikes]).sum().backward()
    assert spikes.grad[:, 0, 0].tolist() == [[1.0, 0.0, 0.0, 1.0]] * 3
