"""The gated max pool's whole-sequence gate (``GateSequence``) equals the per-step differentiable
gate bit for bit, in value and gradient, over a whole sequence and in time chunks."""

import pytest
import torch

from ann2snn.temporal import GatedMaxPool


def _per_step(pool: GatedMaxPool, spikes: torch.Tensor, steps: int) -> torch.Tensor:
    gate = pool.spike_gate(spikes[0], steps, differentiable=True)
    return torch.stack([gate(z) for z in spikes.unbind(0)])


@pytest.mark.parametrize("dims, options, shape", [(2, dict(kernel_size=2), (3, 4, 6, 8)), (2, dict(kernel_size=3, stride=2, padding=1), (3, 2, 7, 5)), (1, dict(kernel_size=4), (3, 5, 16))])
@pytest.mark.parametrize("chunk", [12, 5])
def test_sequence_gate_equals_per_step_gate(dims, options, shape, chunk):
    torch.manual_seed(0)
    spikes = (torch.rand(12, *shape) > 0.6).float()
    weights = torch.randn(12, *_per_step(GatedMaxPool(dims, **options), spikes, 12).shape[1:])
    results = []
    for sequence in (True, False):
        pool = GatedMaxPool(dims, **options)
        pool.chunked, pool.sequence_steps = chunk < 12, 12
        x = spikes.clone().requires_grad_()
        parts = [pool.gate_sequence(part, chunk) if sequence else _per_step(pool, part, chunk) for part in x.split(chunk)]
        out = torch.cat(parts)
        (out * weights).sum().backward()
        results.append((out.detach(), x.grad))
    (out_sequence, grad_sequence), (out_step, grad_step) = results
    assert torch.equal(out_sequence, out_step) and out_step.sum() > 0
    assert torch.equal(grad_sequence, grad_step)


def test_sequence_gate_of_real_inputs_equals_max_pool_gradient_routing():
    torch.manual_seed(0)
    pool = GatedMaxPool(2, 2)
    x = torch.randn(4, 2, 3, 4, 4).requires_grad_()
    out = pool.gate_sequence(x)  # no spike bound: general inputs, indices from max_pool
    out.sum().backward()
    assert torch.allclose(out.sum(0), torch.nn.functional.max_pool2d(x.detach().sum(0), 2))
    assert torch.equal(x.grad.sum((-2, -1)), torch.full((4, 2, 3), 4.0))  # each of 4 windows passes its gradient to one position per step
