"""Bad input gets a clear ConversionError naming the problem and the way out."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError, InputShapeError


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            x = self.fc(x)
        return F.relu(x)


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.out(F.relu(self.fc(x)) * torch.sigmoid(self.fc(x)))


def small() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()


def test_untraceable_model_names_cause_line_and_fix():
    with pytest.raises(ConversionError) as info:
        ann2snn.convert(DataDependent())
    message = str(info.value)
    assert "test_errors.py" in message and "if x.sum() > 0" in message
    assert "leaf_modules" in message and "concrete_args" in message


def test_unsupported_op_names_op_node_and_line():
    with pytest.raises(ConversionError) as info:
        ann2snn.convert(Gated())
    message = str(info.value)
    assert "mul" in message or "sigmoid" in message
    assert "test_errors.py" in message and "allow_analog=True" in message


def test_allow_analog_keeps_and_lists_unsupported_ops():
    snn = ann2snn.convert(Gated(), learn_tau=False, allow_analog=True)
    analog = {e.before for e in snn.report.analog}
    assert analog == {"torch.sigmoid", "operator.mul"} or analog >= {"torch.sigmoid"}
    assert snn(torch.randn(3, 4)).shape == (3, 2)
    assert snn.report.warnings


def test_user_leaf_module_is_kept_opaque_with_allow_analog():
    model = nn.Sequential(nn.Linear(4, 4), DataDependent(), nn.Linear(4, 2))
    snn = ann2snn.convert(model, learn_tau=False, leaf_modules=[DataDependent], allow_analog=True)
    assert [e.before for e in snn.report.analog] == ["DataDependent `1`"]


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_bad_T(T):
    with pytest.raises(ConversionError, match="positive integer"):
        ann2snn.convert(small(), T=T)


def test_empty_calibration():
    with pytest.raises(ConversionError, match="empty"):
        ann2snn.convert(small(), calibration=[])


def test_nan_calibration_names_the_batch():
    batches = [torch.randn(4, 4), torch.full((4, 4), math.nan)]
    with pytest.raises(ConversionError, match="batch 1 contains NaN"):
        ann2snn.convert(small(), calibration=batches)


def test_calibration_pairs_are_accepted():
    snn = ann2snn.convert(small(), calibration=[(torch.randn(8, 4), torch.zeros(8))])
    assert snn.input_shape == (4,)


def test_wrong_input_shape_at_run_time():
    snn = ann2snn.convert(small(), calibration=[torch.randn(8, 4)])
    with pytest.raises(InputShapeError, match=r"\[batch, 4\]"):
        snn(torch.randn(2, 5))


def test_wrong_input_shape_without_calibration_is_explained():
    snn = ann2snn.convert(small())
    with pytest.raises(InputShapeError, match="failed on an input of shape"):
        snn(torch.randn(2, 5))


def test_bad_options():
    with pytest.raises(ConversionError, match="maxpool"):
        ann2snn.convert(nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.MaxPool1d(2)), maxpool="median")
    with pytest.raises(ConversionError, match="encoder"):
        ann2snn.convert(small(), encoder="phase")
    with pytest.raises(ConversionError, match="calibration"):
        ann2snn.convert(small(), per_channel=True)
    with pytest.raises(ConversionError, match="nn.Module"):
        ann2snn.convert(lambda x: x)


def test_no_calibration_warns():
    snn = ann2snn.convert(small())
    assert any("no calibration" in w for w in snn.report.warnings)
