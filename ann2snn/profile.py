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
- ops kept analog (``allow_analog=True``: GroupNorm, GELU, a product of two activations...) and
  their islands' bookkeeping (``RateMean``, ``RateIncrement``): multiply-accumulate equivalents
  (MACs), ``ANALOG_MACS`` per element (normalisation 4, softmax 3, running mean 1, increment 2,
  any other op 1: an elementwise function, a product, a comparison), an op's elements being the
  most it reads from one input or writes. Counted as often as the op runs: T times per example
  in an island (it sees the rates of step-varying inputs), on the input path under direct
  encoding once per example in layer mode and T times in step mode. Divide by T for per step.
  A conv/linear layer that reads an analog op's output (or another layer's) reads analog
  values: dense MACs at every step;
- the CNN's MACs for one forward pass (per example) for comparison, its analog ops' included;
  ``T * cnn_macs`` is what re-running the CNN on every step would cost.

Energy uses the 45 nm figures of Horowitz (ISSCC 2014) for 32-bit floats: 0.9 pJ per
accumulate, 4.6 pJ per multiply-accumulate. Biases, pooling, neuron updates and memory traffic
are not counted.

A layer's input counts as spikes when it is computed from a neuron's output or from a
rate/latency-encoded input through ops that move, pool or sum values (pooling, reshapes,
residual adds pass spikes on); the output of a conv/linear layer, of an analog op or of an
island is analog.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

from .analysis import constant_like, is_spiking, module_of, propagate_shapes, split_static, tensor_metas
from .calibrate import calibration_inputs
from .neurons import SpikingNeuron
from .passes.supported import is_supported, kind_of
from .temporal import NeuronPool
from .temporal_ops import RateIncrement, RateMean
from .timeloop import SpikingNetwork, check_mode, require_network

#: Energy per operation in picojoules (Horowitz 2014, 45 nm, 32-bit float).
AC_PJ = 0.9
MAC_PJ = 4.6

_SYNAPTIC = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: Multiply-accumulate equivalents per element of an analog op, by a word in its kind; else 1.
ANALOG_MACS = {"norm": 4, "softmax": 3, "RateMean": 1, "RateIncrement": 2}


