"""The time loop: a converted graph wrapped so that it takes the CNN's input and returns the CNN's
output shape, running T steps (encoder -> network -> readout averaged over T)."""

from __future__ import annotations

import math
import warnings
import weakref
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils._pytree import tree_leaves, tree_map

from .analysis import propagate_shapes, split_static, tensor_metas
from .encoders import Encoder
from .errors import ConversionError, InputShapeError, StaleCalibrationWarning
from .neurons import SpikingNeuron
from .passes.batch_size import LAYER_MODE_BLOCKER, batch_arithmetic_blocker, batch_probe_blocker
from .report import ConversionReport
from .temporal import NeuronPool, TemporalModule, count_dtype

MODES = ("layer", "step")
#: How the report's warning about running at a T other than the calibrated one starts.
STALE_CALIBRATION = "the thresholds and corrections were tuned for T="

#: Automatic chunking (CPU, layer mode) keeps the largest activation of one chunk (examples x
#: steps) within about this many bytes: roughly a server CPU's last-level cache. Neuron updates
#: over larger tensors are memory-bound; tools/bench.py measures the effect.
CHUNK_BYTES = 32 * 2**20

#: Automatic time chunks hold at least this many steps where the budget allows (fewer examples
#: per batch slice instead): a neuron's state then stays in cache over several steps. Measured
#: here (one thread): ResNet batch 64, T=16, 0.84 x (T x CNN) with 32 examples x 1 step per
#: chunk, 0.63 to 0.68 with 4 x 8 or 2 x 16; VGG 1.01 with 64 x 2, 0.92 with 16 x 8; M5 alike.
MIN_TIME_CHUNK = 8


def _check_steps(T: object) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ConversionError(f"T={T!r}: the number of time steps must be a positive integer")
    return T


def _check_chunk(chunk: object, name: str = "batch_chunk", unit: str = "examples") -> Optional[int]:
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0):
        raise ConversionError(f"{name}={chunk!r}: give a positive number of {unit}, or None to choose it automatically")
    return chunk


def check_mode(mode: object) -> str:
    """``mode`` as a str, or ConversionError unless it is one of ``MODES``."""
    if mode not in MODES:
        raise ConversionError(f"mode={mode!r} is not one of {MODES}")
    return str(mode)


def require_network(snn: object, caller: str) -> None:
    """Refuse anything but a ``SpikingNetwork`` (a plain CNN, say) given to ``caller``."""
    if not isinstance(snn, SpikingNetwork):
        raise ConversionError(f"{caller}() takes a network made by ann2snn.convert, not {type(snn).__name__}; convert the model first: snn = ann2snn.convert(model, ...)")


#: Static/dynamic halves of networks (see ``_split_network``), cached per network and its code;
#: kept outside the network so that saving and describing it never see them.
_SPLITS: "weakref.WeakKeyDictionary[fx.GraphModule, tuple[str, fx.GraphModule, fx.GraphModule]]" = weakref.WeakKeyDictionary()


def _split_network(network: fx.GraphModule) -> tuple[fx.GraphModule, fx.GraphModule]:
    """The network as two graph modules sharing its submodules: ``static(x)`` computes, once per
    sequence, the time-invariant values (under direct encoding) that the rest reads, as a tuple;
    ``dynamic(*those)`` computes the output from them, once per time chunk."""
    cached = _SPLITS.get(network)
    if cached is not None and cached[0] == network.code:
        return cached[1], cached[2]
    static, _ = split_static(network)
    # a TimeBroadcast repeats a static value over each chunk's steps: it belongs to the chunk
    static = {n for n in static if not (n.op == "call_module" and isinstance(network.get_submodule(str(n.target)), TemporalModule))}
    output = next(n for n in network.graph.nodes if n.op == "output")

    def reach(starts: list[fx.Node], stop: set[fx.Node]) -> set[fx.Node]:
        seen: set[fx.Node] = set()
        todo = list(starts)
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            todo.extend(i for i in node.all_input_nodes if i not in stop)
        return seen

    dynamic_nodes = reach([output], static)
    boundary = [n for n in network.graph.nodes if n in static and any(u in dynamic_nodes for u in n.users)]
    static_nodes = reach(boundary, set())

    static_graph, env = fx.Graph(), {}
    for node in network.graph.nodes:
        if node in static_nodes:
            env[node] = static_graph.node_copy(node, lambda n: env[n])
    static_graph.output(tuple(env[n] for n in boundary))

    dynamic_graph, env = fx.Graph(), {}
    for node in boundary:
        env[node] = dynamic_graph.placeholder(node.name)
    for node in network.graph.nodes:
        if node in dynamic_nodes and node not in env:
            env[node] = dynamic_graph.node_copy(node, lambda n: env[n])
    halves = fx.GraphModule(network, static_graph, "StaticPart"), fx.GraphModule(network, dynamic_graph, "DynamicPart")
    _SPLITS[network] = (network.code, *halves)
    return halves


def _shape_accepts(expected: tuple, actual: tuple) -> bool:
    """Whether a per-example shape matches ``expected``, where a ``None`` size accepts any size."""
    return len(expected) == len(actual) and all(e is None or e == a for e, a in zip(expected, actual))


def _shape_text(shape: tuple) -> str:
    return ", ".join("any" if size is None else str(size) for size in shape)


