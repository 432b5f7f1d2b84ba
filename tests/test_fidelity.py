"""An IF network with enough steps agrees with its CNN; gradients flow through all steps."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ann2snn


@pytest.fixture(scope="module")
def trained(tone_cnn) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    return tone_cnn


def test_if_network_agrees_with_its_cnn_and_agreement_rises_with_T(trained):
    model, calibration, x_test = trained
    # T-independent calibration (a fixed percentile, no correction), so one network serves every T
    snn = ann2snn.convert(model, learn_tau=False, tau=float("inf"), calibration=calibration.split(64), percentile=99.9, correction="none")
    with torch.no_grad():
        cnn_pred = model(x_test).argmax(1)
        agreement = {}
        for T in (1, 2, 4, 8, 32, 256):
            snn.T = T
            agreement[T] = (snn(x_test).argmax(1) == cnn_pred).float().mean().item()
    assert agreement[256] >= 0.95, agreement
    assert agreement[1] < agreement[8] <= agreement[256] + 0.01, agreement


def test_input_model_is_unchanged(trained):
    model, calibration, x_test = trained
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.eval()
        out_before = model(x_test)
        model.train()
    ann2snn.convert(model, learn_tau=True, calibration=calibration.split(64))
    assert model.training, "convert must not switch the user's model to eval mode"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x_test), out_before)


@pytest.mark.parametrize("mode", ["layer", "step"])
def test_gradients_reach_every_weight_and_tau(trained, mode):
    model, calibration, x_test = trained
    snn = ann2snn.convert(model, T=12, learn_tau=True, tau=20.0, calibration=calibration.split(64), mode=mode)
    loss = F.cross_entropy(snn(x_test[:32]), torch.zeros(32, dtype=torch.long))
    loss.backward()
    params = dict(snn.named_parameters())
    assert sum("leak_logit" in name for name in params) == 2
    for name, p in params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_balanced_threshold_moves_towards_the_maximum_as_T_grows():
    from ann2snn.calibrate import balanced_threshold

    activations = torch.distributions.Exponential(1.0).sample((20000,))
    thresholds = [float(balanced_threshold(activations, steps)) for steps in (2, 8, 64, 1024)]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1]
    assert thresholds[-1] <= float(activations.max())


def test_auto_percentile_picks_the_best_candidate_for_T(trained):
    model, calibration, x_test = trained
    with torch.no_grad():
        cnn_pred = model(x_test).argmax(1)

        def agreement(percentile):
            snn = ann2snn.convert(model, T=4, learn_tau=False, calibration=calibration.split(64), percentile=percentile)
            return (snn(x_test).argmax(1) == cnn_pred).float().mean().item(), snn

        auto, snn = agreement("auto")
        from ann2snn.calibrate import AUTO_CANDIDATES

        assert snn.report.settings["percentile_chosen"] in AUTO_CANDIDATES
        fixed = agreement(99.99)[0]
    assert auto >= fixed - 0.01, (auto, fixed)
