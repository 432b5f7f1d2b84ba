"""The tiled average pools (strided sums) equal PyTorch's average pooling, values and gradients,
and the conversion lowers exactly the pools whose windows tile their input."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.tiled_pool import TiledAverage, TiledAvgPool1d, TiledAvgPool2d, average_pool_backward
from snn_test_nets import path_before_fusion


def _values_and_gradients(pool: nn.Module, x: torch.Tensor, weights_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.detach().clone().requires_grad_()
    out = pool(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(weights_seed))
    (out * weights).sum().backward()
    return out.detach(), x.grad


def _case(number: int) -> tuple:
    """Random pooling case ``number`` (seeded: each case reproducible from its number)."""
    rng = random.Random(number)
    dims = rng.choice([1, 2])
    return dims, rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 3), (rng.randint(1, 13), rng.randint(1, 13)), rng.random() < 0.3, number


@pytest.mark.parametrize("case", range(40))
def test_tiled_pool_equals_torch_average_pooling(case):
    """Same values and input gradients as nn.AvgPool1d/2d, bit for bit, for tiling windows of any
    size, inputs the kernel does or does not divide (the border left over gets no gradient),
    with ceil_mode (partial windows: PyTorch's kernel), and kernels larger than the input (an error, as PyTorch's)."""
    dims, kernel, kernel_w, batch, sizes, ceil_mode, seed = _case(case)
    kernel_size = kernel if dims == 1 else (kernel, kernel_w)
    shape = (batch, 3, sizes[0]) if dims == 1 else (batch, 3, *sizes)
    reference = (nn.AvgPool1d if dims == 1 else nn.AvgPool2d)(kernel_size, ceil_mode=ceil_mode)
    tiled = (TiledAvgPool1d if dims == 1 else TiledAvgPool2d)(kernel_size, ceil_mode=ceil_mode)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    try:
        expected = _values_and_gradients(reference, x, seed)
    except RuntimeError:
        with pytest.raises(RuntimeError):
            tiled(x)
        return
    found = _values_and_gradients(tiled, x, seed)
    assert found[0].shape == expected[0].shape
    assert torch.equal(found[0], expected[0]) and torch.equal(found[1], expected[1])


def test_tiled_pool_takes_torch_kernel_where_it_does_not_apply(monkeypatch):
    """Channels-last and half-precision inputs (PyTorch sums those in float32, rounding once) run
    PyTorch's own kernel; unbatched inputs take the strided sums. The same results either way."""
    calls = []
    original = TiledAverage.apply
    monkeypatch.setattr(TiledAverage, "apply", lambda *args: calls.append(1) or original(*args))
    pool, reference = TiledAvgPool2d(2), nn.AvgPool2d(2)
    for x, tiled in (
        (torch.randn(2, 4, 6, 8).contiguous(memory_format=torch.channels_last), False),
        (torch.randn(2, 4, 6, 8).half(), False),
        (torch.randn(2, 4, 6, 8).bfloat16(), False),
        (torch.randn(4, 6, 8), True),
        (torch.randn(2, 4, 6, 8, dtype=torch.float64), True),
    ):
        calls.clear()
        assert torch.equal(pool(x), reference(x))
        assert bool(calls) == tiled, x.dtype


@pytest.mark.parametrize(
    "settings_, tiles",
    [
        (dict(kernel_size=2), True),
        (dict(kernel_size=(1, 3), stride=(1, 3)), True),
        (dict(kernel_size=(2, 3)), False),  # 6 positions: PyTorch's kernel is as fast
        (dict(kernel_size=2, stride=1), False),  # overlapping windows
        (dict(kernel_size=2, padding=1), False),
        (dict(kernel_size=2, divisor_override=3), False),
    ],
)
def test_only_tiling_average_pools_are_lowered(settings_, tiles):
    """A network's AvgPool2d after a neuron becomes a TiledAvgPool2d (same module name, same
    settings) exactly when its windows tile; the converted network computes the same either way."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.AvgPool2d(**settings_)
            self.fc = nn.LazyLinear(3)

        def forward(self, x):
            return self.fc(F.avg_pool2d(self.pool(F.relu(self.conv(x))), 1).flatten(1))

    torch.manual_seed(0)
    model = Net()
    x = torch.randn(4, 1, 8, 12)
    model(x)
    snn = ann2snn.convert(model, T=8, calibration=[x])
    path = path_before_fusion(snn, "pool")  # the pool runs fused with the neuron before it
    assert path.endswith(".pool")
    lowered = snn.network.get_submodule(path)
    assert isinstance(lowered, TiledAvgPool2d) == tiles
    assert isinstance(lowered, nn.AvgPool2d) and lowered.kernel_size == model.pool.kernel_size
    assert type(model.pool) is nn.AvgPool2d  # the user's model is not changed
    entry = snn.report.entry_for_module(path)
    assert (entry is not None and "strided sums" in entry.after) == tiles
    reference = ann2snn.convert(model, T=8, calibration=[x])
    reference.network.get_submodule(path.removesuffix(".pool")).pool = nn.AvgPool2d(**settings_)
    for mode in ("layer", "step"):
        snn.mode = reference.mode = mode
        assert torch.equal(snn(x), reference(x))


def test_functional_average_pools_are_lowered():
    """F.avg_pool1d calls with tiling windows become a module call; the output does not change."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 4, 5, padding=2)
            self.fc = nn.Linear(4 * 8, 3)

        def forward(self, x):
            return self.fc(F.avg_pool1d(F.relu(self.conv(x)), 4).flatten(1))

    torch.manual_seed(1)
    model, x = Net(), torch.randn(5, 1, 32)
    snn = ann2snn.convert(model, T=6, calibration=[x])
    assert any(isinstance(m, TiledAvgPool1d) for m in snn.network.modules())
    assert not any(n.op == "call_function" and "avg_pool" in str(n.target) for n in snn.network.graph.nodes)
    reference = ann2snn.convert(model, T=6, calibration=[x])
    reference.network.avg_pool1d_tiled = nn.AvgPool1d(4)  # torch's own pooling in the same graph
    assert torch.equal(snn(x), reference(x))


