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
from ann2snn.analysis import propagate_shapes
from ann2snn.passes.batch_size import batch_arithmetic
from ann2snn.timeloop import SpikingNetwork
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


class JoinedGroups(nn.Module):
    """Four consecutive examples joined with ``h.reshape(-1, 4 * F)``: fails on two examples too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).reshape(-1, 4 * 4 * 30))


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
    "joined-groups": (JoinedGroups, "reshape", r"reshape\(-1, 4 \* 4 \* 30\)"),
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
    with pytest.raises(ConversionError, match=r"node `reshape` .*fails on one example but runs on the whole batch.*mode='step'"):
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
@pytest.mark.parametrize("shapes", [False, True])
def test_the_zoo_has_no_batch_arithmetic(name, shapes):
    gm = trace(ann2snn_zoo.create(name, n_classes=10).eval())
    if shapes:
        with torch.no_grad():
            propagate_shapes(gm, torch.randn(2, *ann2snn_zoo.input_spec(name).shape))
    assert batch_arithmetic(gm) == []


class OnFeatures(nn.Module):
    """``forward(h)`` on a conv1d's spikes ``h`` ([B, 4, 30]), optionally through an LSTM first."""

    def __init__(self, forward, lstm: bool = False) -> None:
        super().__init__()
        self.conv, self.f = nn.Conv1d(1, 4, 3), forward
        self.lstm = nn.LSTM(4, 4, batch_first=True) if lstm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x))
        return self.f(self.lstm(h.transpose(1, 2))[0] if self.lstm is not None else h)


def found(forward, shapes: bool, lstm: bool = False) -> list[str]:
    """What ``batch_arithmetic`` finds in ``OnFeatures(forward)``, with the shapes of one run
    recorded in the graph (as the time loop does) or without."""
    gm = trace(OnFeatures(forward, lstm).eval())
    if shapes:
        propagate_shapes(gm, torch.randn(8, 1, 32))
    return [reason for _, reason in batch_arithmetic(gm)]


@pytest.mark.parametrize("shapes", [False, True])
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
        lambda h: torch.stack([h, h]).sum(0),  # branch fusion: the batch at dim 1, then back at 0
        lambda h: torch.stack([h, 2 * h], dim=0).mean(dim=0),
        lambda h: torch.stack([h, h]).amax(0, keepdim=True).squeeze(0),
        lambda h: torch.stack([h, h])[1],
        lambda h: h.unsqueeze(0)[0],
        lambda h: h.mean(2)[:, :1].flatten(),  # [B, 1] flattened into the output, as view(-1)
        lambda h: torch.split(h, 2, dim=1)[0],
        lambda h: h - h.mean(-1, keepdim=True),
        lambda h: torch.roll(h, 1, 2) + torch.flip(h, [-1]),
        lambda h: F.softmax(h, 1),
        lambda h: torch.max(h, h.flip(2)),
    ],
)
def test_ops_that_keep_the_batch_are_not_batch_arithmetic(forward, shapes):
    assert found(forward, shapes) == []


@pytest.mark.parametrize("shapes", [False, True])
def test_indexing_a_tuple_is_not_batch_arithmetic(shapes):
    assert found(lambda h: h.flatten(1), shapes, lstm=True) == []


@pytest.mark.parametrize("shapes", [False, True])
@pytest.mark.parametrize(
    ("forward", "reason"),
    [
        (lambda h: h.chunk(2)[0], "splits along the batch"),
        (lambda h: torch.cat([h, h]), "concatenates along the batch"),
        (lambda h: h.transpose(0, 1), "moves the batch"),
        (lambda h: h.sum(0), "reduces over the batch"),
        (lambda h: h[1:], "slices the batch"),
        (lambda h: torch.flatten(h).relu(), "flattens the batch"),
        (lambda h: h.unflatten(0, (2, -1)), "unflattens the batch"),
        (lambda h: h - h[0], "indexes the batch"),
        (lambda h: h[None].sum(1), "reduces over the batch dimension (dim 1"),
        (lambda h: h - h.unsqueeze(0).mean(1), "reduces over the batch dimension (dim 1"),
        (lambda h: h - h.mean(), "reduces over every dimension"),
        (lambda h: torch.roll(h, 1, 0), "computes along the batch"),
        (lambda h: torch.flip(h, [0]), "computes along the batch"),
        (lambda h: h.repeat_interleave(2, 0), "computes along the batch"),
        (lambda h: torch.stack([h, h]).flatten(1), "does not bring it back to dim 0"),
        (lambda h: h.unsqueeze(0), "leaves the batch dimension at dim 1"),
    ],
)
def test_ops_along_the_batch_are_batch_arithmetic(forward, reason, shapes):
    (what,) = found(forward, shapes)
    assert reason in what


@pytest.mark.parametrize(
    ("forward", "reason"),
    [
        (lambda h: h - h.mean(-3, keepdim=True), "reduces over the batch"),
        (lambda h: h.transpose(-3, -1), "moves the batch"),
        (lambda h: torch.split(h, 2, dim=1)[0][0], "indexes the batch"),
    ],
)
def test_shapes_resolve_negative_dimensions_and_tuples(forward, reason):
    assert found(forward, shapes=False) == []  # the graph alone does not tell
    (what,) = found(forward, shapes=True)
    assert reason in what


