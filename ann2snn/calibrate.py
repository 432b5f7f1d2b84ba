"""Threshold balancing: run calibration data through the network in analog mode, observe each
neuron's activation, and set its threshold to a high percentile of the positive activations."""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from .errors import ConversionError
from .neurons import SpikingNeuron

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

    def threshold(self, percentile: float, per_channel: bool) -> Optional[torch.Tensor]:
        """The percentile of positive values (per channel, where asked), or None if none were seen."""
        values = torch.cat(self.samples, 1)
        positive = values[values > 0]
        if positive.numel() == 0:
            return None
        layer = _quantile(positive, percentile)
        if not per_channel:
            return layer
        out = torch.empty(values.shape[0])
        for c, row in enumerate(values):
            row = row[row > 0]
            out[c] = _quantile(row, percentile) if row.numel() else layer
        return out


def _quantile(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """``torch.quantile`` accepts at most 2**24 values; subsample evenly beyond that."""
    if values.numel() > 2**24:
        values = values[:: math.ceil(values.numel() / 2**24)]
    return torch.quantile(values, percentile / 100.0)


def calibration_inputs(calibration: Iterable) -> Iterable[torch.Tensor]:
    """Input tensors from an iterable of batches or (input, target) pairs, checked as they come."""
    count = 0
    for k, item in enumerate(calibration):
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise ConversionError(f"calibration batch {k} is a {type(x).__name__}, not a tensor (or an (input, target) pair)")
        if not torch.isfinite(x).all():
            raise ConversionError(f"calibration batch {k} contains NaN or infinite values; clean the data or drop that batch")
        count += 1
        yield x
    if count == 0:
        raise ConversionError("the calibration set is empty: pass an iterable of input batches (or (input, target) pairs), or calibration=None")


def calibrate(snn, calibration: Iterable, percentile: float, per_channel: bool, seed: int = 0) -> None:
    """Set every neuron's threshold and the encoder's scale from the calibration batches."""
    if not 0 < percentile <= 100:
        raise ConversionError(f"percentile={percentile} must be in (0, 100]")
    generator = torch.Generator().manual_seed(seed)
    neurons = {name: m for name, m in snn.network.named_modules() if isinstance(m, SpikingNeuron)}
    samplers = {name: ActivationSampler(generator) for name in neurons}
    input_sampler = ActivationSampler(generator)
    for name, neuron in neurons.items():
        neuron.observer = samplers[name]
    try:
        with torch.no_grad(), snn.analog_mode():
            for x in calibration_inputs(calibration):
                x = x.to(snn.encoder.scale.device)
                if snn.input_shape is None:
                    snn.input_shape = tuple(x.shape[1:])
                snn.check_input(x)
                input_sampler(x.abs().flatten(1))
                snn.run_network(x)
    finally:
        for neuron in neurons.values():
            neuron.observer = None
    scale = input_sampler.threshold(percentile, per_channel=False)
    if scale is not None:
        snn.encoder.scale.fill_(float(scale))
    for name, neuron in neurons.items():
        threshold = samplers[name].threshold(percentile, per_channel)
        entry = snn.report.entry_for_module(name)
        if threshold is None:
            snn.report.warn(f"neuron `{name}` was never active on the calibration data; its threshold stays {float(neuron.threshold):g}")
            continue
        neuron.set_threshold(threshold)
        neuron.channels = samplers[name].shape[0] if samplers[name].shape else 1
        if entry is not None:
            t = neuron.threshold
            entry.threshold = f"{float(t):.4g}" if t.dim() == 0 else f"{float(t.min()):.3g}..{float(t.max()):.3g} ({t.numel()} ch)"
