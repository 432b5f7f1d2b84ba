"""Activity and cost profile of a converted network: firing rates, synaptic operations, energy.

``ann2snn.profile(snn, batches)`` runs ``snn`` (in its current mode) on the batches with forward
hooks and counts, per example over all T steps:

- neurons: spikes per neuron per step (the firing rate);
- conv/linear layers fed by spikes: synaptic operations (SynOps), each an accumulate (AC).
  SynOps = sum over steps and input elements of ``[x != 0] * fan-out``, where an element's
  fan-out is the number of (output, weight) products that read it (``out_channels * kernel /
  stride`` in the interior, fewer at padded borders). It is computed exactly as the layer
  applied, with all-ones weights and no bias, to the indicator of nonzero inputs, summed;
- conv/linear layers fed by analog values (the first layer under direct encoding): dense
  multiply-accumulates (MACs), counted as often as the layer runs: once per example in layer
  mode (the time-invariant input is processed once), T times in step mode;
- the CNN's MACs for one forward pass (per example) for comparison; ``T * cnn_macs`` is what
  re-running the CNN on every step would cost.

Energy uses the 45 nm figures of Horowitz (ISSCC 2014) for 32-bit floats: 0.9 pJ per
accumulate, 4.6 pJ per multiply-accumulate. Biases, pooling, neuron updates and memory traffic
are not counted.

A layer's input counts as spikes when it is computed from a neuron's output (pooling and
reshapes pass spikes on) or from a rate/latency-encoded input; otherwise it is analog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .analysis import module_of, split_static
from .calibrate import calibration_inputs
from .neurons import SpikingNeuron
from .temporal import NeuronPool
from .timeloop import SpikingNetwork

#: Energy per operation in picojoules (Horowitz 2014, 45 nm, 32-bit float).
AC_PJ = 0.9
MAC_PJ = 4.6

_SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class LayerProfile:
    """One neuron or conv/linear layer; counts are per example over all T steps."""

    name: str
    kind: str  # "neuron", or the layer class ("Conv1d", "Linear", ...)
    input: str = ""  # "spikes" or "analog" (conv/linear layers)
    neurons: int = 0
    spikes: float = 0.0
    firing_rate: Optional[float] = None  # spikes per neuron per step
    cnn_macs: int = 0  # dense MACs of this layer in one CNN forward pass
    acs: float = 0.0  # synaptic operations (accumulates) of the SNN
    macs: float = 0.0  # multiply-accumulates of the SNN (analog inputs)

    @property
    def energy_pj(self) -> float:
        return self.acs * AC_PJ + self.macs * MAC_PJ


@dataclass
class Profile:
    """Per-layer rows and totals of one profiling run; ``str()`` renders a table."""

    layers: list[LayerProfile] = field(default_factory=list)
    T: int = 0
    mode: str = ""
    examples: int = 0

    @property
    def neuron_layers(self) -> list[LayerProfile]:
        return [row for row in self.layers if row.kind == "neuron"]

    @property
    def spikes(self) -> float:
        return sum(row.spikes for row in self.neuron_layers)

    @property
    def firing_rate(self) -> float:
        """Spikes per neuron per step over the whole network."""
        neurons = sum(row.neurons for row in self.neuron_layers)
        return self.spikes / (neurons * self.T) if neurons else 0.0

    @property
    def acs(self) -> float:
        return sum(row.acs for row in self.layers)

    @property
    def macs(self) -> float:
        return sum(row.macs for row in self.layers)

    @property
    def cnn_macs(self) -> int:
        return sum(row.cnn_macs for row in self.layers)

    @property
    def energy_pj(self) -> float:
        """SNN energy per example over T steps."""
        return self.acs * AC_PJ + self.macs * MAC_PJ

    @property
    def cnn_energy_pj(self) -> float:
        """CNN energy per example (one forward pass)."""
        return self.cnn_macs * MAC_PJ

    def summary(self) -> str:
        ratio = self.energy_pj / self.cnn_energy_pj if self.cnn_energy_pj else math.nan
        return (
            f"{self.examples} examples, T={self.T}, {self.mode} mode: firing rate {self.firing_rate:.4f} spikes/neuron/step; "
            f"SNN {_si(self.acs)} ACs + {_si(self.macs)} MACs = {_si(self.energy_pj * 1e-12)}J per example; "
            f"CNN {_si(self.cnn_macs)} MACs = {_si(self.cnn_energy_pj * 1e-12)}J (SNN/CNN energy {ratio:.3g}; "
            f"T x CNN = {_si(self.T * self.cnn_energy_pj * 1e-12)}J)"
        )

    def rows(self) -> list[tuple[str, ...]]:
        out = []
        for r in self.layers:
            rate = f"{r.firing_rate:.4f}" if r.firing_rate is not None else ""
            ops = [_si(r.cnn_macs), _si(r.acs), _si(r.macs), _si(r.energy_pj * 1e-12) + "J"] if r.kind != "neuron" else ["", "", "", ""]
            out.append((r.name, r.kind, r.input, str(r.neurons or ""), rate, *ops))
        return out

    def __str__(self) -> str:
        header = ("layer", "kind", "input", "neurons", "rate", "CNN MACs", "SNN ACs", "SNN MACs", "SNN energy")
        rows = [header] + self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines + [self.summary()])


def _si(value: float) -> str:
    """A number with an SI prefix: 1.23k, 4.5M, 12.3p."""
    if value == 0:
        return "0"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}"
    return f"{value:.3g}"


def _dense_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """MACs of one example through ``layer``: each output element needs fan-in products."""
    per_example = output[0].numel()
    if isinstance(layer, nn.Linear):
        return per_example * layer.in_features
    return per_example * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def _synaptic_ops(layer: nn.Module, x: torch.Tensor) -> float:
    """Sum over input elements of ``[x != 0] * fan-out``: the layer with unit weights on the event mask."""
    events = (x != 0).to(torch.float32)
    ones = torch.ones_like(layer.weight, dtype=torch.float32)
    if isinstance(layer, nn.Linear):
        return float(events.sum()) * layer.out_features
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[events.dim() - 2]
    padding = layer.padding
    if layer.padding_mode != "zeros":  # reflected/replicated/circular copies are events too
        events = F.pad(events, layer._reversed_padding_repeated_twice, mode=layer.padding_mode)
        padding = 0
    return float(conv(events, ones, None, layer.stride, padding, layer.dilation, layer.groups).sum())


class _Counter:
    """Forward hooks that accumulate the counts of one layer."""

    def __init__(self, row: LayerProfile, spiking_input: bool = True) -> None:
        self.row, self.spiking_input = row, spiking_input
        if row.kind != "neuron":
            row.input = "spikes" if spiking_input else "analog"

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        row = self.row
        if row.kind == "neuron":
            if module.analog:  # sizing runs the graph analog (neurons as ReLUs): not spikes
                return
            row.neurons = output[0].numel()
            row.spikes += float((output != 0).sum())
            return
        row.cnn_macs = _dense_macs(module, output)
        if self.spiking_input:
            row.acs += _synaptic_ops(module, inputs[0])
        else:
            row.macs += row.cnn_macs * output.shape[0]


def profile(snn: SpikingNetwork, batches: Iterable | torch.Tensor, mode: Optional[str] = None) -> Profile:
    """Run ``snn`` on ``batches`` (tensors or (input, target) pairs, or one tensor) and count
    spikes, synaptic operations and MACs per layer; ``mode`` overrides ``snn.mode`` for the run."""
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    static, _ = split_static(snn.network)
    spiking_encoder = not snn.encoder.is_time_invariant
    result = Profile(T=snn.T, mode=mode or snn.mode)
    hooks, seen = [], set()
    for node in snn.network.graph.nodes:
        module, name = module_of(snn.network, node), str(node.target)
        if isinstance(module, NeuronPool):  # hooks on the neuron run it unfused: they see its own spikes
            module, name = module.neuron, f"{name}.neuron"
        if module is None or name in seen:
            continue
        seen.add(name)
        if isinstance(module, SpikingNeuron):
            counter = _Counter(LayerProfile(name, "neuron"))
        elif isinstance(module, _SYNAPTIC):
            counter = _Counter(LayerProfile(name, type(module).__name__), spiking_encoder or node not in static)
        else:
            continue
        result.layers.append(counter.row)
        hooks.append(module.register_forward_hook(counter))
    device = next(snn.network.parameters(), torch.empty(0)).device
    previous_mode, was_training = snn.mode, snn.training
    snn.mode = result.mode
    snn.eval()
    try:
        with torch.no_grad():
            for x in calibration_inputs(batches):
                result.examples += x.shape[0]
                snn(x.to(device))
    finally:
        for hook in hooks:
            hook.remove()
        snn.mode = previous_mode
        snn.train(was_training)
    for row in result.layers:
        row.spikes /= result.examples
        row.acs /= result.examples
        row.macs /= result.examples
        if row.kind == "neuron" and row.neurons:
            row.firing_rate = row.spikes / (row.neurons * result.T)
    return result
