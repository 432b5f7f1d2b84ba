"""``ConversionConfig``: one home for the conversion settings' defaults and checks, shared by
``convert()`` (config= and keywords), the command line and applications."""

import dataclasses
import inspect
import math

import pytest
import torch
from torch import nn

import ann2snn
from ann2snn import ConversionConfig, ConversionError
from ann2snn.convert import FROM_CONFIG


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(12, 2)).eval()


CALIBRATION = [torch.randn(16, 1, 8, generator=torch.Generator().manual_seed(1))]


def test_every_setting_is_a_keyword_of_convert_defaulting_to_the_config():
    parameters = inspect.signature(ann2snn.convert).parameters
    for name in ConversionConfig.names():
        assert parameters[name].default is FROM_CONFIG, name
    assert parameters["config"].default is None


def test_config_is_frozen_and_hashable():
    config = ConversionConfig(T=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.T = 16
    assert hash(config) == hash(ConversionConfig(T=8)) and config == ConversionConfig(T=8)
    assert config.replace(T=16).T == 16 and config.T == 8


@pytest.mark.parametrize("setting, message", [
    (dict(T=0), "T=0"), (dict(T=2.5), "T=2.5"), (dict(tau=math.nan), "tau=nan"), (dict(alpha=math.inf), "alpha=inf"),
    (dict(percentile=101), "percentile=101"), (dict(percentile="best"), "percentile='best'"), (dict(correction="all"), "correction='all'"),
    (dict(maxpool="max"), "maxpool='max'"), (dict(encoder="burst"), "encoder='burst'"), (dict(mode="fast"), "mode='fast'"),
    (dict(surrogate="sigmoid"), "surrogate='sigmoid'"), (dict(tau_per_channel=True, learn_tau=False), "needs learn_tau=True"),
])  # fmt: skip
def test_bad_settings_are_refused_by_the_config_and_by_convert(setting, message):
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ConversionConfig(**setting)
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace(".", r"\.")):
        ann2snn.convert(small(), calibration=CALIBRATION, **setting)


def test_numbers_are_normalised():
    config = ConversionConfig(percentile=99, alpha=3, tau=50)
    assert config.percentile == 99.0 and isinstance(config.percentile, float)
    assert isinstance(config.alpha, float) and isinstance(config.tau, float)


def test_unknown_setting_names_the_settings():
    with pytest.raises(ConversionError, match="threshold: not a conversion setting; the settings are T, learn_tau"):
        ConversionConfig().replace(threshold=2)


def test_config_and_keywords_convert_alike_and_keywords_override():
    x = torch.randn(5, 1, 8)
    by_keywords = ann2snn.convert(small(), T=6, learn_tau=False, calibration=CALIBRATION, percentile=99.5, correction="none")
    config = ConversionConfig(T=6, learn_tau=False, percentile=99.5, correction="none")
    by_config = ann2snn.convert(small(), config=config, calibration=CALIBRATION)
    overridden = ann2snn.convert(small(), config=config.replace(T=3, percentile=50.0), T=6, percentile=99.5, calibration=CALIBRATION)
    positional = ann2snn.convert(small(), 6, False, config=ConversionConfig(percentile=99.5, correction="none"), calibration=CALIBRATION)
    with torch.no_grad():
        expected = by_keywords(x)
        for snn in (by_config, overridden, positional):
            assert torch.equal(snn(x), expected)
            assert snn.report.settings == by_keywords.report.settings


def test_default_conversion_is_the_configs():
    plain = ann2snn.convert(small(), calibration=CALIBRATION)
    configured = ann2snn.convert(small(), config=ConversionConfig(), calibration=CALIBRATION)
    assert plain.report.settings == configured.report.settings
    assert plain.T == ConversionConfig().T


def test_report_settings_are_the_configs():
    config = ConversionConfig(T=12, learn_tau=False, percentile=99.0, maxpool="avg")
    assert config.report_settings(calibrated=True) == dict(
        T=12, neuron="subtract", learn_tau=False, tau=math.inf, maxpool="avg", encoder="direct", percentile=99.0, per_channel=True, correction="bias",
    )  # fmt: skip
    assert config.report_settings(calibrated=False)["percentile"] is None
    assert config.report_settings(calibrated=False)["correction"] == "none"
    assert config.report_settings(calibrated=False)["per_channel"] is False
    assert ConversionConfig().neuron_tau == math.inf  # integrate-and-fire by default
    assert ConversionConfig(learn_tau=True).neuron_tau == ann2snn.DEFAULT_LEARNABLE_TAU


def test_per_channel_without_calibration_is_refused():
    with pytest.raises(ConversionError, match="need calibration data"):
        ann2snn.convert(small(), config=ConversionConfig(per_channel=True))


def test_config_must_be_a_conversion_config():
    with pytest.raises(ConversionError, match="config= takes an ann2snn.ConversionConfig, not dict"):
        ann2snn.convert(small(), config={"T": 4})
