"""``ConversionConfig``: every conversion setting, its default, its check and its one-line help,
in one place. ``ann2snn.convert`` takes one (``config=``; keyword arguments override its fields),
the ``ann2snn convert`` command derives its flags from the fields, and applications (the study's
harness) hold one, so a default cannot drift between them.

    config = ConversionConfig(T=16, learn_tau=False)
    snn = ann2snn.convert(model, config=config, calibration=batches)
    snn64 = ann2snn.convert(model, config=config, T=64, calibration=batches)  # keywords override
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from .calibrate import check_percentile
from .correction import CORRECTIONS, check_correction
from .encoders import ENCODERS
from .errors import ConversionError
from .neurons import NEURON_MODELS
from .passes.pooling import MAXPOOL_MODES
from .timeloop import MODES, _check_steps, check_mode

#: Initial membrane time constant, in steps, of learnable-tau neurons when ``tau=None``.
DEFAULT_LEARNABLE_TAU = 100.0


def _check_tau(tau: object) -> Optional[float]:
    """A time constant in steps: a number above 1, or ``inf`` for integrate-and-fire (never NaN); None: the default."""
    if tau is None:
        return None
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or math.isnan(tau):
        raise ConversionError(f"tau={tau!r} must be a number of steps above 1, or float('inf') for integrate-and-fire")
    return float(tau)


def _check_finite(name: str) -> Callable[[object], float]:
    def check(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConversionError(f"{name}={value!r} must be a finite number")
        return float(value)

    return check


def _check_choice(name: str, choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise ConversionError(f"{name}={value!r} is not one of {choices}")
        return str(value)

    return check


def _check_neuron(name: object) -> str:
    """A registered neuron model's name (``ann2snn.NEURON_MODELS``; subclasses of ``SpikingNeuron``
    declared with ``model=`` register themselves)."""
    if name not in NEURON_MODELS:
        raise ConversionError(f"neuron={name!r} is not a neuron model; the models are {', '.join(map(repr, NEURON_MODELS))}")
    return str(name)


def _check_surrogate(method: object) -> str:
    """A surrogate method that Norse's ``threshold`` knows (asked of Norse itself, not a copied list)."""
    from norse.torch.functional.threshold import threshold

    if not isinstance(method, str):
        raise ConversionError(f"surrogate={method!r} must be the name of a Norse surrogate method, like 'super'")
    try:
        threshold(torch.zeros(1), method, 1.0)
    except ValueError as error:
        raise ConversionError(f"surrogate={method!r} is not a surrogate method of Norse's threshold ({error})") from None
    return method


