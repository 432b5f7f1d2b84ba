"""Neuron models behind one seam: the registry, reset to zero, and the Norse-cell backend, each
checked on the spikes it computes, against its own reference step and against the default."""

import warnings

import pytest
import torch
from norse.torch.module.lif_box import LIFBoxCell
from torch import nn

import ann2snn
from ann2snn import NEURON_MODELS, ConversionConfig, ConversionError, NorseLIFNeuron, ResetToZeroNeuron, SpikingNeuron


def run_steps(neuron: SpikingNeuron, currents: list[torch.Tensor]) -> torch.Tensor:
    neuron.reset()
    return torch.stack([neuron(c) for c in currents])


def run_layer(neuron: SpikingNeuron, currents: list[torch.Tensor]) -> torch.Tensor:
    neuron.reset()
    neuron.time_steps = len(currents)
    try:
        return neuron(torch.cat(currents)).unflatten(0, (len(currents), -1))
    finally:
        neuron.time_steps = None


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    return net.eval()


def test_the_built_in_models_are_registered_by_name():
    assert NEURON_MODELS == {"subtract": SpikingNeuron, "reset-to-zero": ResetToZeroNeuron, "norse": NorseLIFNeuron}
    assert ConversionConfig().neuron == "subtract"
    with pytest.raises(ConversionError, match="'bogus' is not a neuron model.*'subtract', 'reset-to-zero', 'norse'"):
        ConversionConfig(neuron="bogus")


def test_a_new_model_is_one_class_and_convert_uses_it():
    class HalfResetNeuron(SpikingNeuron, model="test-half-reset"):
        """Subtracts half the threshold per spike."""

        def reset_membrane(self, u, z):
            return u - 0.5 * z

    try:
        # the fast paths are built from pieces it changed (no in-place reset given): both off
        assert not HalfResetNeuron.fused_backward and not HalfResetNeuron.inference_loop
        snn = ann2snn.convert(small_cnn(), T=8, neuron="test-half-reset", calibration=[torch.randn(16, 1, 40)])
        neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
        assert len(neurons) == 2 and all(type(m) is HalfResetNeuron for m in neurons)
        assert snn.report.settings["neuron"] == "test-half-reset"
        x = torch.randn(8, 1, 40)
        with torch.no_grad():
            layer, default = snn(x), ann2snn.convert(small_cnn(), T=8, calibration=[torch.randn(16, 1, 40)])(x)
            snn.mode = "step"
            assert torch.allclose(snn(x), layer, atol=1e-6) and not torch.equal(layer, default)
        with pytest.raises(ValueError, match="already defined"):
            type("Again", (SpikingNeuron,), {}, model="test-half-reset")
        # NIR's IF/LIF nodes cannot say this reset: refused, not written as another model
        with pytest.raises(ConversionError, match="HalfResetNeuron.*'test-half-reset'.*does not know.*'subtract', 'reset-to-zero', 'norse'"):
            ann2snn.export_nir(ann2snn.convert(small_cnn(), T=8, neuron="test-half-reset", maxpool="avg", calibration=[torch.randn(16, 1, 40)]))
    finally:
        NEURON_MODELS.pop("test-half-reset", None)


def test_reset_to_zero_forgets_the_charge_above_threshold():
    currents = [torch.tensor([0.6])] * 6
    zero, subtract = ResetToZeroNeuron(), SpikingNeuron()
    # from u = 0.5: 1.1 fires and resets to 0 (subtraction keeps 0.1), so the spikes part ways
    assert run_steps(zero, currents).flatten().tolist() == [1, 0, 1, 0, 1, 0]
    assert run_steps(subtract, currents).flatten().tolist() == [1, 0, 1, 0, 1, 1]
    assert zero.reset_mode == "zero" and subtract.reset_mode == "subtract"


@pytest.mark.parametrize("model", ["reset-to-zero", "norse"])
@pytest.mark.parametrize("tau", [3.0, 40.0])
def test_every_regime_computes_the_models_reference_step(model, tau):
    """Step mode, the layer-mode inference loop and layer-mode autograd all equal the model's
    own ``step`` applied by hand."""
    torch.manual_seed(0)
    neuron = NEURON_MODELS[model](tau=tau)
    neuron.set_threshold(torch.tensor([0.5, 1.0, 2.0]).double())
    neuron.double()
    currents = [torch.rand(4, 3, 6, dtype=torch.float64) * 1.5 for _ in range(20)]
    theta = neuron.threshold.view(-1, 1)
    u, reference = torch.full((4, 3, 6), 0.5, dtype=torch.float64), []
    with torch.no_grad():
        for c in currents:
            z, u = neuron.step(c / theta, u, neuron.beta)
            reference.append(z * theta)
        reference = torch.stack(reference)
        assert torch.equal(run_steps(neuron, currents), reference)
        assert torch.equal(run_layer(neuron, currents), reference)
    trained = run_layer(neuron, [c.requires_grad_() for c in currents])
    assert torch.equal(trained.detach(), reference) and reference.sum() > 0
    trained.sum().backward()
    assert all(c.grad is not None and c.grad.abs().sum() > 0 for c in currents)


