"""``convert()``: trace -> passes -> calibrate -> wrap in the time loop."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Iterable, Optional

import torch
from torch import nn

from . import passes
from .calibrate import calibrate, check_percentile
from .correction import check_correction
from .encoders import Encoder
from .errors import ConversionError, ConversionWarning
from .neurons import SpikingNeuron
from .report import ConversionReport
from .timeloop import SpikingNetwork, _check_mode, _check_steps
from .trace import trace

#: Initial membrane time constant, in steps, of learnable-tau neurons when ``tau=None``.
DEFAULT_LEARNABLE_TAU = 100.0


def convert(
    model: nn.Module,
    T: int = 25,
    learn_tau: bool = True,
    *,
    tau: Optional[float] = None,
    calibration: Optional[Iterable] = None,
    percentile: float | str = "auto",
    per_channel: Optional[bool] = None,
    correction: str = "bias",
    tau_per_channel: bool = False,
    maxpool: str = "gated",
    encoder: str = "direct",
    mode: str = "layer",
    allow_analog: bool = False,
    surrogate: str = "super",
    alpha: float = 100.0,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: Optional[dict[str, Any]] = None,
    input_shape: Optional[tuple[int, ...]] = None,
) -> SpikingNetwork:
    """Convert a trained CNN into a spiking network that takes the same input and returns the same
    output shape, averaged over ``T`` time steps. ``model`` itself is never modified.

    Args:
        T: time steps per forward call (changeable later: ``snn.T = 64``).
        learn_tau: make each neuron's membrane time constant a trainable parameter.
        tau: initial time constant in steps; ``float('inf')`` is integrate-and-fire. ``None``:
            integrate-and-fire without ``learn_tau``, ``DEFAULT_LEARNABLE_TAU`` (100) with it.
        calibration: iterable of input batches or (input, target) pairs for threshold balancing
            and output-space correction. The defaults below give the best zero-shot accuracy
            known here; the thresholds ("auto", "balanced") and the correction are tuned for this
            ``T``: after ``snn.T = other`` the network warns until ``ann2snn.recalibrate`` is run.
        percentile: activation percentile that sets each threshold; "balanced": per layer (or
            channel) the percentile that minimises the rate-coding error at this ``T`` (clipping
            against rounding); "auto" (default): whichever of 99, 99.5, 99.9 and "balanced" makes
            the SNN at this ``T`` reproduce the CNN's outputs on the calibration data best.
        per_channel: one threshold per channel instead of per layer (default: per channel when
            calibration data is given).
        correction: output-space calibration after the thresholds (``ann2snn.correction``):
            "bias" (default), "potential", "bias+potential" or "none".
        tau_per_channel: one learnable time constant per channel (needs calibration and learn_tau).
        maxpool: "gated" (pass the input with the highest running spike count) or "avg".
        encoder: "direct", "rate" or "latency" (see ``ann2snn.encoders.Encoder``).
        mode: "layer" (time folded into the batch) or "step" (whole net once per step).
        allow_analog: keep ops with no spiking equivalent as analog layers instead of refusing.
        surrogate, alpha: Norse surrogate-gradient method and its parameter.
        leaf_modules, concrete_args: passed to the fx tracer (for untraceable submodules).
        input_shape: per-example input shape, checked at run time (taken from calibration if omitted).

    Raises:
        ConversionError: for anything the compiler refuses, with the node, module and source line.
    """
    T, mode = _check_steps(T), _check_mode(mode)
    percentile, correction = check_percentile(percentile), check_correction(correction)
    tau = (DEFAULT_LEARNABLE_TAU if learn_tau else math.inf) if tau is None else _check_tau(tau)
    alpha = _check_finite("alpha", alpha)
    if tau_per_channel and not learn_tau:
        raise ConversionError("tau_per_channel=True needs learn_tau=True")
    if (per_channel or tau_per_channel) and calibration is None:
        raise ConversionError("per-channel thresholds or time constants need calibration data to find the channels")
    per_channel = calibration is not None if per_channel is None else bool(per_channel)
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert() takes an nn.Module, not {type(model).__name__}")
    _check_finite_weights(model)

    def make_neuron(cap: Optional[float], source: str) -> SpikingNeuron:
        return SpikingNeuron(tau=tau, learn_tau=learn_tau, cap=cap, method=surrogate, alpha=alpha, source=source)

    report = ConversionReport(settings=dict(
        T=T, learn_tau=learn_tau, tau=tau, maxpool=maxpool, encoder=encoder,
        percentile=percentile if calibration is not None else None, per_channel=per_channel,
        correction=correction if calibration is not None else "none",
    ))  # fmt: skip
    graph = trace(copy.deepcopy(model).eval(), leaf_modules, concrete_args)
    graph = passes.remove_dropout_and_identity(graph, report)
    graph = passes.fold_batchnorm(graph, report)
    graph = passes.relu_to_neurons(graph, report, make_neuron)
    graph = passes.rewrite_max_pooling(graph, report, maxpool)
    graph = passes.mark_readout(graph, report)
    graph = passes.check_supported(graph, report, allow_analog)
    graph = passes.insert_time_broadcasts(graph, report)
    snn = SpikingNetwork(graph, T, mode, Encoder(encoder), report, input_shape)
    device = next((p.device for p in graph.parameters()), None)
    if device is not None:
        snn.to(device)  # the encoder and neuron buffers join the model's weights (CUDA models stay on CUDA)
    if not report.neurons:
        _warn(report, "the converted network has no spiking neuron (no ReLU was found): it computes the CNN's function analog, T times over")
    if calibration is None:
        _warn(report, "no calibration data: every threshold is 1.0, so zero-shot accuracy will be poor (pass calibration=...)")
    else:
        calibrate(snn, calibration, percentile, per_channel, correction)
    if tau_per_channel:
        for neuron in snn.network.modules():
            if isinstance(neuron, SpikingNeuron):
                neuron.make_tau_per_channel(neuron.channels or 1)
    return snn


def recalibrate(snn: SpikingNetwork, calibration: Iterable, T: Optional[int] = None) -> SpikingNetwork:
    """Tune ``snn``'s thresholds and output-space corrections again, for ``T`` (default: its
    current ``T``), with the settings it was converted with (``snn.report.settings``); in place.

    Use it after changing ``snn.T`` when the conversion used T-specific calibration
    (``percentile="auto"`` or ``"balanced"``, or a correction): until then the network warns.
    """
    if not isinstance(snn, SpikingNetwork):
        raise ConversionError(f"recalibrate() takes a network made by ann2snn.convert, not {type(snn).__name__}")
    if T is not None:
        snn.T = T
    settings = snn.report.settings
    percentile = settings.get("percentile") or "auto"
    correction = settings.get("correction", "none")
    per_channel = settings.get("per_channel", False)
    calibrate(snn, calibration, percentile, per_channel, correction)
    snn._stale_T_warned.clear()
    return snn


def _check_finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConversionError(f"{name}={value!r} must be a finite number")
    return float(value)


def _check_tau(tau: object) -> float:
    """A time constant in steps: a number above 1, or ``inf`` for integrate-and-fire (never NaN)."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau):
        raise ConversionError(f"tau={tau!r} must be a number of steps above 1, or float('inf') for integrate-and-fire")
    return float(tau)


def _check_finite_weights(model: nn.Module) -> None:
    """Refuse weights without values (meta device) and NaN or infinite parameters and buffers (the
    SNN would hide them behind finite outputs)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, value in named:
            if value.device.type == "meta":
                raise ConversionError(
                    f"{kind} `{name}` of the model is on the meta device and holds no values: materialise the model "
                    "first (model.to_empty(device='cpu'), then load_state_dict with the trained weights)"
                )
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise ConversionError(f"{kind} `{name}` of the model holds NaN or infinite values; retrain or repair it before converting")


def _warn(report: ConversionReport, message: str) -> None:
    """A warning in the report and through Python's ``warnings`` (category ``ConversionWarning``)."""
    report.warn(message)
    warnings.warn(message, ConversionWarning, stacklevel=3)
