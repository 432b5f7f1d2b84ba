"""Threshold balancing: run calibration data through the network in analog mode, observe each
neuron's activation, and set its threshold to a high percentile of the positive activations."""

from __future__ import annotations

import math
import warnings
from typing import Iterable, Optional

import torch
from torch.utils._pytree import tree_leaves

from .correction import AUTO_CORRECTIONS, CORRECTION_EXAMPLES, check_correction, correct, first_examples
from .errors import ConversionError, ConversionWarning
from .neurons import SpikingNeuron
from .temporal import GatedMaxPool, NeuronPool

#: Values kept per layer and batch (a uniform random sample); enough for a 99.9th percentile.
SAMPLES_PER_BATCH = 200_000


class ActivationSampler:
    """Keeps a uniform random sample of an activation's values, channel by channel."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.samples: list[torch.Tensor] = []  # each [C, k]
        self.shape: Optional[torch.Size] = None

    def __call__(self, activation: torch.Tensor) -> None:
        self.shape = activation.shape[1:]
        channels = activation.shape[1] if activation.dim() > 1 else 1
        values = activation.detach().transpose(0, 1).reshape(channels, -1).float().cpu()
        keep = max(1, SAMPLES_PER_BATCH // channels)
        if values.shape[1] > keep:
            columns = torch.randint(values.shape[1], (keep,), generator=self.generator)
            values = values[:, columns]
        self.samples.append(values)

    def threshold(self, percentile: float | str, per_channel: bool, steps: int) -> Optional[torch.Tensor]:
        """The threshold from the positive values seen (per channel, where asked), or None if none
        were seen: their ``percentile``, or with ``"balanced"`` the error-minimising one for ``steps``."""
        if not self.samples:
            return None
        if len(self.samples) > 1:  # "auto" asks once per candidate: concatenate once
            self.samples = [torch.cat(self.samples, 1)]
        values = self.samples[0]
        positive = values[values > 0]
        if positive.numel() == 0:
            return None
        layer = _threshold(positive, percentile, steps)
        if not per_channel:
            return layer
        out = torch.empty(values.shape[0])
        for c, row in enumerate(values):
            row = row[row > 0]
            out[c] = _threshold(row, percentile, steps) if row.numel() else layer
        return out


#: Candidate percentiles that a "balanced" threshold chooses from.
BALANCED_PERCENTILES = (90.0, 95.0, 98.0, 99.0, 99.5, 99.7, 99.9, 99.95, 99.99, 100.0)


def _threshold(positive: torch.Tensor, percentile: float | str, steps: int) -> torch.Tensor:
    if percentile == "balanced":
        return balanced_threshold(positive, steps)
    return _quantile(positive, float(percentile))


def balanced_threshold(positive: torch.Tensor, steps: int) -> torch.Tensor:
    """The candidate threshold that minimises a rate-coded neuron's expected squared error on
    these activations after ``steps`` steps: clipping above the threshold, ``(a - theta)^2``, plus
    the rounding of a rate to ``theta / steps``, variance ``(theta / steps)^2 / 12`` below it.
    Low thresholds clip less rarely-large values but resolve the common ones finely: the best
    choice moves towards the maximum as ``steps`` grows."""
    if positive.numel() > 2**20:
        positive = positive[:: math.ceil(positive.numel() / 2**20)]
    candidates = torch.quantile(positive, torch.tensor(BALANCED_PERCENTILES) / 100.0)
    clipped = (positive[None, :] - candidates[:, None]).clamp(min=0).pow(2).mean(1)
    rounding = (candidates / steps).pow(2) / 12 * (positive[None, :] < candidates[:, None]).float().mean(1)
    return candidates[torch.argmin(clipped + rounding)]


def _quantile(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """``torch.quantile`` accepts at most 2**24 values; subsample evenly beyond that."""
    if values.numel() > 2**24:
        values = values[:: math.ceil(values.numel() / 2**24)]
    return torch.quantile(values, percentile / 100.0)


#: What ``calibration_inputs`` says when the calibration set holds no batch.
EMPTY_CALIBRATION = "the calibration set is empty: pass an iterable of input batches (or (input, target) pairs), or calibration=None"


def calibration_inputs(calibration: Iterable, what: str = "calibration", empty: str = EMPTY_CALIBRATION) -> Iterable[torch.Tensor]:
    """Input tensors from an iterable of batches or (input, target) pairs, checked as they come;
    ``what`` names the batches in errors ("calibration batch 3") and ``empty`` is the error when
    there is none."""
    if isinstance(calibration, torch.Tensor):
        raise ConversionError("calibration= takes an iterable of input batches, not one tensor (which would be read example by example): pass [x] or x.split(64)")
    count = 0
    for k, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise ConversionError(f"{what} batch {k} is a {type(x).__name__}, not a tensor (or an (input, target) pair)")
        if x.dim() == 0 or x.shape[0] == 0:
            raise ConversionError(f"{what} batch {k} holds no examples (shape {tuple(x.shape)}); drop it or pass a batch [N, ...] with N > 0")
        if not torch.isfinite(x).all():
            raise ConversionError(f"{what} batch {k} contains NaN or infinite values; clean the data or drop that batch")
        count += 1
        yield x
    if count == 0:
        raise ConversionError(empty)


#: Percentiles ``percentile="auto"`` tries (each per layer, or per channel) besides the
#: per-neuron error-balanced threshold ("balanced").
AUTO_CANDIDATES: tuple[float | str, ...] = (99.0, 99.5, 99.9, "balanced")
#: Calibration examples whose outputs ``percentile="auto"`` compares between CNN and SNN.
AUTO_EXAMPLES = 128
#: The correction is fitted on the calibration examples after the ranked ones when at least this
#: many are there, so a choice is not judged on the examples its correction was fitted to.
MIN_FIT_EXAMPLES = 64


def check_percentile(percentile: object) -> float | str:
    """A percentile in (0, 100], "balanced" or "auto"."""
    if percentile in ("auto", "balanced"):
        return str(percentile)
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not (0 < percentile <= 100):
        raise ConversionError(f"percentile={percentile!r} must be a number in (0, 100], 'balanced' or 'auto'")
    if percentile < 1:
        warnings.warn(
            f"percentile={percentile!r} looks like a fraction, but percentiles are in percent: {percentile * 100:g} means the "
            f"{percentile * 100:g}th percentile, and {percentile!r} sets thresholds near zero",
            ConversionWarning,
            stacklevel=3,
        )
    return float(percentile)


def calibrate(snn, calibration: Iterable, percentile: float | str, per_channel: bool, correction: str = "none", seed: int = 0) -> None:
    """Set every neuron's threshold and the encoder's scale from the calibration batches, then
    apply the output-space ``correction`` (see ``ann2snn.correction``) at the network's ``T``.

    ``percentile="auto"`` tries each of ``AUTO_CANDIDATES`` and keeps the one whose SNN, at the
    network's current ``T``, with or without one pass of the correction, reproduces the CNN's
    outputs on the first ``AUTO_EXAMPLES`` calibration examples best (``_output_error``: top class,
    then squared error). The correction is fitted on the ``CORRECTION_EXAMPLES`` after those (all
    held examples when fewer than ``MIN_FIT_EXAMPLES`` follow), so a choice is not judged on the
    examples its correction was fitted to, and kept only where it lowers that error
    (``report.settings["correction_applied"]``). ``correction="auto"`` fits each of
    ``AUTO_CORRECTIONS`` after the thresholds are chosen and keeps the best of them on those
    held-out examples, or none (``report.settings["correction_chosen"]``). Neurons converted from ``QCFS`` keep their learned threshold.
    Earlier corrections are cleared first, so calibrating again (``ann2snn.recalibrate``) starts afresh.
    """
    with warnings.catch_warnings():  # a fraction-like percentile was warned about where it was given (ConversionConfig)
        warnings.simplefilter("ignore", ConversionWarning)
        percentile = check_percentile(percentile)
    correction = check_correction(correction)
    snn.mark_calibrated(tuned=isinstance(percentile, str) or correction != "none")
    generator = torch.Generator().manual_seed(seed)
    _clear_corrections(snn)
    # QCFS neurons keep their learned thresholds
    spiking = any(isinstance(m, SpikingNeuron) for m in snn.network.modules())  # else nothing to correct
    neurons = {name: m for name, m in snn.network.named_modules() if isinstance(m, SpikingNeuron) and m.levels is None}
    samplers = {name: ActivationSampler(generator) for name in neurons}
    input_sampler = ActivationSampler(generator)
    held_inputs, held_outputs = [], []
    for name, neuron in neurons.items():
        neuron.observer = samplers[name]
    try:
        with torch.no_grad(), snn.analog_mode():
            for x in calibration_inputs(calibration):
                x = x.to(snn.encoder.scale.device)
                snn.check_input(x)
                input_sampler(x.abs().flatten(1))
                out = snn.run_network(x)
                if snn.input_shape is None:  # after the run: the data's shape, once the network took it
                    snn.input_shape = tuple(x.shape[1:])
                if sum(len(h) for h in held_inputs) < AUTO_EXAMPLES + CORRECTION_EXAMPLES:
                    held_inputs.append(x)
                    held_outputs.append(out)
    finally:
        for neuron in neurons.values():
            neuron.observer = None
    scale = input_sampler.threshold(99.9 if isinstance(percentile, str) else percentile, per_channel=False, steps=snn.T)
    if scale is not None:
        snn.encoder.scale.fill_(float(scale))
    ranking = "potential" if correction.startswith("potential") else "bias"  # cheaper: one pass of the first kind ranks
    ranked_inputs, ranked_outputs = first_examples(held_inputs, AUTO_EXAMPLES), first_examples(held_outputs, AUTO_EXAMPLES)
    fit_inputs = _after_ranked(held_inputs)
    candidates = AUTO_CANDIDATES if percentile == "auto" and neurons else (percentile,)
    errors: dict[tuple[float | str, bool], tuple[float, float]] = {}
    for candidate in candidates:
        _set_thresholds(snn, neurons, samplers, candidate, per_channel)
        _clear_corrections(snn)
        errors[candidate, False] = _output_error(snn, ranked_inputs, ranked_outputs)
        if correction != "none":
            correct(snn, fit_inputs, ranking, bias_passes=1)
            errors[candidate, True] = _output_error(snn, ranked_inputs, ranked_outputs)
    chosen, corrected = min(errors, key=errors.get)
    if percentile == "auto" and neurons:  # without neurons nothing was chosen
        snn.report.settings["percentile_chosen"] = chosen
    for name in _set_thresholds(snn, neurons, samplers, chosen, per_channel):
        snn.report.warn(f"neuron `{name}` was never active on the calibration data; its threshold stays {float(neurons[name].threshold):g}")
    _clear_corrections(snn)
    if correction == "auto":
        kept = _choose_correction(snn, fit_inputs, ranked_inputs, ranked_outputs, errors[chosen, False])
        snn.report.settings["correction_chosen"] = kept
        corrected = kept != "none"
    elif corrected:
        correct(snn, fit_inputs, correction)
        corrected = _output_error(snn, ranked_inputs, ranked_outputs) < errors[chosen, False]
        if not corrected:
            _clear_corrections(snn)
    if correction != "none" and spiking:
        snn.report.settings["correction_applied"] = corrected  # the report's settings line says when it was left off


def _choose_correction(snn, fit_inputs: list[torch.Tensor], ranked_inputs: list[torch.Tensor], ranked_outputs: list[torch.Tensor], plain: tuple[float, float]) -> str:
    """``correction="auto"``: fit each of ``AUTO_CORRECTIONS`` on ``fit_inputs`` and keep the one
    with the lowest output error on the ranked examples, if lower than ``plain`` (the error
    without correction); returns its name, or "none". A combination "a+b" is fitted as "b" on
    top of the "a" just fitted (the same passes), so the four cost two bias and two potential fits."""
    best, kept, state, previous = plain, "none", _corrections(snn), None
    for kind in AUTO_CORRECTIONS:
        first, _, then = kind.partition("+")
        if then and previous == first:
            correct(snn, fit_inputs, then)  # on top of the "first" just fitted
        else:
            _clear_corrections(snn)
            correct(snn, fit_inputs, kind)
        previous = kind
        error = _output_error(snn, ranked_inputs, ranked_outputs)
        if error < best:
            best, kept, state = error, kind, _corrections(snn)
    _restore_corrections(snn, state)
    return kept


def _corrections(snn) -> list[tuple[SpikingNeuron, torch.Tensor, torch.Tensor]]:
    """Every neuron's offset and initial potential, to restore later."""
    return [(n, n.bias.clone(), n.initial.clone()) for n in snn.network.modules() if isinstance(n, SpikingNeuron)]