@pytest.mark.parametrize("tau", [2.0, 10.0, 100.0])
def test_norse_backend_equals_the_default_leaky_neuron(tau):
    torch.manual_seed(0)
    norse, default = NorseLIFNeuron(tau=tau).double(), SpikingNeuron(tau=tau).double()
    assert isinstance(norse.cell, LIFBoxCell)
    for neuron in (norse, default):
        neuron.set_threshold(torch.tensor(0.7, dtype=torch.float64))
    currents = [(torch.rand(64, dtype=torch.float64) * 0.8).requires_grad_() for _ in range(30)]
    outs = []
    for neuron in (norse, default):
        out = run_layer(neuron, currents)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out)).sum(), currents)
        outs.append((out.detach(), torch.stack(grads)))
    (out_norse, grad_norse), (out_default, grad_default) = outs
    assert torch.equal(out_norse, out_default) and out_default.sum() > 0
    assert torch.allclose(grad_norse, grad_default, rtol=1e-6, atol=1e-9)


def test_norse_backend_refuses_what_its_cell_cannot_express():
    with pytest.raises(ConversionError, match="cannot be an integrate-and-fire neuron; give a finite time constant"):
        ConversionConfig(neuron="norse")
    with pytest.raises(ConversionError, match="fixed time constant"):
        ConversionConfig(neuron="norse", learn_tau=True)
    assert ConversionConfig(neuron="norse", tau=1000.0).neuron == "norse"


@pytest.mark.parametrize("model", list(NEURON_MODELS))
def test_converted_networks_run_alike_in_step_and_layer_mode(model):
    cnn = small_cnn()
    snn = ann2snn.convert(cnn, T=16, tau=50.0, neuron=model, calibration=[torch.randn(32, 1, 40)]).double()
    assert snn.report.settings["neuron"] == model
    x = torch.randn(8, 1, 40, dtype=torch.float64)
    with torch.no_grad():
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
    assert torch.allclose(layer, step, atol=1e-12)
    assert (layer != 0).any()


@pytest.mark.parametrize("model", list(NEURON_MODELS))
def test_every_model_saves_in_the_safe_format_and_loads_back(model, tmp_path):
    snn = ann2snn.convert(small_cnn(), T=8, tau=50.0, neuron=model, calibration=[torch.randn(16, 1, 40)])
    path = tmp_path / f"{model}.snn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pickle fallback would warn
        ann2snn.save(snn, path)
    back = ann2snn.load(path)  # without trust_pickle: the safe format
    x = torch.randn(4, 1, 40)
    assert torch.equal(back(x), snn(x))
    assert {type(m) for m in back.modules() if isinstance(m, SpikingNeuron)} == {NEURON_MODELS[model]}


@pytest.mark.parametrize("model", ["subtract", "reset-to-zero"])
def test_nir_export_states_the_models_reset_and_nirs_reset_to_zero_is_ours(model):
    """The exported node says how the neuron resets; NIR's own rule (reset to ``v_reset = 0``,
    Euler step with dt = 1) reproduces the reset-to-zero model spike for spike."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    snn = ann2snn.convert(cnn, T=12, tau=10.0, neuron=model, calibration=[torch.randn(16, 3)], per_channel=False, correction="none")
    lif = ann2snn.export_nir(snn).nodes["_1_neuron"]
    assert lif.metadata["reset"] == {"subtract": "subtract", "reset-to-zero": "zero"}[model]
    if model != "reset-to-zero":
        return
    neuron = snn.network.get_submodule("_1_neuron")
    currents = torch.randn(12, 5) * float(neuron.threshold) * 1.5
    tau, r, v_th, v_reset = (torch.as_tensor(getattr(lif, k)).float() for k in ("tau", "r", "v_threshold", "v_reset"))
    v, nir_spikes = torch.as_tensor(lif.metadata["v_init"]).float(), []
    for current in currents:
        v = v + (r * current - v) / tau
        z = (v > v_th).float()
        v = (1 - z) * v + z * v_reset
        nir_spikes.append(z)
    neuron.reset()
    with torch.no_grad():
        ours = torch.stack([neuron(current[None])[0] / neuron.threshold for current in currents])
    assert torch.equal(torch.stack(nir_spikes), ours) and ours.sum() > 0


def test_the_network_names_its_trainable_time_constants():
    cnn = small_cnn()
    assert ann2snn.convert(cnn, T=4, input_shape=(1, 40)).time_constants() == []  # IF: nothing to learn
    snn = ann2snn.convert(cnn, T=4, learn_tau=True, tau_per_channel=True, calibration=[torch.randn(16, 1, 40)])
    found = snn.time_constants()
    neurons = [m for m in snn.modules() if isinstance(m, SpikingNeuron)]
    assert [id(p) for p in found] == [id(m.leak_logit) for m in neurons] and [p.shape for p in found] == [(4,), (4,)]
    assert all(any(p is q for q in snn.parameters()) for p in found)
