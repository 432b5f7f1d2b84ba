"""Spike recording (``ann2snn.recording.record``) and time-varying input (``run_sequence``)."""

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn.draw import draw
from ann2snn.recording import neuron_names, plot_raster, record, run_sequence

T = 12
#: The first neuron, fused with the max pool that reads it (passes.fuse_neuron_pools).
FIRST = "_1_neuron__2_gated.neuron"


def make_snn(**options) -> ann2snn.SpikingNetwork:
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv1d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(6, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 12, 3),
        nn.LogSoftmax(1),
    ).eval()
    calibration = [torch.randn(16, 1, 32) for _ in range(2)]
    options = {"learn_tau": False, "correction": "none", **options}
    return ann2snn.convert(cnn, T=T, calibration=calibration, **options)


@pytest.fixture(scope="module")
def snn():
    return make_snn()


@pytest.fixture
def x():
    return torch.randn(5, 1, 32, generator=torch.Generator().manual_seed(3))


def test_record_gives_every_neurons_spike_train_without_changing_outputs(snn, x):
    with torch.no_grad():
        expected = snn(x)
        with record(snn) as rec:
            out = snn(x)
    assert torch.allclose(out, expected, atol=1e-6)
    assert snn.mode == "layer"  # restored
    assert "reset" not in snn.__dict__
    assert rec.names == neuron_names(snn) == [FIRST, "_4_neuron"]
    assert rec.sources == {FIRST: "ReLU `1`", "_4_neuron": "ReLU `4`"}  # what plot_raster's titles name
    assert rec.steps == [T]
    assert tuple(rec.spikes[FIRST].shape) == (T, 5, 6, 28)
    assert tuple(rec.spikes["_4_neuron"].shape) == (T, 5, 6, 12)
    assert rec.spikes[FIRST].dtype == torch.bool
    assert torch.equal(rec.counts[FIRST], rec.spikes[FIRST].sum(0).float())
    # the same numbers as ann2snn.profile, which counts with its own hooks in layer mode
    counted = {row.name: row.spikes for row in ann2snn.profile(snn, x).neuron_layers}
    for name, counts in rec.counts.items():
        assert float(counts.sum()) / 5 == pytest.approx(counted[name])
    rates = rec.rates()
    assert 0 < rates[FIRST] < 1
    assert rates[FIRST] == pytest.approx(float(rec.spikes[FIRST].float().mean()))
    assert "firing rate" in str(rec) and "_4_neuron" in str(rec)
    assert tuple(rec.raster("_4_neuron", example=2).shape) == (T, 6 * 12)


def test_hooks_are_removed_after_the_block(snn, x):
    with record(snn) as rec, torch.no_grad():
        snn(x)
    with torch.no_grad():
        snn(x)  # outside: not recorded
    assert rec.steps == [T]


def test_runs_join_along_the_batch_and_streams_are_recorded(snn, x):
    with torch.no_grad(), record(snn) as rec:
        snn(x)
        snn(x[:2])
        snn.reset()
        for _ in range(T):
            snn.step(x[:3])
        snn.reset()
    assert rec.steps == [T, T, T]
    assert rec.spikes[FIRST].shape[:2] == (T, 10)
    assert [run[FIRST].shape[1] for run in rec.runs] == [5, 2, 3]
    # the first run's spikes are those of a recording of that call alone
    with torch.no_grad(), record(snn) as alone:
        snn(x)
    assert torch.equal(rec.runs[0]["_4_neuron"], alone.spikes["_4_neuron"])


def test_runs_of_different_lengths_keep_counts(snn, x):
    with torch.no_grad(), record(snn, trains=False) as rec:
        snn(x)
        snn.reset()
        for _ in range(3):
            snn.step(x)
        snn.reset()
    assert rec.steps == [T, 3]
    assert rec.counts[FIRST].shape[0] == 10
    with pytest.raises(ann2snn.ConversionError, match="trains=True"):
        rec.spikes


def test_different_step_counts_need_runs(snn, x):
    with torch.no_grad(), record(snn) as rec:
        snn(x)
        snn.reset()
        snn.step(x)
        snn.reset()
    with pytest.raises(ann2snn.ConversionError, match="different numbers of steps"):
        rec.spikes
    assert [run[FIRST].shape[0] for run in rec.runs] == [T, 1]


def test_layers_subset_and_unknown_names(snn, x):
    with torch.no_grad(), record(snn, layers=["_4_neuron"]) as rec:
        snn(x)
    assert list(rec.spikes) == ["_4_neuron"]
    with pytest.raises(ann2snn.ConversionError, match=r"no neuron layer named 'relu'.*_1_neuron__2_gated\.neuron, _4_neuron"):
        with record(snn, layers=["relu"]):
            pass
    with pytest.raises(ann2snn.ConversionError, match="not Sequential"):
        with record(nn.Sequential()):
            pass


def test_analog_runs_are_not_recorded(x):
    """Threshold calibration runs the neurons as ReLUs (analog mode): those are not spikes."""
    snn = make_snn(percentile=99.9)
    with torch.no_grad(), record(snn) as rec:
        with snn.analog_mode():
            snn.network(x)
    assert rec.steps == []


