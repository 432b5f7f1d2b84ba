"""Tracing failures get the fix for their kind (``trace.trace_fix``), and the graph says whether
it came from a ``torch.export`` program."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError
from ann2snn.exported import lift_exported
from ann2snn.trace import EXPORTED_PROGRAM
from snn_test_nets import assert_modes_agree_with_the_cnn


class PoolBuiltInForward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(nn.MaxPool1d(4)(F.relu(self.conv(x))).flatten(1))


class TopLevelBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        if h.sum() > 0:
            h = h * 2
        return self.fc(h.mean(2))


class Branch(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x
        return -x


class SubmoduleBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.branch, self.fc = nn.Conv1d(1, 4, 3), Branch(), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.branch(F.relu(self.conv(x))).mean(2))


class LenOfInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).reshape(len(x), -1))


class ZerosOfInputBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1) + torch.zeros(x.shape[0], 120))


def refusal(model: nn.Module) -> str:
    with pytest.raises(ConversionError) as info:
        ann2snn.convert(model.eval(), calibration=[torch.randn(8, 1, 32)])
    return str(info.value)


def test_a_module_built_in_forward_is_told_to_move_to_init():
    message = refusal(PoolBuiltInForward())
    assert "cannot trace PoolBuiltInForward at" in message and "nn.MaxPool1d(4)(F.relu" in message
    assert "create it once in __init__" in message and "F.max_pool1d" in message
    assert "control flow" not in message and "leaf_modules" not in message


def test_top_level_control_flow_is_not_told_to_make_a_leaf_of_a_submodule():
    message = refusal(TopLevelBranch())
    assert "if h.sum() > 0" in message and "in module" not in message
    assert "leaf_modules cannot make the top-level model a leaf" in message and "rewrite the branch" in message
    assert "concrete_args" in message and "that submodule's class or dotted name" not in message


def test_control_flow_in_a_submodule_names_it_and_suggests_a_leaf():
    message = refusal(SubmoduleBranch())
    assert "in module `branch`" in message and "if x.sum() > 0" in message
    assert "leaf_modules=[<that submodule's class or dotted name>]" in message
    torch.manual_seed(0)
    model = SubmoduleBranch().eval()
    with pytest.warns(ann2snn.ConversionWarning, match="not purely spiking"):
        snn = ann2snn.convert(model, T=256, learn_tau=False, leaf_modules=[Branch], allow_analog=True, calibration=[torch.randn(32, 1, 32)])
    x = torch.randn(16, 1, 32)
    assert_modes_agree_with_the_cnn(snn, model, x)


def test_len_of_a_tensor_is_told_to_use_size_or_flatten():
    message = refusal(LenOfInput())
    assert "reshape(len(x), -1)" in message and "x.size(0)" in message and "flatten(1)" in message
    assert "control flow" not in message


def test_a_tensor_created_from_the_input_batch_size_is_told_to_broadcast():
    message = refusal(ZerosOfInputBatch())
    assert "torch.zeros(x.shape[0], 120)" in message and "torch.zeros(1, n)" in message
    assert "expected one of" not in message and "control flow" not in message


def test_the_trace_marks_a_graph_from_an_exported_program():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30, 3)).eval()
    program = torch.export.export(model, (torch.randn(2, 1, 32),))
    assert ann2snn.trace(lift_exported(program)).meta[EXPORTED_PROGRAM] is True
    assert ann2snn.trace(model).meta[EXPORTED_PROGRAM] is False
