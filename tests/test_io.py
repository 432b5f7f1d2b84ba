"""Saving and loading converted networks."""

import warnings

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn import ConversionError
from snn_test_nets import INPUT_SHAPE, ResidualConcatNet


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(6, *INPUT_SHAPE)
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=8, learn_tau=True, calibration=[x], tau_per_channel=True)
    path = tmp_path / "snn.pt"
    ann2snn.save(snn, path)
    loaded = ann2snn.load(path)
    with torch.no_grad():
        assert torch.equal(snn(x), loaded(x))
    assert str(loaded.report) == str(snn.report)
    assert [p.name for p in tmp_path.iterdir()] == ["snn.pt"]  # no temporary file left


def test_state_dict_round_trip():
    torch.manual_seed(0)
    x = torch.randn(6, *INPUT_SHAPE)
    a = ann2snn.convert(ResidualConcatNet().eval(), T=8, calibration=[x])
    b = ann2snn.convert(ResidualConcatNet().eval(), T=8)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    for bad in (path, tmp_path / "missing.pt"):
        try:
            ann2snn.load(bad)
        except ann2snn.ConversionError as error:
            assert str(bad) in str(error)
        else:
            raise AssertionError("load accepted a file that is not a saved network")


@pytest.mark.parametrize(
    "options",
    [
        {"learn_tau": True, "tau_per_channel": True},
        {"per_channel": True, "percentile": "auto"},
        {"encoder": "rate"},
        {"maxpool": "avg", "mode": "step"},
    ],
)
def test_round_trip_is_exact_and_trainable(tmp_path, options):
    """Outputs, report, graph code, parameter types and names survive the safe format; a loaded
    network with learnable time constants trains them."""
    torch.manual_seed(0)
    x = torch.randn(6, *INPUT_SHAPE)
    snn = ann2snn.convert(ResidualConcatNet().eval(), T=6, calibration=[x], **options)
    with torch.no_grad():
        snn(x)  # state from a forward pass is saved too
    ann2snn.save(snn, tmp_path / "snn.pt")
    loaded = ann2snn.load(tmp_path / "snn.pt")
    torch.manual_seed(1)
    expected = snn(x)
    torch.manual_seed(1)
    assert torch.equal(loaded(x), expected)
    assert loaded.report == snn.report and loaded.network.code == snn.network.code
    assert [(n, type(p), p.requires_grad) for n, p in loaded.named_parameters()] == [(n, type(p), p.requires_grad) for n, p in snn.named_parameters()]
    loaded(x).sum().backward()
    assert all(p.grad is not None for n, p in loaded.named_parameters() if "leak" in n)


ZOO = ["m5", "vgg", "resnet", "piczak", "study_m5", "study_piczak", "study_hjh"]


@pytest.mark.parametrize("name", ZOO)
def test_zoo_networks_round_trip_in_the_safe_format(tmp_path, name):
    """Every zoo net, converted, is saved in the safe format (no pickle, no warning) and loads back
    computing the same bits."""
    zoo = pytest.importorskip("ann2snn_zoo")
    torch.manual_seed(0)
    shape = zoo.input_spec(name).shape
    x = torch.randn(2, *shape)
    snn = ann2snn.convert(zoo.create(name, 10, shape).eval(), T=3, calibration=[x, torch.randn(2, *shape)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pickle fallback warns
        ann2snn.save(snn, tmp_path / "snn.pt")
    loaded = ann2snn.load(tmp_path / "snn.pt")
    with torch.no_grad():
        assert torch.equal(loaded(x), snn(x))
    assert loaded.network.code == snn.network.code


def test_load_says_what_a_file_of_another_kind_is(tmp_path):
    """A NIR graph, a torch.export archive, a text file or an empty file given to ``load`` is named
    for what it is, before torch reads it (torch would suggest weights_only=False for some)."""
    import nir
    import numpy as np

    graph = nir.NIRGraph(nodes={"input": nir.Input(np.array([3])), "output": nir.Output(np.array([3]))}, edges=[("input", "output")])
    nir.write(tmp_path / "graph.nir", graph)
    torch.export.save(torch.export.export(nn.Linear(3, 2), (torch.randn(1, 3),)), tmp_path / "program.pt2")
    (tmp_path / "notes.txt").write_text("not a network\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    expected = {"graph.nir": "an HDF5 file .*nir.read", "program.pt2": "a torch.export archive .*convert the program", "notes.txt": "a text file", "empty.pt": "empty"}
    for name, kind in expected.items():
        with pytest.raises(ConversionError, match=f"is {kind}.*not a network saved by ann2snn.save") as raised:
            ann2snn.load(tmp_path / name)
        assert "weights_only" not in str(raised.value)
