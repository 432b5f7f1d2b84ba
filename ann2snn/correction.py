"""Output-space calibration: correct each spiking layer, in order from the input, so that its mean
firing rate per channel matches the CNN's activation, given the SNN's own (already corrected)
upstream spikes.

Li, Deng, Dong, Gong, Gu: "A Free Lunch From ANN: Towards Efficient, Accurate Spiking Neural
Networks Calibration", ICML 2021 (public code: yhhhli/SNN_Calibration), bias and initial-potential
calibration. For neuron ``n`` with threshold ``theta``, let ``a`` be the CNN's activation there
(clipped at ``theta``, the most a rate can carry) and ``r`` the SNN's rate over ``T`` steps; per
channel, ``e = mean(a) - mean(r)`` over examples and positions. Then

- ``"bias"``: the neuron's input offset grows by ``e`` (one more ``e`` of charge every step);
- ``"potential"``: its initial membrane grows by ``e * T / theta`` (the same total charge, given once);
- ``"bias+potential"``: bias passes, then a potential pass on top of them;
- ``"potential+bias"``: a potential pass, then bias passes on top of it;
- ``"auto"``: ``ann2snn.calibrate`` fits each of ``AUTO_CORRECTIONS`` in turn and keeps the one
  whose SNN reproduces the CNN's outputs best on held-out calibration examples (or none).

Why a choice: the two corrections move the same total charge, so they are equivalent for a
neuron whose input is constant over time, but not for one fed spike trains. There the
typical error is the "offset spike" (Hao et al., ICLR 2023): spikes that arrive early charge
a neuron past its threshold before later negative input cancels them, one spike too many
(the FSDD VGG trained with QCFS at ``L = 4``, converted at ``T = 4``: 6 to 19 % of the neurons
of each layer past the first). A lower initial membrane (``"potential"``) holds back exactly
those early spikes; a negative bias spreads the same charge over all steps and instead moves
the rounding of every neuron of the channel, which on that net raised the output error. The
potential first, then the bias for the mean error left, did best there (seed 1: 86.7 % top-1
without correction, 82.7 with bias passes, 95.3 with a potential pass, 98.7 with both in that
order). Which form helps depends on the net and ``T``, so ``"auto"`` measures it.

Bias correction runs ``BIAS_PASSES`` times: a shifted bias moves a rate only where the neuron is
near firing, so one pass leaves part of the mean error; on the FSDD M5 a second pass lowered the
output error at every threshold tried (``tools/lowt.py`` measures the result).

The corrections are tuned for the ``T`` they were computed at (``SpikingNetwork.calibrated_T``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch.utils._pytree import tree_leaves, tree_map

from .analysis import graph_neurons
from .errors import ConversionError
from .neurons import SpikingNeuron

CORRECTIONS = ("none", "bias", "potential", "bias+potential", "potential+bias", "auto")
#: The corrections ``"auto"`` chooses from (``ann2snn.calibrate``), besides none; each "a+b" is
#: fitted on top of the "a" before it.
AUTO_CORRECTIONS = ("bias", "bias+potential", "potential", "potential+bias")
#: Calibration examples the correction runs through the SNN (the first ones given).
CORRECTION_EXAMPLES = 256
#: Layer-by-layer bias passes (each from the input to the readout).
BIAS_PASSES = 2


def check_correction(correction: object) -> str:
    if correction not in CORRECTIONS:
        raise ConversionError(f"correction={correction!r} is not one of {CORRECTIONS}")
    return str(correction)


def _channel_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the channels (dimension 1; a scalar for 1-D activations)."""
    if x.dim() < 2:
        return x.float().mean()
    return x.float().mean(dim=[d for d in range(x.dim()) if d != 1])


def first_examples(batches: list, count: int) -> list:
    """The first ``count`` examples of a list of batches, still as batches (a batch may be a tuple
    or dict of tensors, as a model with several outputs returns, each cut alike)."""
    kept, out = 0, []
    for x in batches:
        if kept >= count:
            break
        out.append(tree_map(lambda t: t[: count - kept], x))
        kept += len(tree_leaves(out[-1])[0])
    return out


