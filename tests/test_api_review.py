"""Python-API fixes from review: float64 models, profile's hooks and messages, analog_mode's
forward, refusals of plain CNNs, run_sequence's rank message, the settings line's tau, and NIR
export of non-square Conv2d kernels."""

import math

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.recording import run_sequence


def small_cnn(dtype: torch.dtype = torch.float32, head: bool = False) -> nn.Module:
    """Conv1d -> ReLU -> Flatten -> Linear (-> softmax with ``head``), seeded, in eval mode."""
    torch.manual_seed(0)
    layers = [nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(120, 3)]
    if head:
        layers.append(nn.Softmax(dim=1))
    return nn.Sequential(*layers).eval().to(dtype)


def batches(dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(64, 1, 32, generator=generator, dtype=dtype) for _ in range(2)]


def hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


# -- 1. float64 models ---------------------------------------------------------------------------
def test_a_float64_cnn_converts_to_a_float64_snn_that_agrees_with_it():
    model, data = small_cnn(torch.float64), batches(torch.float64)
    snn = ann2snn.convert(model, T=256, calibration=data, percentile=100.0, correction="none")
    x = data[0][:16]
    with torch.no_grad():
        y, reference = snn(x), model(x)
    assert y.dtype == torch.float64
    assert {t.dtype for t in [*snn.parameters(), *snn.buffers()] if t.is_floating_point()} == {torch.float64}
    assert (y - reference).abs().max() < 0.05 * reference.abs().max()


def test_a_float32_cnn_keeps_float32_throughout():
    snn = ann2snn.convert(small_cnn(), T=8, calibration=batches())
    assert {t.dtype for t in [*snn.parameters(), *snn.buffers()] if t.is_floating_point()} == {torch.float32}
    with torch.no_grad():
        assert snn(batches()[0][:4]).dtype == torch.float32


def test_recalibrating_a_float64_snn_keeps_it_float64():
    model, data = small_cnn(torch.float64), batches(torch.float64)
    snn = ann2snn.convert(model, T=16, calibration=data)
    ann2snn.recalibrate(snn, data, T=32)
    assert {t.dtype for t in snn.buffers() if t.is_floating_point()} == {torch.float64}
    with torch.no_grad():
        assert snn(data[0][:4]).dtype == torch.float64


# -- 2, 4, 6. profile ----------------------------------------------------------------------------
def test_profile_with_an_invalid_mode_leaves_no_hook_and_the_network_saves(tmp_path):
    data = batches()
    snn = ann2snn.convert(small_cnn(), T=8, calibration=data)
    with pytest.raises(ann2snn.ConversionError, match="mode='Step'"):
        ann2snn.profile(snn, data, mode="Step")
    assert hook_count(snn) == 0
    ann2snn.save(snn, tmp_path / "snn.pt")
    loaded = ann2snn.load(tmp_path / "snn.pt")
    with torch.no_grad():
        assert torch.equal(loaded(data[0]), snn(data[0]))


def test_profile_failing_on_a_batch_leaves_no_hook():
    snn = ann2snn.convert(small_cnn(), T=8, calibration=batches())
    with pytest.raises(ann2snn.InputShapeError):
        ann2snn.profile(snn, [torch.randn(4, 1, 40)])
    assert hook_count(snn) == 0


def test_profile_of_no_data_names_profiles_argument():
    snn = ann2snn.convert(small_cnn(), T=8, calibration=batches())
    with pytest.raises(ann2snn.ConversionError, match=r"^profile\(\) got no data") as error:
        ann2snn.profile(snn, [])
    assert "calibration" not in str(error.value)


def test_profile_refuses_a_plain_cnn_by_name():
    with pytest.raises(ann2snn.ConversionError, match=r"^profile\(\) takes a network made by ann2snn.convert, not Sequential"):
        ann2snn.profile(small_cnn(), batches())


def test_export_nir_refuses_a_plain_cnn_by_name():
    pytest.importorskip("nir")
    with pytest.raises(ann2snn.ConversionError, match=r"^export_nir\(\) takes a network made by ann2snn.convert, not Sequential"):
        ann2snn.export_nir(small_cnn())