def test_pools_sized_in_the_graph_are_left_alone():
    """A functional pool whose kernel is computed from the input's shape (a global pool written
    as ``F.avg_pool2d(x, (x.shape[2], x.shape[3]))``) converts as before, unlowered."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = F.relu(self.conv(x))
            return self.fc(F.avg_pool2d(y, (y.shape[2], y.shape[3])).flatten(1))

    torch.manual_seed(2)
    model, x = Net(), torch.randn(3, 1, 6, 6)
    snn = ann2snn.convert(model, T=4, calibration=[x])
    assert not any(isinstance(m, (TiledAvgPool1d, TiledAvgPool2d)) for m in snn.network.modules())
    assert snn(x).shape == (3, 3)


def test_max_pools_made_average_keep_one_report_row():
    """With maxpool="avg" the max pool's report row says the average pool runs as strided sums;
    no second row for the lowering."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x = torch.randn(3, 1, 8, 8)
    snn = ann2snn.convert(model, T=4, calibration=[x], maxpool="avg")
    rows = [e for e in snn.report.entries if "strided sums" in e.after]
    assert len(rows) == 1 and rows[0].action == "pool" and isinstance(snn.network.get_submodule(rows[0].module), TiledAvgPool2d)


def test_lowered_pools_save_load_and_export_to_nir(tmp_path):
    """A network with lowered pools (a module and a function call) round-trips through ann2snn's
    safe format with equal outputs, and exports to NIR with the pools as average pools."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.AvgPool2d(2)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x):
            y = self.pool(F.relu(self.conv1(x)))
            return self.fc(F.avg_pool2d(F.relu(self.conv2(y)), 2).flatten(1))

    torch.manual_seed(4)
    model, x = Net(), torch.randn(3, 1, 8, 8)
    snn = ann2snn.convert(model, T=4, calibration=[x])
    assert sum(isinstance(m, TiledAvgPool2d) for m in snn.network.modules()) == 2
    path = tmp_path / "net.snn"
    ann2snn.save(snn, path)
    loaded = ann2snn.load(path)
    assert sum(isinstance(m, TiledAvgPool2d) for m in loaded.network.modules()) == 2
    assert torch.equal(loaded(x), snn(x))
    nir = pytest.importorskip("nir")
    graph = ann2snn.export_nir(snn)
    assert sum(isinstance(node, nir.AvgPool2d) for node in graph.nodes.values()) == 2


@pytest.mark.parametrize(
    "pool, shape",
    [
        (nn.AvgPool2d((4, 3)), (3, 5, 40, 101)),
        (nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), (2, 3, 8, 8)),
        (nn.AvgPool2d(2, ceil_mode=True), (2, 3, 7, 9)),
        (nn.AvgPool2d(2, divisor_override=3), (2, 3, 6, 6)),
        (nn.AvgPool2d(2), (4, 9, 7)),  # no batch dimension
        (nn.AvgPool1d(4), (3, 5, 50)),
        (nn.AvgPool1d(3, stride=2, padding=1), (2, 3, 11)),
        (TiledAvgPool2d(2), (3, 4, 9, 7)),  # strided sums, an uncovered border
        (TiledAvgPool1d(4), (2, 3, 18)),
    ],
)
def test_slice_wise_backward_equals_autograds(pool, shape):
    """``average_pool_backward`` (what the fused backward through time calls per batch slice)
    writes the gradient autograd computes through the pool, bit for bit."""
    torch.manual_seed(0)
    x = torch.rand(shape, requires_grad=True)
    y = pool(x)
    grad = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, grad)
    out = torch.full(shape, float("nan"))
    assert average_pool_backward(pool)(grad, x.detach(), out) is out
    assert torch.equal(out, expected)


def test_no_slice_wise_backward_for_other_pools():
    assert average_pool_backward(nn.AdaptiveAvgPool2d(1)) is None
    assert average_pool_backward(type("UserPool", (nn.AvgPool2d,), {})(2)) is None  # a subclass may compute anything