def _restore_corrections(snn, state: list[tuple[SpikingNeuron, torch.Tensor, torch.Tensor]]) -> None:
    for neuron, bias, initial in state:
        neuron.bias, neuron.initial = bias, initial


def _after_ranked(held: list[torch.Tensor]) -> list[torch.Tensor]:
    """The held examples after the first ``AUTO_EXAMPLES`` (those the choices are ranked on), or
    all of them when fewer than ``MIN_FIT_EXAMPLES`` follow (a small calibration set)."""
    rest = [x for x in _drop_first(held, AUTO_EXAMPLES) if len(x)]
    return rest if sum(len(x) for x in rest) >= MIN_FIT_EXAMPLES else held


def _drop_first(batches: list[torch.Tensor], count: int) -> list[torch.Tensor]:
    out = []
    for x in batches:
        out.append(x[count:])
        count = max(0, count - len(x))
    return out


def _clear_corrections(snn) -> None:
    for neuron in snn.network.modules():
        if isinstance(neuron, SpikingNeuron):
            neuron.clear_correction()


def _gated_across_channels(snn, name: str, shape: Optional[torch.Size]) -> bool:
    """Whether the neuron ``name`` feeds a gated max pool that reads its output as one example
    without a batch dimension (``MaxPool1d`` after a ``Linear``: [N, F] pooled along F), whose
    windows then span channels: the pooled spikes carry one threshold, so the neuron takes one."""
    parent, _, leaf = name.rpartition(".")
    fused = snn.network.get_submodule(parent) if parent and leaf == "neuron" else None
    return isinstance(fused, NeuronPool) and isinstance(fused.pool, GatedMaxPool) and shape is not None and len(shape) == fused.pool.dims