class InputLayer(NamedTuple):
    """The layer that alone reads the network's input, and the input size its weights fix:
    per-example dimension ``dim`` (-1: the last) holds ``size`` ``unit``s; ``rank``: the number of
    per-example dimensions it takes (None: any)."""

    name: str
    kind: str
    rank: Optional[int]
    dim: int
    size: int
    unit: str


def input_layer(network: fx.GraphModule) -> Optional[InputLayer]:
    """The convolution or linear layer that alone reads the input of ``network``, if there is one."""
    inputs = [n for n in network.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1 or len(inputs[0].users) != 1:
        return None
    user = next(iter(inputs[0].users))
    module = network.get_submodule(str(user.target)) if user.op == "call_module" else None
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return InputLayer(str(user.target), type(module).__name__, len(module.kernel_size) + 1, 0, module.in_channels, "channel")
    if isinstance(module, nn.Linear):
        return InputLayer(str(user.target), "Linear", None, -1, module.in_features, "feature")
    return None


def _count(layer: InputLayer) -> str:
    """``"1 channel"``, ``"3 channels"``: the size the input layer's weights fix."""
    return f"{layer.size} {layer.unit}{'s' * (layer.size != 1)}"


def _dimensions(count: int) -> str:
    return f"{count} dimension{'s' * (count != 1)}"


def _rank_fix(expected: tuple, actual: tuple) -> str:
    """How to give a per-example shape of the wrong rank the one expected, where one size-1
    dimension more or less does it."""
    for d in range(len(actual) + 1):
        if _shape_accepts(expected, actual[:d] + (1,) + actual[d:]):
            return f"; x.unsqueeze({d + 1}) adds the missing one"
    for d, size in enumerate(actual):
        if size == 1 and _shape_accepts(expected, actual[:d] + actual[d + 1 :]):
            return f"; x.squeeze({d + 1}) removes the extra one"
    return ""


def _first_paragraph(error: Exception) -> str:
    """An error's message without what fx appends after a blank line ("While executing ...")."""
    return str(error).split("\n\n")[0]


class _Locator(fx.Interpreter):
    """Runs a graph once (each module's ``forward`` called directly, so no hooks fire) and turns
    the first RuntimeError into ``_NodeFailure`` naming the node, printing nothing (fx's
    ShapeProp prints a traceback)."""

    def __init__(self, network: fx.GraphModule) -> None:
        super().__init__(network)
        self.extra_traceback = False

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        return self.fetch_attr(target).forward(*args, **kwargs)

    def run_node(self, n: fx.Node) -> Any:
        try:
            return super().run_node(n)
        except RuntimeError as error:
            args = self.fetch_args_kwargs_from_env(n)
            shapes = [tuple(a.shape) for a in tree_leaves(args) if isinstance(a, torch.Tensor)]
            kind = type(self.fetch_attr(str(n.target))).__name__ if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
            got = f" on its input [batch, {_shape_text(shapes[0][1:])}]" if shapes and shapes[0] else ""
            raise _NodeFailure(f"; it fails at node `{n.name}` ({kind}){got}", n) from error


class _NodeFailure(Exception):
    """Where ``_Locator`` saw the network fail (the message, and the ``node``), with torch's error as the cause."""

    def __init__(self, message: str, node: fx.Node) -> None:
        super().__init__(message)
        self.node = node


def _largest_bytes(shapes: dict) -> int:
    """Bytes of the largest tensor in ``analysis.propagate_shapes``'s result (at least 1)."""
    metas = [m for meta in shapes.values() for m in tensor_metas(meta)]
    return max((m.shape.numel() * m.dtype.itemsize for m in metas), default=1)


def _summed(total: Any, out: Any) -> Any:
    """``total + out`` for (trees of) readouts, in ``count_dtype`` (float32 for half precision,
    whose 8 significant bits would let a sum over many steps drift; ``out`` itself at the first step)."""
    widened = tree_map(lambda y: y.to(count_dtype(y.dtype)), out)
    return widened if total is None else tree_map(torch.add, total, widened)


def _averaged(total: Any, like: Any, steps: int) -> Any:
    """``total / steps``, back in the type of the readouts ``like``."""
    return tree_map(lambda y, readout: (y / steps).to(readout.dtype), total, like)


def _check_one_input(network: fx.GraphModule) -> None:
    """Refuse a model whose forward needs more than one input: the SNN takes one tensor."""
    required = [n.name for n in network.graph.nodes if n.op == "placeholder" and not n.args]
    if len(required) > 1:
        raise ConversionError(
            f"the model's forward takes {len(required)} inputs ({', '.join(required)}), but a converted network takes one input tensor: "
            "wrap the model in a module whose forward takes one tensor and passes its parts on "
            "(e.g. forward(self, x): return model(x[:, :1], x[:, 1:]) for two inputs stacked along the channels), "
            "and convert that; fix inputs that are not tensors with convert(..., concrete_args={name: value})"
        )


def _even(total: int, size: int) -> int:
    """The size of as many parts of ``total`` as parts of ``size`` need, made nearly equal."""
    size = max(1, min(size, total))
    return math.ceil(total / math.ceil(total / size))


#: ``SpikingNetwork._layer_mode_blocker`` of a network saved before the check existed: not decided yet.
_UNCHECKED = object()


class SpikingNetwork(nn.Module):
    """A converted SNN: ``snn(x)`` runs ``T`` steps and averages the readout over them.

    - ``snn.T`` and ``snn.mode`` ("layer": stateless layers see all steps at once, time folded
      into the batch; "step": the whole network runs once per step) can be changed at any time.
    - ``snn.reset(); snn.step(x_t)`` streams: one step per call, state kept until ``reset()``;
      each call returns that step's readout (through the output head).
    - ``snn.output_head``: a trailing softmax / log_softmax of the CNN, applied to the output
      averaged over T, so ``snn(x)`` returns the same kind of values as ``model(x)``.
    - ``snn.batch_chunk`` and ``snn.time_chunk``: layer mode runs the batch in slices of this many
      examples and each slice in chunks of this many consecutive steps, carrying neuron and
      pooling state from chunk to chunk (default ``None``: chosen by ``chunk_plan``, cache-sized
      on CPU, everything at once elsewhere); outputs and gradients do not change.
    - The first spiking layer under direct encoding sees the same input at every step. When it is
      an IF neuron whose only reader is a gated max pool, layer-mode inference runs it on the
      max-pooled input: each window emits the spike train of its largest-input position, and
      the neuron and gate work of the other positions is saved (M5: three quarters of its most
      expensive layer). This is exact, bit for bit: in floating point too, a larger constant
      current never has fewer spikes than a smaller one at any step, so that position holds
      the window's largest running count, whose increases the gated pool emits
      (``SpikingNeuron._static_leaders`` has the proof).
    - ``snn.pool_static_input`` (approximation, off by default) takes that path for leaky (LIF)
      neurons too, where the proof does not hold: in floating point the decaying membranes of
      two nearly equal inputs can swap which leads, so the result can differ from the gated
      pool's on such windows (none of 2 M first-layer outputs of a random M5 at T=32). Step
      mode is unchanged.
    - ``snn.compiled_neurons = True`` (off by default) runs each neuron's time step in layer-mode
      training, forward and backward, as one kernel compiled by ``torch.compile`` instead of a
      handful of tensor operations (``ann2snn.compiled_steps``): a faster fine-tuning step on
      CPU (VGG at T = 25: about 0.9-1.0 instead of 1.1-1.3 x T CNN training steps), after a
      compilation of tens of seconds on first use; equal to the default up to rounding, not bit
      for bit. It needs ``torch.compile``'s toolchain (a C++ compiler on CPU).
    - ``snn.report`` says what the compiler did; ``snn.network`` is the rewritten fx graph.
    - ``snn.input_shape``: the per-example input shape checked at every call (from the calibration
      data unless ``convert(input_shape=...)`` gave it). ``None`` in a size accepts any size, so an
      audio CNN calibrated on 1 s clips takes clips of any length with ``snn.input_shape = (1, None)``
      (or ``convert(..., input_shape=(1, None))``); ``snn.input_shape = None`` checks no size.
    - ``snn.calibrated_T``: the ``T`` that T-specific calibration (``percentile="auto"`` or
      ``"balanced"``, output-space correction) was tuned for, or ``None``. Running at another ``T``
      warns once per ``T`` (``StaleCalibrationWarning``, also in the report) until
      ``ann2snn.recalibrate(snn, batches)`` retunes it.
    """

    def __init__(
        self,
        network: fx.GraphModule,
        T: int,
        mode: str,
        encoder: Encoder,
        report: ConversionReport,
        input_shape: Optional[tuple[int, ...]] = None,
    ) -> None:
        super().__init__()
        _check_one_input(network)
        self.network = network
        self.encoder = encoder
        self.report = report
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._T = _check_steps(T)
        self._layer_mode_blocker: object = network.meta.get(LAYER_MODE_BLOCKER)
        self._mode = self._runnable_mode(mode)
        self._t = 0
        _, dynamic = split_static(network)
        self.static_output = not any(n.op == "output" for n in dynamic)
        #: Approximation, off by default: see ``pool_static_input`` in the class docstring.
        self.pool_static_input = False
        self._compiled_neurons = False
        self._batch_chunk: Optional[int] = None
        self._time_chunk: Optional[int] = None
        self._example_bytes: dict[tuple, int] = {}
        self._batch_probed: set[tuple] = set()
        self.calibrated_T: Optional[int] = None
        self._stale_T_warned: set[int] = set()
        self._step_batch = 0
        self._analog = False
        #: Ops after the readout ((kind, dim): "softmax" / "log_softmax"), applied to the averaged output.
        self.output_head: list[tuple[str, Optional[int]]] = list(network.meta.get("output_head", []))

    def __setstate__(self, state: dict) -> None:
        """Unpickling (``ann2snn.load``): networks saved before batch chunking existed get its defaults."""
        super().__setstate__(state)
        self.__dict__.setdefault("_batch_chunk", None)
        self.__dict__.setdefault("_time_chunk", None)
        self.__dict__.setdefault("pool_static_input", False)
        if "compiled_neurons" in self.__dict__:  # saved as a plain attribute
            self._compiled_neurons = self.__dict__.pop("compiled_neurons")
        self.__dict__.setdefault("_compiled_neurons", False)
        self.__dict__.setdefault("_example_bytes", {})
        self.__dict__.setdefault("_batch_probed", set())
        self.__dict__.setdefault("calibrated_T", None)
        self.__dict__.setdefault("_stale_T_warned", set())
        self.__dict__.setdefault("_step_batch", 0)
        self.__dict__.setdefault("_analog", False)
        self.__dict__.setdefault("output_head", [])
        if "layer_mode_blocker" in self.__dict__:  # saved under its public name
            self._layer_mode_blocker = self.__dict__.pop("layer_mode_blocker")
        self.__dict__.setdefault("_layer_mode_blocker", _UNCHECKED)  # saved before the check: see layer_mode_blocker

    def __getstate__(self) -> dict:
        """Pickling and ``ann2snn.save``: with ``layer_mode_blocker`` decided."""
        self._layer_mode_blocker = self.layer_mode_blocker
        return super().__getstate__()

    @property
    def compiled_neurons(self) -> bool:
        """Whether layer-mode training runs each neuron step as a ``torch.compile`` kernel (off by
        default; see the class docstring)."""
        return self._compiled_neurons

    @compiled_neurons.setter
    def compiled_neurons(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ConversionError(f"compiled_neurons takes True or False, not {value!r}")
        self._compiled_neurons = value

    @property
    def layer_mode_blocker(self) -> Optional[str]:
        """Why the network cannot run in layer mode (an op computes with the batch), or None.
        Found at conversion, or when run (``_computes_with_batch``); for a network saved before
        the check existed, from its graph on first use (after loading, once the graph is whole)."""
        if self._layer_mode_blocker is _UNCHECKED:
            self._layer_mode_blocker = batch_arithmetic_blocker(self.network)
        return self._layer_mode_blocker  # type: ignore[return-value]

    @layer_mode_blocker.setter
    def layer_mode_blocker(self, value: Optional[str]) -> None:
        self._layer_mode_blocker = value

    # -- settings ------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Time steps per forward call: ``snn(x)`` runs ``T`` steps and averages the readout.
        Settable at any time (``snn.T = 64``); when calibration was tuned for another ``T``
        the network warns until ``ann2snn.recalibrate`` is run."""
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        self._T = _check_steps(value)

    @property
    def mode(self) -> str:
        """How ``snn(x)`` runs the ``T`` steps: ``"layer"`` (stateless layers see all steps at
        once, time folded into the batch; the fast default) or ``"step"`` (the whole network once
        per step). Both give the same outputs; settable at any time, except that a network whose
        CNN computes with its batch (pairs of examples, batch halves) refuses layer mode
        (``layer_mode_blocker`` says where)."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = self._runnable_mode(value)

    def _runnable_mode(self, mode: object) -> str:
        """``check_mode(mode)``, or ConversionError for layer mode on a network that cannot run it."""
        if check_mode(mode) == "layer" and self.layer_mode_blocker:
            raise ConversionError(self.layer_mode_blocker)
        return str(mode)

    @property
    def batch_chunk(self) -> Optional[int]:
        """Layer mode runs the batch in chunks of this many examples (results are the same; only
        speed and peak memory change). ``None`` (default): on CPU, as many as keep one chunk's
        largest activation within ``CHUNK_BYTES``; on other devices, the whole batch."""
        return self._batch_chunk

    @batch_chunk.setter
    def batch_chunk(self, value: Optional[int]) -> None:
        self._batch_chunk = _check_chunk(value)

    @property
    def time_chunk(self) -> Optional[int]:
        """Layer mode runs the T steps in chunks of this many consecutive steps, each neuron and
        gated pool carrying its state from one chunk to the next (outputs and gradients are the
        same; the stateless layers see ``steps x examples`` at a time). ``None`` (default): see
        ``chunk_plan``. Values above T mean all T steps at once."""
        return self._time_chunk

    @time_chunk.setter
    def time_chunk(self, value: Optional[int]) -> None:
        self._time_chunk = _check_chunk(value, "time_chunk", "time steps")

    def extra_repr(self) -> str:
        return f"T={self.T}, mode={self.mode!r}"

    # -- plumbing ------------------------------------------------------------------------------
    def time_constants(self) -> list[nn.Parameter]:
        """The trainable parameters that set the neurons' membrane time constants (``learn_tau``;
        none otherwise), for example to give them their own learning rate. The values, in steps:
        each neuron's ``tau``."""
        return [p for m in self.network.modules() if isinstance(m, SpikingNeuron) for p in m.time_constants()]

    def temporal_modules(self) -> Iterator[TemporalModule]:
        return (m for m in self.network.modules() if isinstance(m, TemporalModule))

    def _configure(self, layer_mode: bool, analog: bool = False, steps: Optional[int] = None, given_input: bool = False) -> None:
        """Set every temporal module's regime; in layer mode each call holds ``steps`` (default T)
        consecutive steps, and fewer than T means time chunks (state carried between calls). The
        neurons fused with their gated pools take ``pool_static_input`` (layer mode only), every
        neuron ``compiled_neurons``.
        ``given_input``: the network is fed a time-varying sequence, not its encoder's output."""
        folded_static = layer_mode and self.encoder.is_time_invariant and not given_input
        steps = self.T if steps is None else steps
        for module in self.temporal_modules():
            module.analog = analog
            module.time_steps = steps if layer_mode else None
            module.sequence_steps = self.T if layer_mode else None
            module.chunked = layer_mode and steps < self.T
            module.broadcast_input = folded_static and module.static_source
            if isinstance(module, SpikingNeuron):
                module.compiled_bptt = layer_mode and self.compiled_neurons
        for fused in self.network.modules():
            if isinstance(fused, NeuronPool):
                fused.neuron.pool_static_input = layer_mode and not analog and self.pool_static_input and not fused.averages

    def weight_dtype(self) -> Optional[torch.dtype]:
        """The floating-point type of the CNN's weights in the network (``None`` if it has none):
        the type the network computes in and takes its inputs in."""
        own = {id(t) for m in self.temporal_modules() for t in (*m.parameters(), *m.buffers())}
        return next((t.dtype for t in (*self.network.parameters(), *self.network.buffers()) if t.is_floating_point() and id(t) not in own), None)

    def _match_dtype(self) -> None:
        """Give the tensors conversion and calibration made (neuron and pool state, the encoder's
        scale: float32 when made) the weights' floating-point type, so that a float64 CNN
        converts to a float64 SNN."""
        dtype = self.weight_dtype()
        if dtype is None:
            return
        for module in (self.encoder, *self.temporal_modules()):
            if any(t.is_floating_point() and t.dtype != dtype for t in (*module.parameters(), *module.buffers())):
                module.to(dtype)

    @contextmanager
    def analog_mode(self) -> Iterator[None]:
        """Run the rewritten graph as the CNN it came from (neurons act as ReLUs): inside it,
        ``snn(x)`` and ``snn.step(x)`` return the CNN's output (one pass, no time loop, the
        output head applied), as does ``snn.network(x)`` (without the head)."""
        previous = self._analog
        self._analog = True
        self._configure(layer_mode=False, analog=True)
        try:
            yield
        finally:
            self._analog = previous
            self._configure(layer_mode=False, analog=previous)

    def _forward_analog(self, x: torch.Tensor):
        """``analog_mode``'s forward: the rewritten graph once, as the CNN (temporal modules kept analog)."""
        self.check_input(x)
        self._configure(layer_mode=False, analog=True)
        return self._apply_head(self.run_network(x))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise InputShapeError unless ``x`` is a batch of finite inputs of the converted shape and
        of the weights' floating-point type (NaN or infinite inputs would be clipped to a
        meaningless finite output by the neurons, so they are refused)."""
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"the input must be a tensor, not {type(x).__name__}")
        expected = next((p.dtype for p in self.network.parameters()), None)
        if expected is not None and x.dtype != expected:
            raise InputShapeError(f"the network takes {str(expected).removeprefix('torch.')} inputs; got {str(x.dtype).removeprefix('torch.')} (convert it, e.g. x.to({expected}))")
        if x.is_floating_point() and not (torch.isfinite(x.sum()) or torch.isfinite(x).all()):  # one op when finite (unless the sum overflows)
            raise InputShapeError("the input contains NaN or infinite values; the SNN would turn them into finite nonsense, so clean the input first")
        if self.input_shape is not None and not _shape_accepts(self.input_shape, tuple(x.shape[1:])):
            raise InputShapeError(self._mismatch(tuple(x.shape)))

    def _mismatch(self, shape: tuple) -> str:
        """Why an input of ``shape`` does not fit ``input_shape``: the rank, or which dimensions
        differ, and the way out (freeing only sizes that the first layer's weights do not fix)."""
        expected, actual = self.input_shape, shape[1:]
        head = f"input of shape {shape} does not match the converted network, which takes [batch, {_shape_text(expected)}] (the calibration data's shape, or convert's input_shape)"
        if len(expected) != len(actual):
            return f"{head}: it has {_dimensions(len(actual))} per example, not {len(expected)}{_rank_fix(expected, actual)} (a number of dimensions cannot be freed)"
        layer = input_layer(self.network)
        fixed = None if layer is None else layer.dim % len(expected)
        differ = [d for d, (e, a) in enumerate(zip(expected, actual)) if e is not None and e != a]
        facts = [f"dimension {d + 1} is {actual[d]}, not {expected[d]}" for d in differ]
        text = f"{head}: {', '.join(facts)}"
        if fixed in differ:
            text += f"; the first layer `{layer.name}` ({layer.kind}) takes {_count(layer)} there, fixed by its weights: pass inputs with {_count(layer)}"
        free = [d for d in differ if d != fixed]
        if free:
            freed = tuple(None if d in free else e for d, e in enumerate(expected))
            text += (
                f". If the network accepts other sizes there (an audio CNN with global pooling takes clips of any length), "
                f"free them: snn.input_shape = {freed} (None: any size), or snn.input_shape = None to check no size; "
                f"at conversion, convert(..., input_shape={freed})"
            )
        return text

    def _expected(self) -> str:
        """The input shape the network takes: ``input_shape``, else what its first layer's weights fix."""
        if self.input_shape is not None:
            return f"[batch, {_shape_text(self.input_shape)}]"
        layer = input_layer(self.network)
        if layer is None:
            return "the shape the CNN takes"
        if layer.rank is None:
            return f"[batch, ..., {layer.size}]"
        return f"[batch, {layer.size}, {_shape_text((None,) * (layer.rank - 1))}]"

    def _layer_mismatch(self, shape: tuple) -> str:
        """What in ``shape`` the first layer's weights cannot take (its rank or its channels or
        features), or nothing."""
        layer = input_layer(self.network)
        if layer is None or len(shape) < 2:
            return ""
        if layer.rank is not None and len(shape) - 1 != layer.rank:
            return f"; it has {_dimensions(len(shape) - 1)} per example, but the first layer `{layer.name}` ({layer.kind}) takes {layer.rank}"
        dim = layer.dim % (len(shape) - 1) + 1
        if shape[dim] != layer.size:
            return f"; dimension {dim} is {shape[dim]}, but the first layer `{layer.name}` ({layer.kind}) takes {_count(layer)} there"
        return ""

    def _located_failure(self, example: torch.Tensor) -> Optional[_NodeFailure]:
        """Run ``example`` through the graph as the CNN (no gradients, no side effects) and return
        where it fails, if it does."""
        try:
            with torch.no_grad(), self.analog_mode(), self._without_side_effects(example.device):
                _Locator(self.network).run(example)
        except _NodeFailure as failure:
            return failure
        except Exception:  # a failure _Locator cannot place: the caller reports the original error
            pass
        return None

    def _input_error(self, x: torch.Tensor, error: Exception, where: str = "") -> InputShapeError:
        """The InputShapeError for ``x`` failing inside the network with ``error``: the shape and
        device expected, what the first layer cannot take, and the node that failed (``where``)."""
        weights = next((p.device for p in self.parameters()), x.device)
        shape = f"[batch, {_shape_text(x.shape[1:])}]" if x.dim() else "()"
        freed = " (sizes freed in snn.input_shape must still suit every layer)" if where and None in (self.input_shape or ()) else ""
        return InputShapeError(
            f"the converted network failed on an input of shape {shape} on {x.device} (it expects {self._expected()} on {weights})"
            f"{self._layer_mismatch(tuple(x.shape))}{where}{freed}: {_first_paragraph(error)}"
        )

    def run_network(self, x: torch.Tensor):
        """One pass through the rewritten graph, with errors from inside torch explained."""
        with self._explained_errors(x):
            return self.network(x)

    @contextmanager
    def _explained_errors(self, x: torch.Tensor) -> Iterator[None]:
        """Turn a RuntimeError or IndexError (a dimension out of range) from inside torch, running
        ``x``, into an InputShapeError that says what the network expects. Where the first layer
        cannot take ``x``, that is the news: one example of ``x`` might run further (a [B, L] batch
        reads as one unbatched [C, L] example) and fail somewhere misleading, so it is not run."""
        try:
            yield
        except (RuntimeError, IndexError) as error:
            located = x.dim() and len(x) and not self._layer_mismatch(tuple(x.shape))
            failure = self._located_failure(x[:1]) if located else None
            raise self._input_error(x, error, str(failure or "")) from error

    def reset(self) -> None:
        """Clear all neuron and pooling state (and the step counter of ``step``)."""
        self._t = 0
        for module in self.temporal_modules():
            module.reset()

    def chunk_size(self, x: torch.Tensor) -> int:
        """How many examples of ``x`` to run at once with all T steps in one call (what callers
        that run the network over all steps themselves, such as output-space correction, use):
        ``batch_chunk``, or on CPU as many as keep the largest activation within ``CHUNK_BYTES``,
        elsewhere the whole batch. Layer mode itself follows ``chunk_plan``."""
        if self._computes_with_batch(x):  # the CNN computes with the whole batch
            return max(1, x.shape[0])
        if self.batch_chunk is not None:
            return self.batch_chunk
        if x.device.type != "cpu":
            return max(1, x.shape[0])
        return max(1, CHUNK_BYTES // (self.T * self._bytes_per_example_step(x)))

    def _computes_with_batch(self, x: torch.Tensor) -> bool:
        """Whether the network computes with its batch, so that layer mode cannot run it
        (``layer_mode_blocker``): seen in the graph at conversion, or here, once per input shape
        (``_batch_probe``: ``h.reshape(-1, 2 * F)`` joins pairs of examples with no batch
        arithmetic in the graph; ``h.mean(-2)`` on ``[B, F]`` needs the shapes)."""
        key = (tuple(x.shape[1:]), x.dtype)
        if self.layer_mode_blocker is None and len(x) and key not in self._batch_probed:
            self._batch_probed.add(key)
            self.layer_mode_blocker = self._batch_probe(x)
        return self.layer_mode_blocker is not None

    def _batch_probe(self, x: torch.Tensor) -> Optional[str]:
        """Why layer mode cannot run ``x``, or None: the CNN fails on one example but runs on the
        whole batch (it joins groups of examples), or, with the shapes of one example recorded in
        the graph, ``batch_arithmetic`` finds an op along the batch (``h.mean(-2)`` on ``[B, F]``).
        The CNN runs in eval mode with the random state restored: no running statistics move."""
        failure = self._located_failure(x[:1])
        if failure is not None:
            return batch_probe_blocker(self.network, failure.node) if len(x) > 1 and self._located_failure(x) is None else None
        with torch.no_grad(), self.analog_mode(), self._without_side_effects(x.device):
            shapes = propagate_shapes(self.network, x[:1])
        self._example_bytes.setdefault((tuple(x.shape[1:]), x.dtype), _largest_bytes(shapes))  # the same pass sizes the chunks
        return batch_arithmetic_blocker(self.network)

    @contextmanager
    def _without_side_effects(self, device: torch.device) -> Iterator[None]:
        """Every module in eval mode (no running statistics updated, no dropout) and the random
        state forked (CPU, and ``device`` if it is a GPU); both restored afterwards."""
        training = {module: module.training for module in self.modules()}
        self.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                yield
        finally:
            for module, flag in training.items():
                module.training = flag

    def _bytes_per_example_step(self, x: torch.Tensor) -> int:
        key = (tuple(x.shape[1:]), x.dtype)
        if key not in self._example_bytes:
            self._example_bytes[key] = self._largest_activation_bytes(x[:1])
        return self._example_bytes[key]

    def time_chunks_supported(self) -> bool:
        """Whether every temporal module can carry its state from one time chunk to the next."""
        return all(m.supports_time_chunks for m in self.temporal_modules())

    def chunk_plan(self, x: torch.Tensor) -> tuple[int, int]:
        """(examples per batch slice, steps per time chunk) that layer mode runs ``x`` with.

        ``batch_chunk`` and ``time_chunk`` fix either. Left ``None``, on CPU the budget is
        ``CHUNK_BYTES`` for the largest activation of one chunk (examples x steps x its bytes
        per example and step): as many examples as fit with ``MIN_TIME_CHUNK`` steps (the whole
        batch where it fits), and as many steps as then fit (the stateless layers see
        examples x steps at once while each neuron's state stays in cache over the steps);
        examples and steps are spread evenly over the slices and chunks. Elsewhere (GPU): everything at once. Time chunks need every temporal module
        to support them (``time_chunks_supported``); otherwise all T steps run at once and only
        the batch is sliced. An explicit ``time_chunk`` is taken as it is (the last chunk holds
        the remaining steps)."""
        if self._computes_with_batch(x):
            raise ConversionError(self.layer_mode_blocker)
        batch, T = max(1, x.shape[0]), self.T
        chunkable = self.time_chunks_supported()
        examples, steps = self.batch_chunk, self.time_chunk if chunkable else None
        if examples is None or steps is None:
            if x.device.type != "cpu":
                examples, steps = examples or batch, steps or T
            else:
                budget = max(1, CHUNK_BYTES // self._bytes_per_example_step(x))  # examples x steps
                if not chunkable:
                    steps = T
                if examples is None:
                    examples = budget // min(T, MIN_TIME_CHUNK) if steps is None else budget // min(steps, T)
                    examples = _even(batch, max(1, examples))
                if steps is None:
                    steps = max(1, budget // min(examples, batch))
        examples, steps = min(examples, batch), min(steps, T)
        if self.time_chunk is None:
            steps = _even(T, steps)
        return examples, steps

    def _largest_activation_bytes(self, example: torch.Tensor) -> int:
        """Bytes of the largest tensor one example produces in one step (``analysis.propagate_shapes``;
        an input the network fails on is refused first, naming the node, as fx would print a traceback)."""
        failure = self._located_failure(example)
        if failure is not None:
            raise self._input_error(example, failure.__cause__, str(failure)) from failure.__cause__
        with torch.no_grad(), self.analog_mode(), self._explained_errors(example), self._without_side_effects(example.device):
            return _largest_bytes(propagate_shapes(self.network, example))

    def mark_calibrated(self, tuned: bool) -> None:
        """Calibration runs at the current ``T``: it is the T calibration was tuned for (``tuned``:
        T-specific calibration) and the report's settings say so; earlier stale-T warnings go."""
        self.calibrated_T = self.T if tuned else None
        if "T" in self.report.settings:
            self.report.settings["T"] = self.T
        self.report.withdraw(STALE_CALIBRATION)
        self._stale_T_warned.clear()

    def _check_calibration_fresh(self) -> None:
        """Warn once per ``T`` when running at a ``T`` other than the one calibration was tuned for."""
        if self.calibrated_T is None or self.T == self.calibrated_T or self.T in self._stale_T_warned:
            return
        self._stale_T_warned.add(self.T)
        message = f"{STALE_CALIBRATION}{self.calibrated_T} but the network runs at T={self.T}; accuracy may suffer: call ann2snn.recalibrate(snn, batches) to tune them for T={self.T}"
        self.report.warn(message)
        warnings.warn(message, StaleCalibrationWarning, stacklevel=3)

    def _apply_head(self, y):
        """The CNN's output head (softmax / log_softmax), on the output averaged over T."""
        for kind, dim in self.output_head:
            y = F.log_softmax(y, dim) if kind == "log_softmax" else F.softmax(y, dim)
        return y

    @contextmanager
    def without_head(self) -> Iterator[None]:
        """Return the averaged readout itself (logits), without the output head."""
        head, self.output_head = self.output_head, []
        try:
            yield
        finally:
            self.output_head = head

    # -- execution -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        """``T`` steps on ``x``, the readout averaged over them and passed through the output
        head; inside ``analog_mode``, the CNN's output instead."""
        if self._analog:
            return self._forward_analog(x)
        return self._apply_head(self._forward_averaged(x))

    def _forward_averaged(self, x: torch.Tensor):
        self.check_input(x)
        self._check_calibration_fresh()
        self.reset()
        if self.mode == "layer" and x.numel():  # an empty batch runs step mode (time cannot be folded into it)
            examples, steps = self.chunk_plan(x)  # before configuring: sizing may run the analog graph
            self._configure(layer_mode=True, steps=steps)
            try:
                outs = [self._forward_layer(chunk, steps) for chunk in x.split(examples)]
            finally:
                self.reset()  # no state (nor autograd graph) outlives the call
            return outs[0] if len(outs) == 1 else tree_map(lambda *ys: torch.cat(ys), *outs)
        self._configure(layer_mode=False)
        total = None
        for t in range(self.T):
            out = self.run_network(self.encoder.step(x, t, self.T))
            total = _summed(total, out)
        self.reset()
        return _averaged(total, out, self.T)

    def _forward_layer(self, x: torch.Tensor, steps: Optional[int] = None):
        """Layer mode on one slice of the batch, time folded into the batch: all T steps at once,
        or ``steps`` at a time, state carried from chunk to chunk (under direct encoding the
        time-invariant part of the network runs once, before the first chunk)."""
        steps = self.T if steps is None else steps
        if steps >= self.T:
            if self.encoder.is_time_invariant:
                out = self.run_network(x)
                if self.static_output:
                    return out
            else:
                out = self.run_network(self.encoder.sequence(x, self.T))
            return tree_map(lambda y: y.unflatten(0, (self.T, -1)).mean(0), out)
        if self.encoder.is_time_invariant and self.static_output:
            return self.run_network(x)
        self.reset()
        if self.encoder.is_time_invariant:
            static, dynamic = _split_network(self.network)
            with self._explained_errors(x):
                values = static(x)
        total = None
        for start, k in self._time_chunks(self.T, steps):
            with self._explained_errors(x):
                out = dynamic(*values) if self.encoder.is_time_invariant else self.network(self._encode(x, start, k))
            part = tree_map(lambda y: y.unflatten(0, (k, -1)).sum(0, dtype=count_dtype(y.dtype)), out)
            total = _summed(total, part)
        self.reset()
        return _averaged(total, out, self.T)

    def _time_chunks(self, total: int, steps: int) -> Iterator[tuple[int, int]]:
        """(first step, length) of each time chunk of a ``total``-step sequence run ``steps`` at a
        time, every temporal module set to the chunk's length while it runs (a shorter last
        chunk), and to ``steps`` again afterwards."""
        current = steps
        try:
            for start in range(0, total, steps):
                k = min(steps, total - start)
                if k != current:
                    for module in self.temporal_modules():
                        module.time_steps = k
                    current = k
                yield start, k
        finally:
            if current != steps:
                for module in self.temporal_modules():
                    module.time_steps = steps

    def sequence_readouts(self, x_seq: torch.Tensor):
        """The readout of every step, ``[steps, batch, ...]`` (before the output head), of the
        input sequence ``x_seq`` (``[steps, batch, ...]``) fed to the network as it is (no
        encoder), in layer mode from a fresh state: the batch in slices and the steps in time
        chunks as ``chunk_plan`` says for a sequence of that length, neuron and pool state
        carried from chunk to chunk. ``ann2snn.run_sequence`` is the documented way in."""
        total = x_seq.shape[0]
        self.check_input(x_seq.flatten(0, 1))
        T = self._T
        self._T = total  # the sequence's length, for chunk_plan and the modules' sequence_steps
        try:
            self.reset()
            examples, steps = self.chunk_plan(x_seq[0])
            self._configure(layer_mode=True, steps=steps, given_input=True)
            parts = []
            for part in x_seq.split(examples, dim=1):
                chunks = []
                for start, k in self._time_chunks(total, steps):
                    out = self.run_network(part[start : start + k].flatten(0, 1))
                    chunks.append(tree_map(lambda y: y.unflatten(0, (k, -1)), out))
                self.reset()
                parts.append(tree_map(lambda *ys: torch.cat(ys, 0), *chunks))
            return tree_map(lambda *ys: torch.cat(ys, 1), *parts)
        finally:
            self._T = T
            self.reset()

    def _encode(self, x: torch.Tensor, start: int, steps: int) -> torch.Tensor:
        """Steps ``start`` to ``start + steps`` of the encoded input, folded into the batch."""
        if self.encoder.kind == "rate":  # independent draws: the step index does not matter
            return self.encoder.sequence(x, steps)
        return torch.cat([self.encoder.step(x, t, self.T) for t in range(start, start + steps)], 0)

    def step(self, x_t: torch.Tensor):
        """Run one time step on ``x_t`` (state kept from earlier calls until ``reset()``); inside
        ``analog_mode``, the CNN's output (no state)."""
        if self._analog:
            return self._forward_analog(x_t)
        self.check_input(x_t)
        if self._t > 0 and x_t.shape[0] != self._step_batch:
            raise InputShapeError(f"step(): the batch size changed from {self._step_batch} to {x_t.shape[0]} in the middle of a sequence; call snn.reset() before starting a new one")
        self._step_batch = x_t.shape[0]
        self._check_calibration_fresh()
        if self._t == 0:  # later steps of a sequence find step mode set (anything else resets first)
            self._configure(layer_mode=False)
        out = self.run_network(self.encoder.step(x_t, self._t, self.T))
        self._t += 1
        return self._apply_head(out)
