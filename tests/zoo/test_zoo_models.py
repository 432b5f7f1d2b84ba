"""Zoo models: registry, fx tracing, output shapes, documented parameter counts."""

import operator
import re

import pytest
import torch
import torch.fx

import ann2snn_zoo as zoo

ALLOWED_MODULES = (
    torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.ReLU,
    torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.AvgPool1d, torch.nn.AvgPool2d,
    torch.nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool2d, torch.nn.Dropout, torch.nn.Linear,
)  # fmt: skip


def test_registry_lists_the_four_models():
    assert zoo.names() == ["m5", "vgg", "resnet", "piczak"]
    assert zoo.input_spec("m5") == zoo.InputSpec("waveform", (1, 8000))
    assert zoo.input_spec("vgg") == zoo.InputSpec("logmel", (1, 40, 101))
    assert zoo.input_spec("piczak").front_end().output_shape == (1, 40, 101)


@pytest.mark.parametrize("name", zoo.names())
def test_model_traces_and_gives_logits(name):
    model = zoo.create(name, n_classes=7).eval()
    x = torch.rand(3, *model.input_spec.shape)
    traced = torch.fx.symbolic_trace(model)
    out = model(x)
    assert out.shape == (3, 7)
    torch.testing.assert_close(traced(x), out)
    assert not torch.allclose(out.exp().sum(1), torch.ones(3))  # logits, not log-probabilities


@pytest.mark.parametrize("name", zoo.names())
def test_model_uses_only_convertible_layers(name):
    leaves = [m for m in zoo.create(name).modules() if not list(m.children())]
    assert all(isinstance(m, ALLOWED_MODULES) for m in leaves), [type(m) for m in leaves]


@pytest.mark.parametrize("name", zoo.names())
def test_docstring_parameter_count_is_right(name):
    model = zoo.create(name, n_classes=10)
    match = re.search(r"Parameters \(default config, 10 classes\): ([\d,]+)", type(model).__doc__)
    assert match, f"{name}'s docstring does not state its parameter count"
    assert int(match[1].replace(",", "")) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "shape"),
    [("m5", (1, 16000)), ("vgg", (1, 64, 101)), ("resnet", (1, 64, 63)), ("piczak", (1, 64, 63))],
)
def test_model_takes_other_feature_shapes(name, shape):
    model = zoo.create(name, n_classes=12, input_shape=shape)
    assert model.input_spec.shape == shape
    assert model(torch.rand(2, *shape)).shape == (2, 12)


def test_model_options():
    assert zoo.create("m5", n_channel=16).conv1.out_channels == 16
    assert isinstance(zoo.create("m5", pool="avg").pool1, torch.nn.AvgPool1d)
    assert len(zoo.create("resnet", n_blocks=2).blocks) == 2
    vgg = zoo.create("vgg", widths=(8, 16), convs_per_stage=1)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in vgg.modules()) == 2
    assert zoo.create("piczak", hidden=64).fc2.out_features == 64


def test_resnet_adds_before_relu():
    graph = torch.fx.symbolic_trace(zoo.create("resnet", n_blocks=1)).graph
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target in (torch.add, operator.add)]
    assert adds and all(next(iter(n.users)).target.endswith("relu2") for n in adds)


def test_bad_names_and_shapes_fail_clearly():
    with pytest.raises(KeyError, match="unknown model 'm6'"):
        zoo.create("m6")
    with pytest.raises(ValueError, match="takes waveform items"):
        zoo.create("m5", input_shape=(1, 40, 101))
    with pytest.raises(ValueError, match="m5 cannot take input of shape"):
        zoo.create("m5", input_shape=(1, 1000))