def _set_thresholds(snn, neurons: dict[str, SpikingNeuron], samplers: dict[str, ActivationSampler], percentile: float | str, per_channel: bool) -> list[str]:
    """Set each neuron's threshold from its sampler; returns the neurons never seen active."""
    silent = []
    for name, neuron in neurons.items():
        shared = _gated_across_channels(snn, name, samplers[name].shape)
        threshold = samplers[name].threshold(percentile, per_channel and not shared, steps=snn.T)
        if threshold is None:
            silent.append(name)
            continue
        neuron.set_threshold(threshold)
        neuron.channels = samplers[name].shape[0] if samplers[name].shape else 1
        entry = snn.report.entry_for_module(name)
        if entry is not None:
            t = neuron.threshold
            entry.threshold = f"{float(t):.4g}" if t.dim() == 0 else f"{float(t.min()):.3g}..{float(t.max()):.3g} ({t.numel()} ch)"
    return silent


def _output_error(snn, inputs: list[torch.Tensor], targets: list) -> tuple[float, float]:
    """How far the SNN's outputs are from the CNN's on held inputs: for classifier outputs
    ([batch, classes]) first the fraction of examples whose top class differs, then (and for any
    other output only) the mean squared difference. At very low T a correction can match every
    layer's mean rate, and so lower the squared error, while scrambling which class wins; ranking
    by the top class first keeps such a choice out. A model with several outputs (a tuple, say
    ``(logits, features)``) is measured on all of them, its top class taken from the first."""
    disagreement = examples = 0
    squared = 0.0
    with torch.no_grad(), snn.without_head():
        for x, y in zip(inputs, targets):
            outs, ys = tree_leaves(snn(x)), tree_leaves(y)
            for out, target in zip(outs, ys):
                squared += float((out - target).pow(2).sum())
            out, y = outs[0], ys[0]
            if out.dim() == 2 and out.shape[1] > 1:
                disagreement += int((out.argmax(1) != y.argmax(1)).sum())
                examples += len(out)
    return disagreement / max(examples, 1), squared / sum(t.numel() for y in targets for t in tree_leaves(y))