# -- 3. analog_mode ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["layer", "step"])
def test_the_network_called_in_analog_mode_returns_the_cnns_output(mode):
    model, data = small_cnn(head=True), batches()
    snn = ann2snn.convert(model, T=16, calibration=data, mode=mode)
    x = data[1][:16]
    with torch.no_grad():
        spiking = snn(x)
        with snn.analog_mode():
            analog, stepped = snn(x), snn.step(x)
        after = snn(x)
        reference = model(x)
    assert torch.allclose(analog, reference, atol=1e-6)
    assert torch.allclose(stepped, reference, atol=1e-6)
    assert torch.equal(after, spiking) and not torch.allclose(spiking, reference, atol=1e-6)


# -- 5. run_sequence -----------------------------------------------------------------------------
def test_run_sequence_without_the_time_dimension_says_to_add_it_in_front():
    data = batches()
    snn = ann2snn.convert(small_cnn(), T=8, calibration=data)
    with pytest.raises(ann2snn.InputShapeError, match=r"\[T, batch, \.\.\.\]") as error:
        run_sequence(snn, data[0][:16])
    assert "x.unsqueeze(0)" in str(error.value) and "unsqueeze(1)" not in str(error.value)


# -- 7. docs and the settings line ----------------------------------------------------------------
def test_learn_tau_from_tau_inf_reports_the_time_constant_it_starts_from():
    from ann2snn.neurons import LEARNABLE_IF_TAU

    snn = ann2snn.convert(small_cnn(), T=8, learn_tau=True, tau=math.inf, calibration=batches())
    line = snn.report.settings_line()
    neuron = next(m for m in snn.modules() if isinstance(m, ann2snn.SpikingNeuron))
    assert f"tau {LEARNABLE_IF_TAU:g} steps, learned" in line and "tau inf" not in line
    assert float(neuron.tau) == pytest.approx(LEARNABLE_IF_TAU, rel=1e-3)


def test_the_package_headline_is_the_zero_shot_call_and_T_and_mode_are_documented():
    headline = next(line for line in ann2snn.__doc__.splitlines() if "convert(" in line)
    assert "learn_tau=True" not in headline
    assert ann2snn.SpikingNetwork.T.__doc__ and ann2snn.SpikingNetwork.mode.__doc__


# -- 8. NIR export of non-square kernels ----------------------------------------------------------
def _export_and_read(snn: ann2snn.SpikingNetwork, path) -> tuple:
    nir = pytest.importorskip("nir")
    graph = ann2snn.export_nir(snn, path)
    return graph, nir.read(path)


def _check_convs(snn: ann2snn.SpikingNetwork, read) -> int:
    """Every Conv2d of ``snn`` is in ``read`` with its weights and the output type of ``snn``'s own shapes."""
    from ann2snn.nir_export import _record_shapes, _unfuse_average_pools

    shapes = _record_shapes(snn, _unfuse_average_pools(snn.network), snn.input_shape)
    convs = 0
    for node in snn.network.graph.nodes:
        module = snn.network.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, nn.Conv2d):
            written = read.nodes[node.name]
            assert written.weight.shape == tuple(module.weight.shape)
            assert list(written.output_type["output"]) == list(shapes[node.name])
            convs += 1
    return convs


def test_a_non_square_conv2d_exports_and_reads_back(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, (3, 5)), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 4, 3)).eval()
    snn = ann2snn.convert(net, T=4, calibration=[torch.rand(8, 1, 8, 8)], correction="none")
    graph, read = _export_and_read(snn, tmp_path / "net.nir")
    assert list(graph.nodes["_0"].output_type["output"]) == [4, 6, 4]
    assert _check_convs(snn, read) == 1
    assert torch.allclose(torch.from_numpy(read.nodes["_0"].weight), net[0].weight.detach())


def test_the_zoos_piczak_net_exports_to_nir_and_reads_back(tmp_path):
    zoo = pytest.importorskip("ann2snn_zoo")
    torch.manual_seed(0)
    shape = zoo.input_spec("piczak").shape
    net = zoo.create("piczak", 10, shape).eval()
    snn = ann2snn.convert(net, T=4, calibration=[torch.randn(8, *shape)], maxpool="avg", correction="none")
    _, read = _export_and_read(snn, tmp_path / "piczak.nir")
    assert _check_convs(snn, read) == 2
