"""The neuron: Norse's dynamics, integrate-and-fire rates, parameters owned by the module."""

import math

import pytest
import torch
from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
from norse.torch.functional.reset import reset_subtract

from ann2snn import ConversionError, SpikingNeuron


def run_steps(neuron: SpikingNeuron, currents: list[torch.Tensor]) -> torch.Tensor:
    neuron.reset()
    return torch.stack([neuron(c) for c in currents])


@pytest.mark.parametrize("tau", [2.0, 10.0, 100.0])
def test_matches_norse_lif_box_with_subtract_reset(tau):
    torch.manual_seed(0)
    theta = 0.7
    neuron = SpikingNeuron(tau=tau)
    neuron.set_threshold(torch.tensor(theta))
    currents = [torch.rand(64) * 0.8 for _ in range(30)]
    ours = run_steps(neuron, currents) / theta
    # Norse: v' = v + k (x - v) with k = 1/tau: feed x = I / k to get v' = (1 - k) v + I
    k = 1.0 / tau
    p = LIFBoxParameters(tau_mem_inv=torch.tensor(k), v_leak=torch.tensor(0.0), v_th=torch.tensor(theta), v_reset=torch.tensor(0.0), method="super", alpha=100.0, reset_method=reset_subtract)
    state = LIFBoxFeedForwardState(v=torch.full((64,), theta / 2))
    theirs = []
    for c in currents:
        z, state = lif_box_feed_forward_step(c / k, state, p, dt=1.0)
        theirs.append(z)
    assert torch.equal(ours, torch.stack(theirs))


def test_integrate_and_fire_rate_equals_relu_of_input():
    neuron = SpikingNeuron(tau=math.inf)
    neuron.set_threshold(torch.tensor(2.0))
    x = torch.linspace(-1, 2, 31)
    T = 200
    rate = run_steps(neuron, [x] * T).mean(0)
    assert torch.allclose(rate, x.clamp(min=0), atol=2.0 / T + 1e-6)  # error below one spike over T


def test_capped_neuron_never_exceeds_its_cap():
    neuron = SpikingNeuron(cap=0.5)
    neuron.set_threshold(torch.tensor(3.0))
    assert float(neuron.threshold) == 0.5
    rate = run_steps(neuron, [torch.tensor([10.0])] * 50).mean()
    assert rate <= 0.5


def test_learnable_tau_is_a_registered_parameter():
    neuron = SpikingNeuron(tau=20.0, learn_tau=True)
    names = dict(neuron.named_parameters())
    assert "leak_logit" in names and "leak_logit" in neuron.state_dict()
    assert float(neuron.tau) == pytest.approx(20.0, rel=1e-4)
    neuron.leak_logit.data.fill_(50.0)
    assert 0.0 < float(neuron.beta.detach()) <= 1.0
    neuron.leak_logit.data.fill_(-50.0)
    assert 0.0 < float(neuron.beta.detach()) <= 1.0
    moved = neuron.to(torch.float64)
    assert moved.leak_logit.dtype == torch.float64


def test_learnable_if_starts_nearly_integrate_and_fire():
    neuron = SpikingNeuron(tau=math.inf, learn_tau=True)
    assert float(neuron.beta.detach()) > 0.999


def test_per_channel_tau_and_threshold():
    neuron = SpikingNeuron(tau=10.0, learn_tau=True)
    neuron.make_tau_per_channel(3)
    neuron.set_threshold(torch.tensor([1.0, 2.0, 4.0]))
    out = run_steps(neuron, [torch.ones(2, 3, 5)] * 40)
    assert neuron.leak_logit.shape == (3,)
    rates = out.mean((0, 1, 3))
    assert rates[0] >= rates[1] >= rates[2] > 0  # same input, higher threshold: fewer (heavier) spikes
    assert set(out.unique().tolist()) <= {0.0, 1.0, 2.0, 4.0}


def test_bad_tau_is_refused():
    with pytest.raises(ConversionError, match="tau"):
        SpikingNeuron(tau=0.5)


@pytest.mark.parametrize("tau, per_channel, repeated", [(math.inf, False, False), (20.0, False, True), (20.0, True, False)])
def test_fused_bptt_equals_autograd_through_norse_steps(tau, per_channel, repeated):
    torch.manual_seed(0)
    results = []
    for fused in (True, False):
        neuron = SpikingNeuron(tau=tau, learn_tau=not math.isinf(tau))
        if per_channel:
            neuron.make_tau_per_channel(3)
        neuron.set_threshold(torch.tensor([0.5, 1.0, 2.0]) if per_channel else torch.tensor(0.8))
        neuron.fused_bptt = fused
        neuron.time_steps, neuron.broadcast_input = 12, repeated
        torch.manual_seed(1)
        x = (torch.randn(4, 3, 5) if repeated else torch.randn(12 * 4, 3, 5)).requires_grad_()
        out = neuron(x)
        (out * torch.linspace(-1, 2, out.numel()).view_as(out)).sum().backward()
        grads = [x.grad] + ([neuron.leak_logit.grad] if neuron.learn_tau else [])
        results.append((out.detach(), grads))
    (out_fused, grads_fused), (out_ref, grads_ref) = results
    assert torch.equal(out_fused, out_ref) and out_ref.sum() > 0
    for a, b in zip(grads_fused, grads_ref):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