def test_run_sequence_of_a_constant_input_equals_the_forward_pass(snn, x):
    sequence = x.unsqueeze(0).expand(T, *x.shape)
    with torch.no_grad():
        expected = snn(x)
        averaged = run_sequence(snn, sequence)
        per_step = run_sequence(snn, sequence, return_sequence=True)
        batch_first = run_sequence(snn, sequence.transpose(0, 1), time_dim=1)
    assert torch.allclose(averaged, expected, atol=1e-5)
    assert torch.allclose(batch_first, expected, atol=1e-5)
    assert tuple(per_step.shape) == (T, 5, 3)
    assert torch.allclose(per_step.exp().sum(-1), torch.ones(T, 5), atol=1e-5)  # each step through the log-softmax head


def test_run_sequence_feeds_time_varying_input_step_by_step(snn, x):
    """A sequence whose steps differ: the per-step readouts are those of snn.step on each step."""
    sequence = torch.randn(7, 5, 1, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        per_step = run_sequence(snn, sequence, return_sequence=True)
        snn.reset()
        expected = torch.stack([snn.step(x_t) for x_t in sequence])
        snn.reset()
    assert torch.allclose(per_step, expected, atol=1e-6)


def test_run_sequence_passes_steps_through_any_encoder(x):
    snn = make_snn(encoder="rate")
    events = (torch.rand(T, 5, 1, 32, generator=torch.Generator().manual_seed(5)) < 0.3).float()
    with torch.no_grad():
        first = run_sequence(snn, events)
        second = run_sequence(snn, events)
    assert torch.equal(first, second)  # no random re-encoding of the given steps
    assert snn.encoder.kind == "rate"


def test_run_sequence_refuses_what_is_not_a_sequence(snn, x):
    with pytest.raises(ann2snn.InputShapeError, match=r"\[T, batch, ...\]"):
        run_sequence(snn, torch.randn(32))
    with pytest.raises(ann2snn.InputShapeError, match="no time steps"):
        run_sequence(snn, torch.randn(0, 5, 1, 32))
    with pytest.raises(ann2snn.InputShapeError):
        run_sequence(snn, torch.randn(T, 5, 1, 40))  # wrong per-step shape: the network says which


def test_recording_a_sequence(snn):
    events = torch.randn(6, 2, 1, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), record(snn) as rec:
        run_sequence(snn, events)
    assert rec.steps == [6]
    assert tuple(rec.spikes[FIRST].shape) == (6, 2, 6, 28)


def test_plot_raster_writes_a_png(snn, x, tmp_path):
    pytest.importorskip("matplotlib")
    with torch.no_grad(), record(snn) as rec:
        snn(x)
    plot_raster(rec, tmp_path / "raster.png", example=1)
    assert (tmp_path / "raster.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["raster.png"]


def test_recording_is_part_of_the_public_api():
    assert (ann2snn.record, ann2snn.run_sequence, ann2snn.plot_raster) == (record, run_sequence, plot_raster)
    assert {"record", "run_sequence", "plot_raster", "SpikeRecord"} <= set(ann2snn.__all__)


@pytest.mark.parametrize("batch_chunk, time_chunk", [(None, None), (2, 3)], ids=["auto", "chunked"])
def test_run_sequence_in_layer_mode_equals_step_mode_with_gradients(batch_chunk, time_chunk):
    """Layer mode runs the whole sequence at once (in batch slices and time chunks); it computes
    what step mode computes step by step, outputs and gradients."""
    snn = make_snn(learn_tau=True)
    snn.batch_chunk, snn.time_chunk = batch_chunk, time_chunk
    sequence = torch.randn(7, 5, 1, 32, generator=torch.Generator().manual_seed(8))
    results = []
    for mode in ("layer", "step"):
        snn.mode = mode
        snn.zero_grad()
        given = sequence.clone().requires_grad_()
        per_step = run_sequence(snn, given, return_sequence=True)
        (per_step * torch.linspace(-1, 1, per_step.numel()).view_as(per_step)).sum().backward()
        results.append((per_step.detach(), given.grad, [p.grad.clone() for p in snn.time_constants()]))
    (layer, layer_grad, layer_tau), (step, step_grad, step_tau) = results
    assert torch.allclose(layer, step, atol=1e-5)
    assert torch.allclose(layer_grad, step_grad, atol=1e-5) and layer_grad.abs().sum() > 0
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(layer_tau, step_tau))


def test_plots_without_matplotlib_name_the_extra(snn, x, tmp_path, monkeypatch):
    with torch.no_grad(), record(snn) as rec:
        snn(x)
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match=r"plot_raster\(\) needs matplotlib.*pip install 'ann2snn\[plot\]'"):
        plot_raster(rec, tmp_path / "raster.png")
    with pytest.raises(ImportError, match=r"draw\(\) needs matplotlib.*pip install 'ann2snn\[plot\]'"):
        draw(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), snn, tmp_path / "graph.png")
    assert not (tmp_path / "raster.png").exists() and not (tmp_path / "graph.png").exists()
