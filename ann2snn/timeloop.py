"""The time loop: a converted graph wrapped so that it takes the CNN's input and returns the CNN's
output shape, running T steps (encoder -> network -> readout averaged over T)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import fx, nn
from torch.utils._pytree import tree_map

from .encoders import Encoder
from .errors import ConversionError, InputShapeError
from .passes.time_broadcast import split_static
from .report import ConversionReport
from .neurons import SpikingNeuron
from .temporal import GatedMaxPool, TemporalModule

MODES = ("layer", "step")


def _check_steps(T: object) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T <= 0:
        raise ConversionError(f"T={T!r}: the number of time steps must be a positive integer")
    return T


def _check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ConversionError(f"mode={mode!r} is not one of {MODES}")
    return str(mode)


def _neuron_pool_pairs(network: fx.GraphModule) -> list[tuple[str, str]]:
    """(neuron, gated pool) submodule names where the neuron's only reader is that pool."""
    pairs = []
    for node in network.graph.nodes:
        if node.op != "call_module" or not isinstance(network.get_submodule(str(node.target)), SpikingNeuron):
            continue
        users = list(node.users)
        if len(users) == 1 and users[0].op == "call_module" and isinstance(network.get_submodule(str(users[0].target)), GatedMaxPool):
            pairs.append((str(node.target), str(users[0].target)))
    return pairs


class SpikingNetwork(nn.Module):
    """A converted SNN: ``snn(x)`` runs ``T`` steps and averages the readout over them.

    - ``snn.T`` and ``snn.mode`` ("layer": stateless layers see all steps at once, time folded
      into the batch; "step": the whole network runs once per step) can be changed at any time.
    - ``snn.reset(); snn.step(x_t)`` streams: one step per call, state kept until ``reset()``;
      each call returns that step's readout.
    - ``snn.report`` says what the compiler did; ``snn.network`` is the rewritten fx graph.
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
        self.network = network
        self.encoder = encoder
        self.report = report
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._T = _check_steps(T)
        self._mode = _check_mode(mode)
        self._t = 0
        _, dynamic = split_static(network)
        self.static_output = not any(n.op == "output" for n in dynamic)
        self.fusable_pools = _neuron_pool_pairs(network)
        #: Layer mode runs each gated max pool inside the neuron that feeds it (faster, and the
        #: unpooled spike train is never stored); set False to observe neurons' own spikes with hooks.
        self.fuse_pools = True

    # -- settings ------------------------------------------------------------------------------
    @property
    def T(self) -> int:
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        self._T = _check_steps(value)

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = _check_mode(value)

    def extra_repr(self) -> str:
        return f"T={self.T}, mode={self.mode!r}"

    # -- plumbing ------------------------------------------------------------------------------
    def temporal_modules(self) -> Iterator[TemporalModule]:
        return (m for m in self.network.modules() if isinstance(m, TemporalModule))

    def _configure(self, layer_mode: bool, analog: bool = False) -> None:
        folded_static = layer_mode and self.encoder.is_time_invariant
        for module in self.temporal_modules():
            module.analog = analog
            module.time_steps = self.T if layer_mode else None
            module.broadcast_input = folded_static and module.static_source
        fuse = layer_mode and not analog and self.fuse_pools
        for neuron_name, pool_name in self.fusable_pools:
            pool = self.network.get_submodule(pool_name)
            pool.fused = fuse
            self.network.get_submodule(neuron_name).fuse_pool(pool if fuse else None)

    @contextmanager
    def analog_mode(self) -> Iterator[None]:
        """Run the rewritten graph as the CNN it came from (neurons act as ReLUs)."""
        self._configure(layer_mode=False, analog=True)
        try:
            yield
        finally:
            self._configure(layer_mode=False)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise InputShapeError unless ``x`` is a batch of inputs of the converted shape."""
        if not isinstance(x, torch.Tensor):
            raise InputShapeError(f"the input must be a tensor, not {type(x).__name__}")
        if self.input_shape is not None and tuple(x.shape[1:]) != self.input_shape:
            raise InputShapeError(
                f"input of shape {tuple(x.shape)} does not match the converted network, which takes "
                f"[batch, {', '.join(map(str, self.input_shape))}]"
            )

    def run_network(self, x: torch.Tensor):
        """One pass through the rewritten graph, with errors from inside torch explained."""
        try:
            return self.network(x)
        except RuntimeError as error:
            expected = f"[batch, {', '.join(map(str, self.input_shape))}]" if self.input_shape else "the shape the CNN takes"
            weights = next((p.device for p in self.parameters()), x.device)
            raise InputShapeError(
                f"the converted network failed on an input of shape {tuple(x.shape)} on {x.device} (it expects "
                f"{expected} on {weights}): {error}"
            ) from error

    def reset(self) -> None:
        """Clear all neuron and pooling state (and the step counter of ``step``)."""
        self._t = 0
        for module in self.temporal_modules():
            module.reset()

    # -- execution -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        self.check_input(x)
        self.reset()
        if self.mode == "layer":
            self._configure(layer_mode=True)
            if self.encoder.is_time_invariant:
                out = self.run_network(x)
                if self.static_output:
                    return out
            else:
                out = self.run_network(self.encoder.sequence(x, self.T))
            return tree_map(lambda y: y.unflatten(0, (self.T, -1)).mean(0), out)
        self._configure(layer_mode=False)
        total = None
        for t in range(self.T):
            out = self.run_network(self.encoder.step(x, t, self.T))
            total = out if total is None else tree_map(torch.add, total, out)
        self.reset()
        return tree_map(lambda y: y / self.T, total)

    def step(self, x_t: torch.Tensor):
        """Run one time step on ``x_t`` (state kept from earlier calls until ``reset()``)."""
        self.check_input(x_t)
        self._configure(layer_mode=False)
        out = self.run_network(self.encoder.step(x_t, self._t, self.T))
        self._t += 1
        return out