class Features(nn.Module):
    """``forward(h)`` on pooled conv features ``h`` ([B, 8]), with spiking layers after it."""

    def __init__(self, forward) -> None:
        super().__init__()
        self.conv, self.fc1, self.fc2, self.f = nn.Conv1d(1, 8, 3), nn.Linear(8, 16), nn.Linear(16, 3), forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.f(F.relu(self.conv(x)).mean(2)))))


#: Ops that mix the examples of a batch and ran silently wrong in layer mode: the node refused at.
MIXING = {
    "h - h[0]": (lambda h: h - h[0], "getitem"),
    "h[None].sum(1)": (lambda h: h + h[None].sum(1) / 32, "sum_1"),
    "h - h.unsqueeze(0).mean(1)": (lambda h: h - h.unsqueeze(0).mean(1), "mean_1"),
    "h - h.mean()": (lambda h: h - h.mean(), "mean_1"),
    "roll(h, 1, 0)": (lambda h: torch.roll(h, 1, 0), "roll"),
    "h - h.mean(-2) on [B, F]": (lambda h: h - h.mean(-2, keepdim=True), "mean_1"),  # found when calibration runs it
}


@pytest.mark.parametrize("name", list(MIXING))
def test_ops_that_mix_examples_refuse_layer_mode_and_run_in_step_mode(name):
    forward, node = MIXING[name]
    torch.manual_seed(0)
    model = Features(forward).eval()
    with pytest.raises(ConversionError, match=rf"at node `{node}` .*mode='step'"):
        ann2snn.convert(model, T=8, calibration=data(1, 1))
    snn = ann2snn.convert(model, T=200, mode="step", calibration=data(2, 1))
    x = data(1, 2)[0]
    with torch.no_grad():
        assert relative_error(snn(x), model(x)) < 0.05


def test_a_negative_dimension_on_the_batch_is_found_when_run():
    torch.manual_seed(0)
    with pytest.warns(ann2snn.ConversionWarning, match="no calibration data"):
        snn = ann2snn.convert(Features(lambda h: h - h.mean(-2, keepdim=True)).eval(), T=8)
    with pytest.raises(ConversionError, match=r"at node `mean_1` .*reduces over the batch dimension \(dim 0\).*mode='step'"):
        snn(data(1, 2)[0])


class StackFusion(nn.Module):
    """Two branches fused with ``torch.stack([a, b]).sum(0)``, a [B, 1] output flattened."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv1d(1, 4, 3, padding=1), nn.Conv1d(1, 4, 5, padding=2), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.stack([F.relu(self.a(x)), F.relu(self.b(x))]).sum(0)
        return self.fc(F.relu(torch.stack([h, h], dim=0).mean(dim=0)).mean(2)).flatten()


def test_branch_fusion_by_stack_and_a_flattened_output_run_in_layer_mode():
    torch.manual_seed(0)
    model = StackFusion().eval()
    snn = ann2snn.convert(model, T=200, calibration=data(2, 1))
    assert snn.layer_mode_blocker is None and snn.mode == "layer"
    snn.batch_chunk = 8
    assert_modes_agree_with_the_cnn(snn, model, data(1, 2)[0])


class Centred(nn.Module):
    """Features centred on the batch mean, ``h - h.mean(0)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4 * 30, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).flatten(1)
        return self.fc(h - h.mean(0, keepdim=True))


def test_a_network_saved_before_the_check_refuses_layer_mode_when_loaded(tmp_path, monkeypatch):
    snn = ann2snn.convert(Centred().eval(), T=8, mode="step", calibration=data(1, 1))
    blocker = snn.layer_mode_blocker
    assert "reduces over the batch" in blocker
    saved = SpikingNetwork.__getstate__
    monkeypatch.setattr(SpikingNetwork, "__getstate__", lambda self: {k: v for k, v in saved(self).items() if "layer_mode_blocker" not in k})
    ann2snn.save(snn, tmp_path / "old.snn")
    monkeypatch.undo()
    loaded = ann2snn.load(tmp_path / "old.snn")
    assert "reduces over the batch dimension (dim 0)" in loaded.layer_mode_blocker
    with pytest.raises(ConversionError, match="mode='step'"):
        loaded.mode = "layer"


def test_profile_lets_the_probe_refusal_through_and_restores_training():
    torch.manual_seed(0)
    with pytest.warns(ann2snn.ConversionWarning, match="no calibration data"):
        snn = ann2snn.convert(JoinedPairs().eval(), T=8)
    snn.train()
    with pytest.raises(ConversionError, match="fails on one example") as caught:
        ann2snn.profile(snn, data(1, 2)[0])
    assert caught.value.__context__ is None  # not raised again while restoring the mode
    assert snn.training and snn.mode == "layer"


def test_the_batch_probe_changes_no_running_statistics_nor_the_random_state():
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.BatchNorm1d(1), nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    with pytest.warns(ann2snn.ConversionWarning, match="could not be folded"):  # the batch norm stays
        snn = ann2snn.convert(cnn, T=8, calibration=data(1, 1), input_shape=(1, None))
    (norm,) = [m for m in snn.modules() if isinstance(m, nn.BatchNorm1d)]
    snn.train()
    x = torch.randn(16, 1, 40)  # a new input shape: probed and sized on one example
    statistics, state = norm.running_mean.clone(), torch.random.get_rng_state()
    snn.chunk_size(x)
    assert torch.equal(norm.running_mean, statistics) and torch.equal(torch.random.get_rng_state(), state)
    assert all(m.training for m in snn.modules())
