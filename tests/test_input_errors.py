"""Bad input to a converted network, or to its calibration, gets a short error that names the
problem and the way out; odd but valid input (an empty batch, a tuple output) just works."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn
from ann2snn import ConversionError, InputShapeError


class Net2d(nn.Module):
    """A 1-channel 2-D CNN for [batch, 1, 16, 16], with a max and an average pool and global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.AvgPool2d(2)
        self.conv = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


class Net1d(nn.Module):
    """A 1-D CNN for [batch, 1, 64]."""

    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv1d(1, 8, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 3))

    def forward(self, x):
        return self.f(x)


class TwoOutputs(nn.Module):
    """Returns (logits, features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 14 * 14, 3)

    def forward(self, x):
        h = F.relu(self.conv(x)).flatten(1)
        return self.fc(h), h


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 14 * 14, 3)

    def forward(self, x, y):
        return self.fc(F.relu(self.conv(x) + y).flatten(1))


def calibration(shape: tuple = (1, 16, 16), batches: int = 2) -> list[torch.Tensor]:
    return [torch.randn(8, *shape) for _ in range(batches)]


@pytest.fixture
def snn2d() -> ann2snn.SpikingNetwork:
    torch.manual_seed(0)
    return ann2snn.convert(Net2d().eval(), T=4, calibration=calibration(), correction="none")


def message(call) -> str:
    with pytest.raises(InputShapeError) as info:
        call()
    return str(info.value)


# -- 1. wrong shapes: the dimension named, only free sizes offered, no traceback ---------------
def test_wrong_channel_count_names_the_dimension_and_offers_no_freeing(snn2d):
    text = message(lambda: snn2d(torch.randn(4, 3, 16, 16)))
    assert "dimension 1 is 3, not 1" in text and "`stem.0`" in text and "1 channel" in text
    assert "snn.input_shape = (" not in text and "input_shape=(" not in text


def test_wrong_rank_says_so_and_offers_no_freeing(snn2d):
    text = message(lambda: snn2d(torch.randn(4, 16, 16)))
    assert "2 dimensions per example, not 3" in text and "x.unsqueeze(1)" in text
    assert "snn.input_shape = (" not in text


def test_other_spatial_size_offers_freeing_that_shape(snn2d):
    text = message(lambda: snn2d(torch.randn(4, 1, 16, 20)))
    assert "dimension 3 is 20, not 16" in text
    assert "snn.input_shape = (1, 16, None)" in text and "convert(..., input_shape=(1, 16, None))" in text


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_freed_size_the_layers_cannot_take_names_the_node_without_a_traceback(snn2d, capfd, mode):
    snn2d.input_shape, snn2d.mode = (1, None, None), mode
    with torch.no_grad():
        assert snn2d(torch.randn(2, 1, 8, 8)).shape == (2, 5)  # a size the layers take
        text = message(lambda: snn2d(torch.randn(2, 1, 1, 1)))
    assert "[batch, 1, 1, 1]" in text and "it fails at node `stem_" in text and "[batch, 8, 1, 1]" in text
    assert "ShapeProp" not in text and "nn_module_stack" not in text
    assert "Traceback" not in capfd.readouterr().err


# -- 2. a model with a tuple output can be calibrated --------------------------------------------
def test_tuple_output_is_calibrated_on_each_output():
    torch.manual_seed(0)
    model = TwoOutputs().eval()
    snn = ann2snn.convert(model, T=16, calibration=calibration(batches=4))
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        logits, features = snn(x)
        want_logits, want_features = model(x)
    assert logits.shape == want_logits.shape and features.shape == want_features.shape
    assert snn.report.settings["percentile_chosen"] is not None and snn.report.neurons[0].threshold


# -- 3. recalibrate refreshes the report ---------------------------------------------------------
def test_recalibrate_updates_the_settings_and_drops_the_stale_warning():
    torch.manual_seed(0)
    batches = calibration()
    snn = ann2snn.convert(Net2d().eval(), T=8, calibration=batches)
    snn.T = 16
    with pytest.warns(ann2snn.StaleCalibrationWarning), torch.no_grad():
        snn(batches[0])
    assert any("runs at T=16" in w for w in snn.report.warnings)
    ann2snn.recalibrate(snn, batches)
    line = snn.report.settings_line()
    assert "T=16," in line and "tuned for T=16" in line and "T=8" not in line
    assert not any("tuned for T=8" in w for w in snn.report.warnings)


# -- 4. a calibration error says what the network expects ---------------------------------------
def test_calibration_of_the_wrong_channel_count_states_the_networks_shape():
    with pytest.raises(InputShapeError) as info:
        ann2snn.convert(Net2d().eval(), T=8, calibration=[torch.randn(8, 3, 16, 16)])
    text = str(info.value)
    assert "expects [batch, 1, any, any]" in text and "dimension 1 is 3" in text and "`stem.0`" in text
    assert "[batch, 3, 16, 16] on" not in text.split("expects")[1]


# -- 5. two-input models are refused at conversion -----------------------------------------------
@pytest.mark.parametrize("data", [None, calibration()])
def test_two_input_model_is_refused_with_the_way_out(data):
    with pytest.raises(ConversionError) as info:
        ann2snn.convert(TwoInputs().eval(), T=4, calibration=data)
    text = str(info.value)
    assert "2 inputs (x, y)" in text and "one input tensor" in text and "wrap the model" in text


# -- 6. an empty batch gives an empty output in either mode --------------------------------------
@pytest.mark.parametrize("net, shape", [(Net2d, (1, 16, 16)), (Net1d, (1, 64))])
@pytest.mark.parametrize("mode", ["layer", "step"])
def test_empty_batch_gives_an_empty_output(net, shape, mode):
    torch.manual_seed(0)
    snn = ann2snn.convert(net().eval(), T=4, calibration=calibration(shape), correction="none", mode=mode)
    with torch.no_grad():
        out = snn(torch.randn(0, *shape))
        assert out.shape == (0, snn(torch.randn(1, *shape)).shape[1])


@pytest.mark.parametrize("shape", [(2, 16, 20), (16, 1, 16, 20)])
def test_convert_refuses_an_input_shape_the_cnn_cannot_take(shape):
    """Without calibration data, ``input_shape`` is all convert knows of the input: a shape the CNN
    cannot take (wrong channels, the batch included) is refused at once, naming the first layer,
    instead of returning a network that refuses every input."""
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 18, 3)).eval()
    with pytest.raises(ConversionError, match=r"input_shape=.* does not fit the model; it fails at node `_0` \(Conv2d\).*without the batch dimension"):
        ann2snn.convert(cnn, T=8, input_shape=shape)
    snn = ann2snn.convert(cnn, T=8, input_shape=(1, 16, 20))
    assert snn(torch.rand(3, 1, 16, 20)).shape == (3, 3)


def test_converting_a_converted_network_says_so():
    cnn = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    snn = ann2snn.convert(cnn, T=4, input_shape=(4,))
    with pytest.raises(ConversionError, match="already a converted SpikingNetwork: use it as it is .*recalibrate"):
        ann2snn.convert(snn, T=8)


def test_recalibrating_a_network_converted_without_data_calibrates_as_convert_would():
    """convert() without data, then recalibrate(batches): the same thresholds and correction as
    convert(calibration=batches), not per-layer thresholds without correction."""
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Conv1d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 12, 3)).eval()
    batches = [torch.rand(32, 1, 16)]
    with pytest.warns(ann2snn.ConversionWarning, match="no calibration data"):
        later = ann2snn.convert(cnn, T=8, input_shape=(1, 16))
    ann2snn.recalibrate(later, batches)
    at_once = ann2snn.convert(cnn, T=8, calibration=batches)
    for name in ("percentile", "per_channel", "correction"):
        assert later.report.settings[name] == at_once.report.settings[name]
    x = torch.rand(16, 1, 16)
    assert torch.equal(later(x), at_once(x))


def test_a_fraction_percentile_is_warned_about_once():
    cnn = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14, 3)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ann2snn.convert(cnn, T=4, calibration=[torch.rand(8, 1, 16)], percentile=0.999)
    assert len([w for w in caught if "looks like a fraction" in str(w.message)]) == 1


def test_a_calibration_batch_of_the_wrong_rank_is_one_error_naming_the_first_layer():
    """A [B, L] batch for a Conv1d: the first layer's expectation, not a failure at a later layer
    that one example (read as unbatched) reached; an IndexError (dimension out of range) from a
    transpose is explained too, not a traceback from fx's generated code."""
    cnn = nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 18, 3)).eval()
    with pytest.raises(InputShapeError, match=r"first layer `0` \(Conv1d\) takes 2") as raised:
        ann2snn.convert(cnn, T=4, calibration=[torch.rand(16, 20)])
    assert "Linear" not in str(raised.value)

    class Transposed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(20, 4, 3)

        def forward(self, x):
            return self.conv(x.transpose(1, 2)).relu().mean(-1)

    with pytest.raises(InputShapeError, match="failed on an input of shape \\[batch, 32\\].*Dimension out of range"):
        ann2snn.convert(Transposed().eval(), T=4, calibration=[torch.rand(4, 32)])