@dataclass
class LayerProfile:
    """One neuron or conv/linear layer; counts are per example over all T steps."""

    name: str
    kind: str  # "neuron", the layer class ("Conv1d", "Linear", ...) or the analog op ("GroupNorm", "F.gelu")
    input: str = ""  # "spikes" or "analog" (conv/linear layers), "rates" or "analog" (analog ops)
    neurons: int = 0
    spikes: float = 0.0
    firing_rate: Optional[float] = None  # spikes per neuron per step
    cnn_macs: int = 0  # dense MACs of this layer in one CNN forward pass
    acs: float = 0.0  # synaptic operations (accumulates) of the SNN
    macs: float = 0.0  # multiply-accumulates of the SNN (analog inputs, analog ops)
    analog: bool = False  # an op kept analog (allow_analog=True) or its island's bookkeeping

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
    def analog_layers(self) -> list[LayerProfile]:
        """The ops kept analog and their islands' running means and increments."""
        return [row for row in self.layers if row.analog]

    @property
    def analog_macs(self) -> float:
        """The MACs of the analog ops (included in ``macs``)."""
        return sum(row.macs for row in self.analog_layers)

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
        in_analog = f" ({_si(self.analog_macs)} in analog ops)" if self.analog_layers else ""
        return (
            f"{self.examples} examples, T={self.T}, {self.mode} mode: firing rate {self.firing_rate:.4f} spikes/neuron/step; "
            f"SNN {_si(self.acs)} ACs + {_si(self.macs)} MACs{in_analog} = {_si(self.energy_pj * 1e-12)}J per example; "
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
    """Forward hooks that accumulate the counts of one layer; they ignore calls while ``paused``."""

    def __init__(self, row: LayerProfile, spiking_input: bool = True) -> None:
        self.row, self.spiking_input, self.paused = row, spiking_input, False
        if row.kind != "neuron":
            row.input = "spikes" if spiking_input else "analog"

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        row = self.row
        if self.paused:
            return
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


def _analog_ops(gm: fx.GraphModule) -> list[fx.Node]:
    """The ops kept analog (no spiking equivalent, ``allow_analog=True``) and the running means and
    increments of their islands, in graph order."""
    memo: dict = {}
    out = []
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or is_spiking(gm, node):
            continue
        if isinstance(module_of(gm, node), (RateMean, RateIncrement)) or not is_supported(gm, node, memo):
            out.append(node)
    return out


def _spike_carriers(gm: fx.GraphModule, spiking_input: bool, analog: set[fx.Node]) -> set[fx.Node]:
    """The nodes whose values are spikes or move, pool or sum spikes: neuron outputs, the input
    under a spiking encoder, and what reads only those (constants aside) and is neither a
    conv/linear layer nor an analog op (their outputs are analog)."""
    memo: dict = {}
    carriers = set()
    for node in gm.graph.nodes:
        if is_spiking(gm, node) or (node.op == "placeholder" and spiking_input):
            carriers.add(node)
        elif node.op != "placeholder" and node not in analog and not isinstance(module_of(gm, node), _SYNAPTIC):
            inputs = [i for i in node.all_input_nodes if not constant_like(i, memo)]
            if inputs and all(i in carriers for i in inputs):
                carriers.add(node)
    return carriers


def _elements(meta: object) -> int:
    """Elements per example of a node's (first) tensor output, from its shape on a batch of one."""
    first = next(tensor_metas(meta), None)
    return math.prod(first.shape) if isinstance(first, TensorMetadata) else 0


def _macs_per_element(kind: str) -> int:
    return next((macs for word, macs in ANALOG_MACS.items() if word.lower() in kind.lower()), 1)


class _AnalogCounter:
    """The MACs of the analog ops, from the per-example shapes of one analog pass per batch:
    ``ANALOG_MACS`` per element, times T where the op runs at every step."""

    def __init__(self, snn: SpikingNetwork, nodes: list[fx.Node], every_step: set[fx.Node], carriers: set[fx.Node]) -> None:
        self.snn, self.nodes, self.every_step = snn, nodes, every_step
        self.rows = {}
        for node in nodes:
            kind = kind_of(snn.network, node)
            name = str(node.target) if node.op == "call_module" else node.name
            self.rows[node] = LayerProfile(name, kind, self._reads(node, carriers), analog=True)

    def _reads(self, node: fx.Node, carriers: set[fx.Node]) -> str:
        """What an analog op reads: "rates" in an island, else the values of its input."""
        if node in self.every_step and not isinstance(module_of(self.snn.network, node), RateMean):
            return "rates"
        return "spikes" if node.all_input_nodes and all(i in carriers for i in node.all_input_nodes) else "analog"

    def count(self, x: torch.Tensor, counters: list[_Counter]) -> None:
        """Add the analog ops' MACs for the batch ``x`` (the hooks in ``counters`` are paused meanwhile)."""
        for counter in counters:
            counter.paused = True
        try:
            with torch.no_grad(), self.snn.analog_mode():
                metas = propagate_shapes(self.snn.network, x[:1])
        finally:
            for counter in counters:
                counter.paused = False
        for node, row in self.rows.items():
            read = [_elements(metas.get(i.name)) for i in node.all_input_nodes]
            per_example = _macs_per_element(row.kind) * max([_elements(metas.get(node.name)), *read])
            row.cnn_macs = 0 if isinstance(module_of(self.snn.network, node), (RateMean, RateIncrement)) else per_example
            runs = self.snn.T if node in self.every_step or self.snn.mode == "step" else 1
            row.macs += per_example * runs * x.shape[0]


#: What ``profile`` says when it is given no batch.
EMPTY_PROFILE = "profile() got no data: pass one input tensor [N, ...] or an iterable of input batches (or (input, target) pairs)"


def profile(snn: SpikingNetwork, batches: Iterable | torch.Tensor, mode: Optional[str] = None) -> Profile:
    """Run ``snn`` on ``batches`` (tensors or (input, target) pairs, or one tensor) and count
    spikes, synaptic operations and MACs per layer, the analog ops' included; ``mode`` overrides
    ``snn.mode`` for the run. ``snn`` is left as it was (no hooks, its mode and training flag)."""
    require_network(snn, "profile")
    mode = snn.mode if mode is None else check_mode(mode)
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    static, dynamic = split_static(snn.network)
    spiking_encoder = not snn.encoder.is_time_invariant
    analog_nodes = _analog_ops(snn.network)
    carriers = _spike_carriers(snn.network, spiking_encoder, set(analog_nodes))
    result = Profile(T=snn.T, mode=mode)
    analog = _AnalogCounter(snn, analog_nodes, dynamic | static if spiking_encoder else dynamic, carriers)
    hooks: list = []
    previous_mode, was_training = snn.mode, snn.training
    try:
        counters = _install_counters(snn, result, analog, carriers, hooks)
        snn.mode = result.mode
        snn.eval()
        _run(snn, batches, result, analog, counters)
    finally:
        for hook in hooks:
            hook.remove()
        snn.train(was_training)
        if snn.mode != previous_mode and not (previous_mode == "layer" and snn.layer_mode_blocker):  # the run may find layer mode impossible
            snn.mode = previous_mode
    for row in result.layers:
        row.spikes /= result.examples
        row.acs /= result.examples
        row.macs /= result.examples
        if row.kind == "neuron" and row.neurons:
            row.firing_rate = row.spikes / (row.neurons * result.T)
    return result


def _install_counters(snn: SpikingNetwork, result: Profile, analog: _AnalogCounter, carriers: set[fx.Node], hooks: list) -> list[_Counter]:
    """Add a row per neuron, conv/linear layer and analog op to ``result``, in graph order, and a
    counting forward hook per neuron and layer (its handle appended to ``hooks`` at once, so the
    caller removes every hook installed, whatever happens)."""
    counters, seen = [], set()
    for node in snn.network.graph.nodes:
        if node in analog.rows:
            result.layers.append(analog.rows[node])
            continue
        module, name = module_of(snn.network, node), str(node.target)
        if isinstance(module, NeuronPool):  # hooks on the neuron run it unfused: they see its own spikes
            module, name = module.neuron, f"{name}.neuron"
        if module is None or name in seen:
            continue
        seen.add(name)
        if isinstance(module, SpikingNeuron):
            counter = _Counter(LayerProfile(name, "neuron"))
        elif isinstance(module, _SYNAPTIC):
            counter = _Counter(LayerProfile(name, type(module).__name__), isinstance(node.args[0], fx.Node) and node.args[0] in carriers)
        else:
            continue
        result.layers.append(counter.row)
        counters.append(counter)
        hooks.append(module.register_forward_hook(counter))
    return counters


def _run(snn: SpikingNetwork, batches: Iterable, result: Profile, analog: _AnalogCounter, counters: list[_Counter]) -> None:
    """Run ``snn`` on every batch, counting the examples (and the analog ops' MACs)."""
    device = next(snn.network.parameters(), torch.empty(0)).device
    with torch.no_grad():
        for x in calibration_inputs(batches, "profile", EMPTY_PROFILE):
            x = x.to(device)
            result.examples += x.shape[0]
            if analog.rows:
                analog.count(x, counters)
            snn(x)
