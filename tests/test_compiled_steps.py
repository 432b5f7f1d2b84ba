"""``snn.compiled_neurons``: layer-mode training with each neuron step as one compiled kernel
(``ann2snn.compiled_steps``) computes what the default fused loop computes, up to rounding.

The fast tests run the step functions uncompiled (``compiled_steps.compiled`` replaced by a
counting identity), in float64, where rounding differences are far below the tolerances: they
check the arithmetic and its wiring into ``bptt.SubtractResetSequence``. The slow test compiles
them with ``torch.compile`` for real."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import compiled_steps, neurons
from ann2snn.neurons import SpikingNeuron


def _cnn(pool: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), pool,
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip


def _converted(pool: nn.Module, dtype: torch.dtype, **settings) -> tuple[ann2snn.SpikingNetwork, torch.Tensor]:
    cnn = _cnn(pool).to(dtype)
    x = torch.rand(6, 2, 8, 8, dtype=dtype, generator=torch.Generator().manual_seed(1))
    snn = ann2snn.convert(cnn, T=settings.pop("T", 8), calibration=[x], **settings)
    return snn.train(), x


def _step(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The output and the gradients of one training step."""
    snn.zero_grad(set_to_none=True)
    out = snn(x)
    F.cross_entropy(out, torch.arange(len(x)) % 4).backward()
    return out.detach(), {name: p.grad.clone() for name, p in snn.named_parameters() if p.grad is not None}


@pytest.fixture
def uncompiled_steps(monkeypatch) -> dict[str, int]:
    """``compiled_steps.compiled`` as the identity, counting the calls of each step function."""
    calls = {"forward_step": 0, "backward_step": 0}

    def counting(step):
        def run(*args):
            calls[step.__name__] += 1
            return step(*args)

        return run

    monkeypatch.setattr(compiled_steps, "compiled", counting)
    return calls


CASES = {
    "IF, max pool": dict(pool=nn.MaxPool2d(2), settings=dict(learn_tau=False)),
    "learnable tau, average pool in the loop": dict(pool=nn.AvgPool2d(2), settings=dict(learn_tau=True)),
    "learnable tau per channel, max pool": dict(pool=nn.MaxPool2d(2), settings=dict(learn_tau=True, tau_per_channel=True)),
    "IF, no correction": dict(pool=nn.AvgPool2d(2), settings=dict(learn_tau=False, correction="none")),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("time_chunk", [None, 3])
@pytest.mark.parametrize("slice_bytes", [neurons.SLICE_BYTES, 1])
def test_compiled_steps_compute_the_default_training_step(case: str, time_chunk, slice_bytes: int, uncompiled_steps, monkeypatch) -> None:
    """Also where the default loops run one example at a time (``slice_bytes=1``): the compiled
    steps take the whole batch."""
    monkeypatch.setattr(neurons, "SLICE_BYTES", slice_bytes)
    snn, x = _converted(CASES[case]["pool"], torch.float64, **CASES[case]["settings"])
    snn.time_chunk = time_chunk
    compiled = copy.deepcopy(snn)
    compiled.compiled_neurons = True
    out, grads = _step(snn, x)
    assert uncompiled_steps == {"forward_step": 0, "backward_step": 0}, "the default path must not use the compiled steps"
    out_compiled, grads_compiled = _step(compiled, x)
    assert uncompiled_steps["forward_step"] > 0 and uncompiled_steps["backward_step"] > 0
    torch.testing.assert_close(out_compiled, out, rtol=1e-9, atol=1e-12)
    assert grads_compiled.keys() == grads.keys()
    assert any("leak_logit" in name for name in grads) == bool(snn.time_constants())
    for name in grads:
        torch.testing.assert_close(grads_compiled[name], grads[name], rtol=1e-7, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


def test_compiled_neurons_is_a_setting_of_training_only(uncompiled_steps) -> None:
    """Inference, step mode and a network saved and loaded again do not change by it."""
    snn, x = _converted(nn.MaxPool2d(2), torch.float64, learn_tau=True)
    snn.compiled_neurons = True
    with torch.no_grad():
        layer = snn.eval()(x)
        snn.mode = "step"
        step = snn(x)
    assert uncompiled_steps == {"forward_step": 0, "backward_step": 0}
    torch.testing.assert_close(step, layer)
    snn.mode = "layer"
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    snn.train()(x).sum().backward()
    assert all(n.compiled_bptt for n in neurons) and uncompiled_steps["backward_step"] > 0
    snn.compiled_neurons = False
    snn(x).sum().backward()
    assert not any(n.compiled_bptt for n in neurons)


@pytest.mark.slow
def test_torch_compile_kernels_match_the_default_training_step() -> None:
    """Compiled for real (float32, learnable tau, time chunks): outputs and gradients agree to rounding."""
    snn, x = _converted(nn.MaxPool2d(2), torch.float32, learn_tau=True)
    snn.time_chunk = 5
    compiled = copy.deepcopy(snn)
    compiled.compiled_neurons = True
    out, grads = _step(snn, x)
    out_compiled, grads_compiled = _step(compiled, x)
    torch.testing.assert_close(out_compiled, out, rtol=1e-4, atol=1e-5)
    for name in grads:
        torch.testing.assert_close(grads_compiled[name], grads[name], rtol=1e-3, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}")


def test_a_failing_compilation_is_one_clear_error(monkeypatch):
    """Where torch.compile cannot build the kernels (no C++ compiler), training says so and how to
    train without them: ``NeuronCompileError``, not an input-shape error or Inductor's log."""
    failure = type("CppCompileError", (Exception,), {"__module__": "torch._inductor.exc"})

    def broken_compile(step, dynamic):
        def run(*args):
            raise failure("C++ compile error\n(the compiler's whole log)")

        return run

    compiled_steps.compiled.cache_clear()
    monkeypatch.setattr(torch, "compile", broken_compile)
    try:
        snn, x = _converted(nn.MaxPool2d(2), torch.float32, learn_tau=True)
        snn.compiled_neurons = True
        with pytest.raises(ann2snn.NeuronCompileError, match="set snn.compiled_neurons = False") as raised:
            snn(x)
        assert "C++ compile error" in str(raised.value) and "whole log" not in str(raised.value)
    finally:
        compiled_steps.compiled.cache_clear()


def test_compiled_neurons_takes_a_bool():
    snn, _ = _converted(nn.MaxPool2d(2), torch.float32, learn_tau=False)
    with pytest.raises(ann2snn.ConversionError, match="compiled_neurons takes True or False, not 'yes'"):
        snn.compiled_neurons = "yes"
    assert snn.compiled_neurons is False
