"""ann2snn.draw: before/after drawings of an M5-like chain and a residual net."""

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.draw import _layered_positions, draw

matplotlib = pytest.importorskip("matplotlib")
from matplotlib import image  # noqa: E402
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet  # noqa: E402


def chain() -> nn.Module:
    layers: list[nn.Module] = []
    for c_in, c_out in [(1, 4), (4, 4), (4, 8), (8, 8)]:
        layers += [nn.Conv1d(c_in, c_out, 3), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(2)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("model, shape", [(chain(), (1, 120)), (ResidualConcatNet().eval(), INPUT_SHAPE)], ids=["chain", "residual"])
def test_draw_writes_a_png_sized_to_the_graph(tmp_path, model, shape):
    torch.manual_seed(0)
    snn = ann2snn.convert(model, T=4, learn_tau=False, calibration=[torch.randn(4, *shape)])
    draw(model, snn, tmp_path / "graph.png", title="net")
    assert [p.name for p in tmp_path.iterdir()] == ["graph.png"]
    height, width, _ = image.imread(tmp_path / "graph.png").shape
    rows = max(len(set(y for _, y in _layered_positions(g).values())) for g in (ann2snn.to_networkx(ann2snn.trace(model)), ann2snn.to_networkx(snn.network)))
    assert height >= 40 * rows and width >= 900  # about 0.4 inch per generation, two panels


def test_layered_positions_one_row_per_generation():
    torch.manual_seed(0)
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=4, learn_tau=False)
    graph = ann2snn.to_networkx(snn.network)
    positions = _layered_positions(graph)
    assert set(positions) == set(graph.nodes)
    for source, target in graph.edges:
        assert positions[source][1] > positions[target][1]  # every edge points down
    assert len(set(positions.values())) == len(positions)  # no two nodes overlap
