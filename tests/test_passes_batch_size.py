"""The batch size of a reshape is taken from the tensor reshaped (``passes.batch_size``)."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import ann2snn
from ann2snn import ConversionWarning
from ann2snn.passes.batch_size import size_source

Flatten = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Flattens of ``h`` (after the first neuron) to the batch size of the input ``x``.
FLATTENS: dict[str, Flatten] = {
    "view-x.size(0)": lambda h, x: h.view(x.size(0), -1),
    "view-x.shape[0]": lambda h, x: h.view(x.shape[0], -1),
    "reshape-x.size(0)": lambda h, x: h.reshape(x.size(0), -1),
    "torch.reshape-tuple": lambda h, x: torch.reshape(h, (x.shape[0], -1)),
    "view-x.size()[0]-3d": lambda h, x: h.view(x.size()[0], 4, -1).flatten(1),
}


class FlattenToInputBatch(nn.Module):
    """conv -> ReLU -> flatten to the input's batch size -> linear."""

    def __init__(self, flatten: Flatten) -> None:
        super().__init__()
        self.conv, self.fc, self.flatten = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3), flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(F.relu(self.conv(x)), x))


class ChunkedRows(nn.Module):
    """Each example cut into 4 rows (a genuine batch change), a flatten to those rows' count
    (provably the conv output's), then the 4 rows merged back with ``view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, 1, 8)  # [4B, 1, 8]
        h = F.relu(self.conv(rows)).view(rows.size(0), -1)  # [4B, 24]
        return self.fc(h).view(x.size(0), -1)  # [B, 12]


def batches(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(32, 1, 32, generator=g) for _ in range(n)]


def reshapes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if n.target in ("view", "reshape", torch.reshape)]


def first_size(node: fx.Node) -> object:
    value = node.args[1]
    return value[0] if isinstance(value, (tuple, list)) else value


def analog(snn: ann2snn.SpikingNetwork, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), snn.analog_mode():
        return snn.run_network(x)


def relative_error(y: torch.Tensor, reference: torch.Tensor) -> float:
    return float((y - reference).abs().mean() / reference.abs().mean())


@pytest.mark.parametrize("name", list(FLATTENS))
def test_flatten_to_the_input_batch_reads_the_rows_of_the_tensor_reshaped(name):
    torch.manual_seed(0)
    model = FlattenToInputBatch(FLATTENS[name]).eval()
    snn = ann2snn.convert(model, T=256, learn_tau=False, calibration=batches(2, 1))
    (node,) = reshapes(snn.network)
    assert size_source(first_size(node)) is node.args[0]  # h.view(h.size(0), ...), not x's
    x = batches(1, 2)[0]
    with torch.no_grad():
        y = model(x)
        layer = snn(x)
        snn.mode = "step"
        step = snn(x)
    assert torch.allclose(analog(snn, x), y, atol=1e-5)
    assert torch.allclose(layer, step, atol=1e-5)
    assert relative_error(layer, y) < 0.05
    assert any("size(0) rows" in e.before for e in snn.report.entries)


def test_a_batch_changing_reshape_is_left_as_written_and_warned_about():
    torch.manual_seed(0)
    model = ChunkedRows().eval()
    with pytest.warns(ConversionWarning, match=r"batch size of `x`.*write `fc.size\(0\)` or `.flatten\(1\)`"):
        snn = ann2snn.convert(model, T=256, learn_tau=False, mode="step", calibration=batches(2, 1))
    inner, merge = [n for n in reshapes(snn.network) if size_source(first_size(n)) is not None]  # in graph order
    assert merge.args[0].name == "fc"
    assert size_source(first_size(merge)).op == "placeholder"  # the merge of 4 rows per example still reads x's batch size
    assert size_source(first_size(inner)) is inner.args[0]  # rows.size(0) became the conv output's own: provably equal
    x = batches(1, 2)[0]
    with torch.no_grad():
        y = model(x)
        step = snn(x)
    assert step.shape == y.shape == (32, 12)
    assert torch.allclose(analog(snn, x), y, atol=1e-5)
    assert relative_error(step, y) < 0.05
