"""``convert()``: trace -> passes -> calibrate -> wrap in the time loop."""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable, Optional

import torch
from torch import nn

from . import passes
from .calibrate import calibrate
from .config import DEFAULT_LEARNABLE_TAU, ConversionConfig
from .encoders import Encoder
from .errors import ConversionError, ConversionWarning
from .neurons import NEURON_MODELS, SpikingNeuron
from .report import ConversionReport
from .timeloop import SpikingNetwork, require_network
from .trace import trace

__all__ = ["DEFAULT_LEARNABLE_TAU", "FROM_CONFIG", "ConversionConfig", "convert", "recalibrate"]


class _FromConfig:
    """The default of ``convert``'s settings: the value in ``config`` (``ConversionConfig``'s default)."""

    def __repr__(self) -> str:
        return "FROM_CONFIG"


#: Default of every setting keyword of ``convert``: take the value from ``config``.
FROM_CONFIG: Any = _FromConfig()


def convert(
    model: nn.Module,
    T: int = FROM_CONFIG,
    learn_tau: bool = FROM_CONFIG,
    *,
    config: Optional[ConversionConfig] = None,
    calibration: Optional[Iterable] = None,
    tau: Optional[float] = FROM_CONFIG,
    percentile: float | str = FROM_CONFIG,
    per_channel: Optional[bool] = FROM_CONFIG,
    correction: str = FROM_CONFIG,
    tau_per_channel: bool = FROM_CONFIG,
    maxpool: str = FROM_CONFIG,
    encoder: str = FROM_CONFIG,
    mode: str = FROM_CONFIG,
    allow_analog: bool = FROM_CONFIG,
    surrogate: str = FROM_CONFIG,
    alpha: float = FROM_CONFIG,
    neuron: str = FROM_CONFIG,
    leaf_modules: Iterable[type | str] = (),
    concrete_args: Optional[dict[str, Any]] = None,
    input_shape: Optional[tuple[int, ...]] = None,
) -> SpikingNetwork:
    """Convert a trained CNN into a spiking network that takes the same input and returns the same
    output shape, averaged over ``T`` time steps. ``model`` itself is never modified.

    The settings (``T`` to ``neuron``) are the fields of ``ann2snn.ConversionConfig``, which
    documents them and holds their defaults (``T=25``, ``learn_tau=False``, ``percentile="auto"``,
    ``correction="bias"``, ...). Each keyword given overrides ``config``'s value, so
    ``convert(model, T=16)``, ``convert(model, config=ConversionConfig(T=16))`` and
    ``convert(model, config=other, T=16)`` all convert at 16 steps.

    Args:
        T: time steps per forward call (changeable later: ``snn.T = 64``).
        learn_tau: make each neuron's membrane time constant a trainable parameter.
        config: the settings not given as keywords (default: ``ConversionConfig()``).
        calibration: iterable of input batches or (input, target) pairs for threshold balancing
            and output-space correction. The thresholds ("auto", "balanced") and the correction
            are tuned for this ``T``: after ``snn.T = other`` the network warns until
            ``ann2snn.recalibrate`` is run.
        tau: initial membrane time constant in steps (``ConversionConfig.tau``).
        percentile: threshold percentile, "balanced" or "auto" (``ConversionConfig.percentile``).
        per_channel: one threshold per channel (``ConversionConfig.per_channel``).
        correction: output-space calibration (``ConversionConfig.correction``).
        tau_per_channel: one learnable time constant per channel (``ConversionConfig.tau_per_channel``).
        maxpool: "gated" or "avg" (``ConversionConfig.maxpool``).
        encoder: "direct", "rate" or "latency" (``ConversionConfig.encoder``).
        mode: "layer" or "step" (``ConversionConfig.mode``).
        allow_analog: keep unsupported ops analog (``ConversionConfig.allow_analog``).
        surrogate: Norse surrogate-gradient method (``ConversionConfig.surrogate``).
        alpha: the surrogate's parameter (``ConversionConfig.alpha``).
        neuron: the neuron model, a name in ``ann2snn.NEURON_MODELS`` ("subtract", the default;
            "reset-to-zero"; "norse"; or one's own ``SpikingNeuron`` subclass declared with ``model=``).
        leaf_modules, concrete_args: passed to the fx tracer (for untraceable submodules).
        input_shape: per-example input shape, checked at run time (taken from calibration if
            omitted); ``None`` in a size leaves that size free.

    Raises:
        ConversionError: for anything the compiler refuses (a setting, the model, the data), with
            the node, module and source line.
    """
    arguments = locals()
    given = {name: arguments[name] for name in ConversionConfig.names() if arguments[name] is not FROM_CONFIG}
    if config is None:
        config = ConversionConfig()
    elif not isinstance(config, ConversionConfig):
        raise ConversionError(f"config= takes an ann2snn.ConversionConfig, not {type(config).__name__}")
    config = config.replace(**given) if given else config
    report = ConversionReport(settings=config.report_settings(calibrated=calibration is not None))
    per_channel = report.settings["per_channel"]
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert() takes an nn.Module, not {type(model).__name__}")
    if isinstance(model, SpikingNetwork):
        raise ConversionError(
            "the model is already a converted SpikingNetwork: use it as it is (snn.T = ... for another number of steps, "
            "ann2snn.recalibrate(snn, batches) to retune it), or convert the CNN it came from"
        )
    _check_finite_weights(model)

    def make_neuron(cap: Optional[float], source: str) -> SpikingNeuron:
        return NEURON_MODELS[config.neuron](tau=config.neuron_tau, learn_tau=config.learn_tau, cap=cap, method=config.surrogate, alpha=config.alpha, source=source)

    graph = trace(copy.deepcopy(model).eval(), leaf_modules, concrete_args)
    graph = passes.remove_dropout_and_identity(graph, report)
    graph = passes.fold_batchnorm(graph, report)
    graph = passes.relu_to_neurons(graph, report, make_neuron)
    graph = passes.rewrite_max_pooling(graph, report, config.maxpool)
    graph = passes.batch_size_from_reshaped(graph, report)
    graph = passes.mark_readout(graph, report)
    encoder = Encoder(config.encoder)
    graph = passes.check_supported(graph, report, config.allow_analog, encoded_input=not encoder.is_time_invariant)
    graph = passes.insert_time_broadcasts(graph, report)
    graph = passes.lower_tiled_avg_pools(graph, report)
    graph = passes.fuse_neuron_pools(graph, report)
    snn = SpikingNetwork(graph, config.T, config.mode, encoder, report, input_shape)
    device = next((p.device for p in graph.parameters()), None)
    if device is not None:
        snn.to(device)  # the encoder and neuron buffers join the model's weights (CUDA models stay on CUDA)
    snn._match_dtype()  # ... and take their floating-point type (a float64 CNN gives a float64 SNN)
    _check_input_shape(snn, input_shape)
    if not report.neurons:
        _warn(report, "the converted network has no spiking neuron (no ReLU was found): it computes the CNN's function analog, T times over")
    if calibration is None:
        _warn(report, "no calibration data: every threshold is 1.0, so zero-shot accuracy will be poor (pass calibration=...)")
    else:
        calibrate(snn, calibration, config.percentile, per_channel, config.correction)
    if config.tau_per_channel:
        for neuron in snn.network.modules():
            if isinstance(neuron, SpikingNeuron):
                neuron.make_tau_per_channel(neuron.channels or 1)
    return snn


