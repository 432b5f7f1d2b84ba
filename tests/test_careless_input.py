"""Issue 12, compiler side: no setting, weight or input is silently nonsense; every refusal names
the problem and the way out."""

import math

import pytest
import torch
from torch import nn

import ann2snn
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2)).eval()


@pytest.mark.parametrize("setting", [dict(tau=math.nan), dict(tau=math.nan, learn_tau=True), dict(alpha=math.nan), dict(alpha=math.inf), dict(percentile=math.nan), dict(percentile=math.inf)])
def test_non_finite_settings_are_refused(setting):
    name = next(iter(setting))
    with pytest.raises(ann2snn.ConversionError, match=name):
        ann2snn.convert(small(), T=4, calibration=[torch.randn(8, 1, 8)], **{"learn_tau": False, **setting})


def test_cli_refuses_tau_nan(tmp_path, capsys):
    from ann2snn.cli import main

    path = tmp_path / "model.pt"
    torch.save(small(), path)
    assert main(["convert", str(path), "--trust-pickle", "--tau", "nan", "--input-shape", "1,8", "-o", str(tmp_path / "snn.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tau nan" in err[0] and "--tau inf" in err[0]
    assert not (tmp_path / "snn.pt").exists()


def test_non_finite_weights_are_refused_naming_the_parameter():
    model = small()
    with torch.no_grad():
        model[3].weight[0, 0] = math.nan
    with pytest.raises(ann2snn.ConversionError, match=r"parameter `3.weight`.*NaN"):
        ann2snn.convert(model, T=4)
    model = ResidualConcatNet().eval()
    model.bn1.running_var[0] = math.inf
    with pytest.raises(ann2snn.ConversionError, match=r"buffer `bn1.running_var`"):
        ann2snn.convert(model, T=4)


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_non_finite_input_at_run_time_is_refused(mode):
    snn = ann2snn.convert(small(), T=4, learn_tau=False, calibration=[torch.randn(8, 1, 8)], mode=mode)
    x = torch.randn(3, 1, 8)
    x[1, 0, 2] = math.nan
    with pytest.raises(ann2snn.InputShapeError, match="NaN or infinite"):
        snn(x)
    with pytest.raises(ann2snn.InputShapeError, match="NaN or infinite"):
        snn.step(x.clamp(max=math.inf).nan_to_num(posinf=math.inf, nan=math.inf))


def test_large_finite_input_is_accepted_even_where_its_sum_overflows():
    """The run-time finiteness check sums the input first (one op): an overflowing sum of finite
    values must fall back to the elementwise check, not refuse the input."""
    snn = ann2snn.convert(small(), T=2, learn_tau=False, calibration=[torch.randn(8, 1, 8)])
    x = torch.full((3, 1, 8), 3e38)
    assert not torch.isfinite(x.sum())
    assert torch.isfinite(snn(x)).all()
    snn.check_input(x)


@pytest.mark.parametrize("calibration", [[torch.empty(0, 1, 8)], [torch.randn(4, 1, 8), torch.empty(0, 1, 8)]])
def test_empty_calibration_batches_are_refused(calibration):
    with pytest.raises(ann2snn.ConversionError, match="holds no examples"):
        ann2snn.convert(small(), T=4, calibration=calibration)


def test_a_single_calibration_tensor_is_refused_with_the_fix():
    with pytest.raises(ann2snn.ConversionError, match=r"not one tensor.*x.split\(64\)"):
        ann2snn.convert(small(), T=4, calibration=torch.randn(16, 1, 8))


def test_step_refuses_a_batch_change_without_reset():
    snn = ann2snn.convert(small(), T=4, learn_tau=False, calibration=[torch.randn(8, 1, 8)])
    snn.reset()
    snn.step(torch.randn(4, 1, 8))
    for other in (1, 6):
        with pytest.raises(ann2snn.InputShapeError, match=r"batch size changed from 4 to %d.*reset\(\)" % other):
            snn.step(torch.randn(other, 1, 8))
    snn.reset()
    assert snn.step(torch.randn(6, 1, 8)).shape == (6, 2)  # after reset a new batch size is fine


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_wrong_input_dtype_is_named(dtype):
    snn = ann2snn.convert(small(), T=4, learn_tau=False, calibration=[torch.randn(8, 1, 8)])
    with pytest.raises(ann2snn.InputShapeError, match=f"takes float32 inputs; got {str(dtype).split('.')[1]}"):
        snn(torch.ones(2, 1, 8, dtype=dtype))


def test_fraction_looking_percentile_warns():
    with pytest.warns(ann2snn.ConversionWarning, match="looks like a fraction"):
        ann2snn.convert(small(), T=4, learn_tau=False, calibration=[torch.randn(8, 1, 8)], percentile=0.999)


def test_no_calibration_and_no_neuron_warn_through_python_warnings():
    with pytest.warns(ann2snn.ConversionWarning, match="no calibration data"):
        ann2snn.convert(small(), T=4, learn_tau=False)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(8, 2)).eval()
    with pytest.warns(ann2snn.ConversionWarning, match="no spiking neuron"):
        snn = ann2snn.convert(linear, T=4, learn_tau=False, calibration=[torch.randn(4, 1, 8)])
    settings = snn.report.settings_line()  # nothing was chosen or corrected: the line does not pretend it was
    assert "no spiking neurons (nothing to calibrate)" in settings and "chose" not in settings and "correction none" in settings


def test_state_dict_moves_between_per_layer_and_per_channel_conversions():
    torch.manual_seed(0)
    x = torch.randn(6, *INPUT_SHAPE)
    per_channel = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=False, calibration=[x])
    per_layer = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=False)
    per_layer.load_state_dict(per_channel.state_dict())
    with torch.no_grad():
        assert torch.equal(per_layer(x), per_channel(x))


def test_meta_device_model_is_refused_with_the_way_out():
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(24, 2)).eval()
    with pytest.raises(ann2snn.ConversionError, match=r"meta device.*to_empty"):
        ann2snn.convert(model, T=4, calibration=[torch.randn(2, 1, 8)])
