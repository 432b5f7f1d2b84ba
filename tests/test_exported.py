"""The torch.export front end (``ann2snn.exported``): ATen-level programs read back as torch-level
modules and functions that convert like the module they were exported from."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn.exported import ExportedModel, example_input_shape, lift_exported


class Net(nn.Module):
    """Conv2d + BN + ReLU + max pool + dropout + residual add + adaptive pooling + linear + softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        x = x + F.relu(self.conv2(self.drop(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return F.softmax(self.fc(x), dim=1)


def net() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_lifted_program_computes_the_module_and_converts_like_it():
    model, x = net(), torch.rand(5, 1, 8, 8)
    program = torch.export.export(model, (x[:2],))
    lifted = lift_exported(program)
    assert isinstance(lifted, ExportedModel) and example_input_shape(program) == (1, 8, 8)
    assert {type(m) for m in lifted.modules()} >= {nn.Conv2d, nn.BatchNorm2d, nn.Linear}
    a = ann2snn.convert(lifted, T=4, learn_tau=False, calibration=[x])
    b = ann2snn.convert(model, T=4, learn_tau=False, calibration=[x])
    assert a.report.summary() == b.report.summary()
    with torch.no_grad():
        assert torch.allclose(lifted(x), model(x), atol=1e-6)  # batch 5, exported with 2: the guards are gone
        assert torch.allclose(a(x), b(x), atol=1e-5)


def test_program_module_is_accepted_too():
    model, x = net(), torch.rand(2, 1, 8, 8)
    lifted = lift_exported(torch.export.export(model, (x,)).module())
    with torch.no_grad():
        assert torch.allclose(lifted(x), model(x), atol=1e-6)


class Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.sigmoid(x))


def test_an_op_not_read_back_is_named_by_the_converter():
    lifted = lift_exported(torch.export.export(Sigmoid().eval(), (torch.randn(2, 4),)))
    with pytest.raises(ann2snn.ConversionError, match="unsupported op torch.sigmoid"):
        ann2snn.convert(lifted, T=4)


@pytest.mark.parametrize("name, options", [("m5", {"pool": "avg"}), ("vgg", {}), ("resnet", {"width": 8, "n_blocks": 2}), ("piczak", {})])
def test_exported_zoo_models_lift_to_the_same_conversion(name, options):
    """ATen-level graphs of every zoo model become torch-level modules the converter reads like the original."""
    zoo = pytest.importorskip("ann2snn_zoo")
    torch.manual_seed(0)
    model = zoo.create(name, n_classes=5, **options).eval()
    x = torch.rand(3, *model.input_spec.shape)
    lifted = lift_exported(torch.export.export(model, (x[:2],)).module())
    a = ann2snn.convert(lifted, T=4, learn_tau=False, calibration=[x])
    b = ann2snn.convert(model, T=4, learn_tau=False, calibration=[x])
    assert a.report.summary() == b.report.summary()
    with torch.no_grad():
        assert torch.allclose(lifted(x), model(x), atol=1e-5)
        assert torch.allclose(a(x), b(x), atol=1e-5)


class ViewNet(nn.Module):
    """``x.view(x.size(0), -1)``: exported as ``view(x, [batch, -1])`` with the example's batch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(h.view(h.size(0), -1))


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_flattening_view_keeps_the_batch_of_the_viewed_tensor(dynamic):
    torch.manual_seed(0)
    model, x = ViewNet().eval(), torch.rand(6, 1, 8, 8)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    lifted = lift_exported(torch.export.export(model, (x[:4],), dynamic_shapes=shapes))
    snn = ann2snn.convert(lifted, T=256, learn_tau=False, calibration=[x])
    with torch.no_grad():
        assert torch.allclose(lifted(x), model(x), atol=1e-6)  # another batch than the example's
        layer = snn(x)
        snn.mode = "step"
        assert torch.allclose(snn(x), layer, atol=1e-5)
    assert (layer - model(x)).abs().max() < 0.05 * model(x).abs().max()