def _check_input_shape(snn: SpikingNetwork, input_shape: Optional[tuple[int, ...]]) -> None:
    """Refuse an ``input_shape`` the CNN cannot take (checked on two zero examples, where every
    size is given), so that a network that would refuse every input is not returned."""
    if input_shape is None or any(size is None for size in input_shape) or snn.layer_mode_blocker:
        return
    parameter = next(snn.network.parameters(), None)
    example = torch.zeros(2, *input_shape, dtype=parameter.dtype if parameter is not None else None, device=parameter.device if parameter is not None else None)
    failure = snn._located_failure(example)
    if failure is not None:
        cause = str(failure.__cause__).strip().splitlines()[0] if failure.__cause__ is not None and str(failure.__cause__).strip() else ""
        raise ConversionError(
            f"input_shape={tuple(input_shape)} does not fit the model{failure}" + (f" ({cause})" if cause else "")
            + ": give the shape of one example, without the batch dimension (the shape of x[0] for a batch x the CNN takes)"
        )  # fmt: skip


def recalibrate(snn: SpikingNetwork, calibration: Iterable, T: Optional[int] = None) -> SpikingNetwork:
    """Tune ``snn``'s thresholds and output-space corrections again, for ``T`` (default: its
    current ``T``), with the settings it was converted with (``snn.report.settings``; for a network
    converted without calibration data, those that conversion would have used with it); in place.

    Use it after changing ``snn.T`` when the conversion used T-specific calibration
    (``percentile="auto"`` or ``"balanced"``, or a correction): until then the network warns.
    """
    require_network(snn, "recalibrate")
    if T is not None:
        snn.T = T
    settings = snn.report.settings
    if "requested_percentile" in settings:  # converted without data: calibrate as convert would have with it
        for name in ("percentile", "per_channel", "correction"):
            settings[name] = settings.pop(f"requested_{name}")
    percentile = settings.get("percentile") or "auto"
    correction = settings.get("correction", "none")
    per_channel = settings.get("per_channel", False)
    calibrate(snn, calibration, percentile, per_channel, correction)
    snn._stale_T_warned.clear()
    return snn


def _check_finite_weights(model: nn.Module) -> None:
    """Refuse weights without values (meta device) and NaN or infinite parameters and buffers (the
    SNN would hide them behind finite outputs)."""
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, value in named:
            if value.device.type == "meta":
                raise ConversionError(
                    f"{kind} `{name}` of the model is on the meta device and holds no values: materialise the model first (model.to_empty(device='cpu'), then load_state_dict with the trained weights)"
                )
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise ConversionError(f"{kind} `{name}` of the model holds NaN or infinite values; retrain or repair it before converting")


def _warn(report: ConversionReport, message: str) -> None:
    """A warning in the report and through Python's ``warnings`` (category ``ConversionWarning``)."""
    report.warn(message)
    warnings.warn(message, ConversionWarning, stacklevel=3)