def rate_errors(snn, inputs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per neuron, per channel: the CNN's mean (clipped) activation minus the SNN's mean rate at
    the network's current ``T``, on the first ``CORRECTION_EXAMPLES`` of ``inputs``."""
    neurons = graph_neurons(snn.network)
    totals: dict[str, torch.Tensor] = {}
    seen = 0
    with _correction_chunks(snn, inputs) as chunks:
        for chunk in chunks:
            targets, rates = _channel_means(snn, neurons, chunk, analog=True), _channel_means(snn, neurons, chunk, analog=False)
            for name, _ in neurons:
                totals[name] = totals.get(name, 0) + (targets[name] - rates[name]) * len(chunk)
            seen += len(chunk)
    return {name: total / seen for name, total in totals.items()}


def correct(snn, inputs: list[torch.Tensor], correction: str, bias_passes: int = BIAS_PASSES) -> None:
    """Apply ``correction`` to every neuron of ``snn`` at its current ``T`` (on top of any
    correction already there), on the first ``CORRECTION_EXAMPLES`` of ``inputs``.

    One pass is one run of the SNN over those examples, in chunks (online fixed-point iteration):
    each neuron's output on a chunk, computed with its current offset, gives that chunk's error
    per channel against the CNN, hence a solution "offset + error"; the neuron runs the next chunk
    with the average of the solutions so far. Every neuron is thus corrected given the corrected
    layers before it, in a single pass, without rerunning the network per layer."""
    correction = check_correction(correction)
    if correction == "auto":
        raise ConversionError('correction="auto" chooses on held-out examples: use convert() or recalibrate(), or correct() with one of AUTO_CORRECTIONS')
    bias = ("bias",) * bias_passes
    passes = {"none": (), "bias": bias, "potential": ("potential",), "bias+potential": bias + ("potential",), "potential+bias": ("potential",) + bias}[correction]
    neurons = graph_neurons(snn.network)
    if not neurons or not passes:
        return
    with _correction_chunks(snn, inputs) as chunks:
        for kind in passes:
            _correction_pass(snn, neurons, chunks, kind)


#: Examples per chunk of a correction pass, at least (the neuron offsets are updated per chunk).
MIN_CHUNK = 16


@contextmanager
def _correction_chunks(snn, inputs: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """The first ``CORRECTION_EXAMPLES`` of ``inputs`` in chunks, with gradients off; the network
    is restored afterwards. (The hooks that read the neurons' outputs make a neuron fused with
    its gated pool run unfused: they see its own spikes.)"""
    chunks = [part for x in first_examples(inputs, CORRECTION_EXAMPLES) for part in x.split(max(MIN_CHUNK, snn.chunk_size(x)))]
    try:
        with torch.no_grad():
            yield chunks
    finally:
        snn.reset()
        snn._configure(layer_mode=False)


def _correction_pass(snn, neurons: list[tuple[str, SpikingNeuron]], chunks: list[torch.Tensor], kind: str) -> None:
    attribute = "bias" if kind == "bias" else "initial"
    totals: dict[str, torch.Tensor] = {}
    seen = 0
    for chunk in chunks:
        targets, rates = _channel_means(snn, neurons, chunk, analog=True), _channel_means(snn, neurons, chunk, analog=False)
        seen += len(chunk)
        for name, neuron in neurons:
            error = targets[name] - rates[name]
            solution = getattr(neuron, attribute) + (error if kind == "bias" else error * snn.T / neuron.threshold)
            totals[name] = totals.get(name, 0) + solution * len(chunk)
            neuron.set_correction(**{attribute: totals[name] / seen})


def _channel_means(snn, neurons: list[tuple[str, SpikingNeuron]], x: torch.Tensor, analog: bool) -> dict[str, torch.Tensor]:
    """Per neuron, its mean output per channel on ``x``: the CNN's activation clipped at the
    threshold (``analog``), or the SNN's firing rate times the threshold at the current ``T``
    (layer mode, or step by step where layer mode cannot run the network; a neuron's output
    does not depend on its own later corrections, so the corrections of a pass are applied after
    each chunk has run)."""
    means: dict[str, list[torch.Tensor]] = {}

    def record(name: str, module: SpikingNeuron, output: torch.Tensor) -> None:
        means.setdefault(name, []).append(_channel_mean(output.clamp(max=module._broadcast(module.threshold, output.dim())) if analog else output))

    handles = [n.register_forward_hook(lambda module, args, output, name=name: record(name, module, output)) for name, n in neurons]
    try:
        if analog:
            with snn.analog_mode():
                snn.run_network(x)
        elif snn.layer_mode_blocker:
            snn.reset()
            snn._configure(layer_mode=False)
            for t in range(snn.T):
                snn.run_network(snn.encoder.step(x, t, snn.T))
        else:
            snn.reset()
            snn._configure(layer_mode=True)
            snn.run_network(x if snn.encoder.is_time_invariant else snn.encoder.sequence(x, snn.T))
    finally:
        for handle in handles:
            handle.remove()
    return {name: sum(values) / len(values) for name, values in means.items()}