def _setting(default: Any, help: str, *, check: Optional[Callable[[object], Any]] = None, choices: Optional[tuple] = None, metavar: Optional[str] = None) -> Any:
    """A field with its one-line ``help`` (the command line's), its ``check`` (value -> normalised
    value, raising ``ConversionError``) and, where the values are a fixed set, its ``choices``."""
    return field(default=default, metadata={"help": help, "check": check, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class ConversionConfig:
    """How ``ann2snn.convert`` converts a CNN: the settings, their defaults and their checks.

    Every field is checked (and numbers normalised) on construction, so a config that exists is
    valid; ``ConversionError`` names the setting otherwise. ``replace(**changes)`` makes a changed
    copy. The defaults give the best zero-shot accuracy known here with calibration data:
    integrate-and-fire neurons; ``learn_tau=True`` makes leaky neurons with a trainable time
    constant, meant for fine-tuning.

    Attributes:
        T: time steps per forward call (changeable later: ``snn.T = 64``).
        learn_tau: make each neuron's membrane time constant a trainable parameter.
        tau: initial time constant in steps; ``float('inf')`` is integrate-and-fire. ``None``:
            integrate-and-fire without ``learn_tau``, ``DEFAULT_LEARNABLE_TAU`` (100) with it.
        percentile: activation percentile that sets each threshold, in (0, 100]; "balanced": per
            layer (or channel) the percentile that minimises the rate-coding error at this ``T``
            (clipping against rounding); "auto": whichever of 99, 99.5, 99.9 and "balanced" makes
            the SNN at this ``T`` reproduce the CNN's outputs on the calibration data best.
            "auto", "balanced" and the correction are tuned for ``T``: after ``snn.T = other``
            the network warns until ``ann2snn.recalibrate`` is run.
        per_channel: one threshold per channel instead of per layer (``None``: per channel when
            calibration data is given).
        correction: output-space calibration after the thresholds (``ann2snn.correction``):
            "bias", "potential", "bias+potential", "potential+bias" (the two in that order), "none",
            or "auto": whichever of the others (or none) reproduces the CNN best on held-out
            calibration examples.
        tau_per_channel: one learnable time constant per channel (needs calibration and learn_tau).
        maxpool: "gated" (each window passes the increase of its largest running spike count) or "avg".
        encoder: "direct", "rate" or "latency" (see ``ann2snn.encoders.Encoder``).
        mode: "layer" (time folded into the batch) or "step" (whole net once per step).
        allow_analog: keep ops with no spiking equivalent as analog layers instead of refusing.
        surrogate: Norse surrogate-gradient method ("super", "tanh", "triangle", ...).
        alpha: the surrogate's parameter.
        neuron: the neuron model (``ann2snn.NEURON_MODELS``): "subtract" (reset by subtraction,
            the default), "reset-to-zero", or "norse" (Norse's own LIF box cell; finite ``tau``).
    """

    T: int = _setting(25, "time steps per forward call", check=_check_steps)
    learn_tau: bool = _setting(False, "make membrane time constants trainable: leaky neurons, for fine-tuning; off gives integrate-and-fire neurons, the best zero-shot")
    tau: Optional[float] = _setting(None, f"initial membrane time constant in steps ('inf' = integrate-and-fire; unset: IF, or {DEFAULT_LEARNABLE_TAU:g} with learn-tau)", check=_check_tau)
    percentile: float | str = _setting(
        "auto", "activation percentile that sets each threshold, in (0, 100] (a percent: 99.9, not 0.999), or 'balanced', "
        "or 'auto': the candidate that best reproduces the CNN at this T", check=check_percentile, metavar="auto|balanced|P",
    )  # fmt: skip
    per_channel: Optional[bool] = _setting(None, "one threshold per channel (unset: on with calibration data)")
    correction: str = _setting("bias", "output-space calibration at this T, after the thresholds", check=check_correction, choices=CORRECTIONS)
    tau_per_channel: bool = _setting(False, "one learnable time constant per channel; needs calibration data and learn-tau")
    maxpool: str = _setting("gated", "how max pooling of spikes is rewritten", check=_check_choice("maxpool", MAXPOOL_MODES), choices=MAXPOOL_MODES)
    encoder: str = _setting("direct", "how the input becomes a T-step input sequence", check=_check_choice("encoder", ENCODERS), choices=ENCODERS)
    mode: str = _setting("layer", "execution mode of the SNN", check=check_mode, choices=MODES)
    allow_analog: bool = _setting(False, "keep ops with no spiking equivalent as analog layers instead of refusing the model")
    surrogate: str = _setting("super", "the Norse surrogate-gradient method, like super or tanh", check=_check_surrogate)
    alpha: float = _setting(100.0, "parameter of the surrogate gradient", check=_check_finite("alpha"))
    neuron: str = _setting(
        "subtract", "neuron model: subtract (reset by subtraction, the most exact), reset-to-zero, or norse (Norse's LIF box cell; needs a finite tau)",
        check=_check_neuron, choices=tuple(NEURON_MODELS),
    )  # fmt: skip

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check = f.metadata.get("check")
            if check is not None:
                object.__setattr__(self, f.name, check(getattr(self, f.name)))
        if self.tau_per_channel and not self.learn_tau:
            raise ConversionError("tau_per_channel=True needs learn_tau=True")
        NEURON_MODELS[self.neuron].check_settings(self.neuron_tau, self.learn_tau)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The settings' names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> ConversionConfig:
        """A copy with ``changes`` applied (and checked)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ConversionError(f"{', '.join(unknown)}: not a conversion setting; the settings are {', '.join(self.names())}")
        return dataclasses.replace(self, **changes)

    @property
    def neuron_tau(self) -> float:
        """The initial time constant the neurons get: ``tau``, or its default for ``learn_tau``."""
        if self.tau is not None:
            return self.tau
        return DEFAULT_LEARNABLE_TAU if self.learn_tau else math.inf

    def per_channel_for(self, calibrated: bool) -> bool:
        """Whether thresholds are per channel, given whether there is calibration data; refuses
        per-channel settings without it."""
        if (self.per_channel or self.tau_per_channel) and not calibrated:
            raise ConversionError("per-channel thresholds or time constants need calibration data to find the channels")
        return calibrated if self.per_channel is None else bool(self.per_channel)

    def report_settings(self, calibrated: bool) -> dict[str, Any]:
        """The settings the conversion report records (``snn.report.settings``; read back by
        ``ann2snn.recalibrate`` and rendered by ``ConversionReport.settings_line``)."""
        settings = dict(
            T=self.T, neuron=self.neuron, learn_tau=self.learn_tau, tau=self.neuron_tau, maxpool=self.maxpool, encoder=self.encoder,
            percentile=self.percentile if calibrated else None, per_channel=self.per_channel_for(calibrated),
            correction=self.correction if calibrated else "none",
        )  # fmt: skip
        if not calibrated:  # what calibration is to use when recalibrate brings the data later
            settings.update(requested_percentile=self.percentile, requested_per_channel=self.per_channel_for(True), requested_correction=self.correction)
        return settings
