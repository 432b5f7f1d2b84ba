"""A batch norm that cannot be folded is warned about (``ConversionWarning``), with the reason,
besides the report line; and an exported program's refusals advise no leaf modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError, ConversionWarning
from ann2snn.exported import lift_exported
from ann2snn.graph import kind_counts, to_networkx
from snn_test_nets import assert_modes_agree_with_the_cnn


class SharedConvOutput(nn.Module):
    """The conv output is read through the batch norm and directly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4)
        self.fc, self.fc2 = nn.Linear(120, 3), nn.Linear(120, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc(F.relu(self.bn(h)).flatten(1)) + self.fc2(F.relu(h).flatten(1))


class PointwiseNet(nn.Module):
    """A conv, then a pointwise op with no spiking equivalent (``torch.sigmoid`` or ``torch.round``)."""

    def __init__(self, op) -> None:
        super().__init__()
        self.conv, self.fc, self.op = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3), op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.op(self.conv(x)).flatten(1))


def with_statistics(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_unfoldable_batch_norm_is_warned_about_with_its_reason():
    model = with_statistics(SharedConvOutput())
    batches = [torch.randn(32, 1, 32) for _ in range(2)]
    with pytest.warns(ConversionWarning, match=r"batch norm `bn` .*could not be folded: the output of `conv` is also used by `relu_1`"):
        snn = ann2snn.convert(model, T=256, learn_tau=False, calibration=batches)
    assert kind_counts(to_networkx(snn.network))["batchnorm"] == 1
    assert any("could not be folded" in w for w in snn.report.warnings)
    x = torch.randn(32, 1, 32)
    assert_modes_agree_with_the_cnn(snn, model, x)


def test_batch_norm_after_a_non_layer_names_what_it_follows():
    model = with_statistics(nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    with pytest.warns(ConversionWarning, match=r"batch norm `0` .*could not be folded: it follows the network's input, not a Conv1d or Linear layer"):
        ann2snn.convert(model, learn_tau=False, calibration=[torch.randn(16, 4)])


def refusals(op) -> tuple[str, str]:
    """The refusal of a model with ``op``, converted as an exported program and as a module."""
    torch.manual_seed(0)
    model = PointwiseNet(op).eval()
    program = torch.export.export(model, (torch.randn(2, 1, 32),))
    with pytest.raises(ConversionError) as exported:
        ann2snn.convert(lift_exported(program))
    with pytest.raises(ConversionError) as module:
        ann2snn.convert(model)
    return str(exported.value), str(module.value)


def test_exported_program_refusal_advises_no_leaf_modules():
    exported, module = refusals(torch.round)
    assert "torch.round.default (1): no spiking equivalent" in exported and "export it again" in exported
    assert "leaf_modules" not in exported
    assert "torch.round (1): no spiking equivalent" in module and "leaf_modules=[...]" in module


def test_exported_program_refusal_gets_the_advice_of_its_op_kind():
    exported, module = refusals(torch.sigmoid)
    for message in (exported, module):
        assert "a nonlinearity other than ReLU: retrain with ReLU" in message and "leaf_modules" not in message
