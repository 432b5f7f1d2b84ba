"""CNNs that compute their batch dimension (pairs of examples, batch halves, a merge to 2B rows):
layer mode, which folds the T steps into the batch, is refused at conversion naming the node;
step mode runs them as the CNN does (``passes.batch_size.batch_arithmetic``)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
import ann2snn_zoo
from ann2snn import ConversionError
from ann2snn.passes.batch_size import batch_arithmetic
from ann2snn.trace import trace
from snn_test_nets import assert_modes_agree_with_the_cnn


class InputPairs(nn.Module):
    """Two consecutive examples stacked as channels of one: ``x.view(x.shape[0] // 2, 2, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(2, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x.view(x.shape[0] // 2, 2, -1))).flatten(1))


class SpikePairs(nn.Module):
    """Features of two consecutive examples joined after a neuron: ``h.view(x.shape[0] // 2, -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(2 * 4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).view(x.shape[0] // 2, -1))


class Halves(nn.Module):
    """The first half of the batch against the second: ``h.reshape(2, -1, C)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = F.relu(self.conv(x)).flatten(1).reshape(2, -1, 4 * 30)
        return self.fc(pairs[0] - pairs[1])


class CatHalves(nn.Module):
    """The batch halves side by side: ``torch.cat([h[: n // 2], h[n // 2 :]], dim=1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(2 * 4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).flatten(1)
        n = h.shape[0]
        return self.fc(torch.cat([h[: n // 2], h[n // 2 :]], dim=1))


class JoinedPairs(nn.Module):
    """Two consecutive examples joined with ``h.reshape(-1, 2 * F)``: no batch arithmetic in the
    graph, but the CNN fails on one example and runs on two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(2 * 4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).reshape(-1, 2 * 4 * 30))


class MergeTwice(nn.Module):
    """[B, 2, F] merged into [2B, F] with ``2 * x.size(0)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x.view(x.size(0), 2, 16)))
        return self.fc2(h.reshape(2 * x.size(0), 8))


class MergeRows(nn.Module):
    """[B, 2, F] merged into [2B, F] with ``-1``: rows stay grouped by step, so layer mode runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), 2, 16))).reshape(-1, 8))


#: Model, the node layer mode is refused at, and the source it comes from.
BATCH_ARITHMETIC = {
    "input-pairs": (InputPairs, "view", r"x\.view\(x\.shape\[0\] // 2, 2, -1\)"),
    "spike-pairs": (SpikePairs, "view", r"view\(x\.shape\[0\] // 2, -1\)"),
    "halves": (Halves, "reshape", r"reshape\(2, -1, 4 \* 30\)"),
    "cat-halves": (CatHalves, "getitem_1", r"h\[: n // 2\]"),
    "merge-twice": (MergeTwice, "reshape", r"reshape\(2 \* x\.size\(0\), 8\)"),
    "joined-pairs": (JoinedPairs, "reshape", r"reshape\(-1, 2 \* 4 \* 30\)"),
}


def data(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 1, 32, generator=g) for _ in range(n)]


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y - reference).abs().mean() / reference.abs().mean())


@pytest.mark.parametrize("name", list(BATCH_ARITHMETIC))
def test_layer_mode_is_refused_at_conversion_naming_the_node_and_the_way_out(name):
    cls, node, code = BATCH_ARITHMETIC[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConversionError, match=rf"at node `{node}` \(.*test_batch_reshapes\.py:\d+: .*{code}.*mode='step'"):
            ann2snn.convert(cls().eval(), T=8, calibration=data(1, 1))


@pytest.mark.parametrize("name", list(BATCH_ARITHMETIC))
def test_step_mode_computes_the_cnn_and_stays_in_step_mode(name):
    cls = BATCH_ARITHMETIC[name][0]
    torch.manual_seed(0)
    model = cls().eval()
    snn = ann2snn.convert(model, T=200, mode="step", calibration=data(2, 1))
    x = data(1, 2)[0]
    with torch.no_grad():
        y, out = model(x), snn(x)
    assert out.shape == y.shape
    assert relative_error(out, y) < 0.05
    with pytest.raises(ConversionError, match="mode='step'"):
        snn.mode = "layer"
    assert snn.mode == "step"


def test_a_join_of_pairs_found_when_run_refuses_layer_mode_then():
    torch.manual_seed(0)
    model = JoinedPairs().eval()
    with pytest.warns(ann2snn.ConversionWarning, match="no calibration data"):
        snn = ann2snn.convert(model, T=8)  # nothing ran the network yet
    x = data(1, 2)[0]
    with pytest.raises(ConversionError, match=r"node `reshape` .*fails on one example but runs on two.*mode='step'"):
        snn(x)
    snn.mode = "step"
    with torch.no_grad():
        assert snn(x).shape == model(x).shape == (16, 3)
    with pytest.raises(ConversionError, match="mode='step'"):
        snn.mode = "layer"


def test_a_merge_with_minus_one_runs_in_layer_mode():
    torch.manual_seed(0)
    model = MergeRows().eval()
    snn = ann2snn.convert(model, T=200, calibration=data(2, 1))
    assert snn.layer_mode_blocker is None and snn.mode == "layer"
    assert_modes_agree_with_the_cnn(snn, model, data(1, 2)[0])


@pytest.mark.parametrize("name", ann2snn_zoo.names("all"))
def test_the_zoo_has_no_batch_arithmetic(name):
    assert batch_arithmetic(trace(ann2snn_zoo.create(name, n_classes=10))) == []


@pytest.mark.parametrize(
    "forward",
    [
        lambda h: h.flatten(1),
        lambda h: h.view(h.size(0), -1),
        lambda h: h.view(-1, 4 * 30),
        lambda h: h.permute(0, 2, 1).flatten(1),
        lambda h: torch.cat([h, h], dim=1).flatten(1),
        lambda h: h.mean(2),
        lambda h: h[:, :2].flatten(1),
        lambda h: torch.max(h, 1)[0],
        lambda h: h.flatten(0, 1),
    ],
)
def test_ops_that_keep_the_batch_are_not_batch_arithmetic(forward):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(F.relu(self.conv(x)))

    assert batch_arithmetic(trace(Net())) == []


@pytest.mark.parametrize(
    ("forward", "reason"),
    [
        (lambda h: h.chunk(2)[0], "splits along the batch"),
        (lambda h: torch.cat([h, h]), "concatenates along the batch"),
        (lambda h: h.transpose(0, 1), "moves the batch"),
        (lambda h: h.sum(0), "reduces over the batch"),
        (lambda h: h[1:], "slices the batch"),
        (lambda h: torch.flatten(h), "flattens the batch"),
        (lambda h: h.unflatten(0, (2, -1)), "unflattens the batch"),
    ],
)
def test_ops_along_the_batch_are_batch_arithmetic(forward, reason):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return forward(F.relu(self.conv(x)))

    ((_, found),) = batch_arithmetic(trace(Net()))
    assert reason in found
