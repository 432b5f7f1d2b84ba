"""Spike recording and time-varying input.

``record(snn)`` is a context manager that records every spiking neuron's spike train while the
network runs, with forward hooks on its ``SpikingNeuron`` modules::

    with record(snn) as rec:
        y = snn(x)                      # or snn.step(x_t) calls
    rec.spikes["relu_neuron"]           # bool [T, batch, *neuron shape]
    rec.counts["relu_neuron"]           # spikes per neuron over the steps, [batch, *neuron shape]
    print(rec)                          # neurons, steps and firing rate per layer
    rec.raster("relu_neuron", example=0)   # [T, neurons]: one example's spike raster

``run_sequence(snn, x_seq)`` feeds a time-varying input ``x_seq`` of shape ``[T, batch, ...]``
(event data, or inputs you encoded yourself) one step at a time and returns the readout
averaged over the steps, or, with ``return_sequence=True``, each step's readout ``[T, batch,
...]``.

Both run the network in step mode (the whole network once per time step; the same outputs as
layer mode, which is faster but runs the steps of a layer at once, in time and batch chunks, so
its neurons' outputs do not come one step at a time).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from .analysis import graph_neurons
from .errors import ConversionError, InputShapeError
from .neurons import SpikingNeuron
from .timeloop import SpikingNetwork, input_layer, require_network


class SpikeRecord:
    """The spike trains of one recording, per neuron layer (the name of its module in
    ``snn.network``, in graph order).

    A recording holds one or more *runs*: a run is what happened between two resets of the
    network (one ``snn(x)`` call, or a stream of ``snn.step`` calls until ``snn.reset()``).
    ``spikes`` and ``counts`` join the runs along the batch dimension; ``runs`` keeps them apart.
    """

    def __init__(self, names: Sequence[str], keep_trains: bool, sources: Optional[dict[str, str]] = None) -> None:
        self.names = list(names)
        #: Per layer, the CNN op it came from (``SpikingNeuron.source``, e.g. "ReLU `features.2`").
        self.sources = dict(sources or {})
        self.keep_trains = keep_trains
        self._runs: list[dict[str, list[torch.Tensor]]] = []
        self._counts: list[dict[str, torch.Tensor]] = []
        self._steps: list[int] = []
        self._open = False

    # -- filled by the hooks -----------------------------------------------------------------
    def _new_run(self) -> None:
        self._open = False

    def _add(self, name: str, spikes: torch.Tensor) -> None:
        if not self._open or (self._counts[-1].get(name) is not None and self._counts[-1][name].shape != spikes.shape):
            self._runs.append({n: [] for n in self.names})
            self._counts.append({})
            self._steps.append(0)
            self._open = True
        counts = self._counts[-1]
        counts[name] = spikes.to(torch.float32) if name not in counts else counts[name] + spikes
        if self.keep_trains:
            self._runs[-1][name].append(spikes)
        if name == self.names[0]:
            self._steps[-1] += 1

    # -- results -------------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """The number of time steps of each run."""
        return list(self._steps)

    @property
    def runs(self) -> list[dict[str, torch.Tensor]]:
        """Each run's spike trains: name -> bool ``[T, batch, *neuron shape]``."""
        self._need_trains()
        return [{name: torch.stack(steps) for name, steps in run.items() if steps} for run in self._runs]

    @property
    def spikes(self) -> dict[str, torch.Tensor]:
        """name -> bool ``[T, batch, *neuron shape]``, the runs joined along the batch (they must
        have the same number of steps and neuron shapes; otherwise use ``runs``)."""
        self._need_trains()
        if len(set(self._steps)) > 1:
            raise ConversionError(f"the recorded runs have different numbers of steps ({sorted(set(self._steps))}): read them one by one from record.runs")
        runs = self.runs
        return {name: self._join([run[name] for run in runs if name in run], 1) for name in self.names if any(name in run for run in runs)}

    @property
    def counts(self) -> dict[str, torch.Tensor]:
        """name -> spikes per neuron over all steps of its run, ``[batch, *neuron shape]``, the
        runs joined along the batch."""
        return {name: self._join([c[name] for c in self._counts if name in c], 0) for name in self.names if any(name in c for c in self._counts)}

    def rates(self) -> dict[str, float]:
        """name -> firing rate: spikes per neuron per step, over every example and step recorded."""
        rates = {}
        for name in self.names:
            spikes = sum(float(c[name].sum()) for c in self._counts if name in c)
            size = sum(c[name].numel() * steps for c, steps in zip(self._counts, self._steps) if name in c)
            if size:
                rates[name] = spikes / size
        return rates

    def raster(self, name: str, example: int = 0, run: int = 0) -> torch.Tensor:
        """One example's spike raster in one layer: bool ``[T, neurons]`` (the neurons of that
        layer flattened, channel by channel)."""
        trains = self.runs[run]
        if name not in trains:
            raise KeyError(f"no neuron layer {name!r} was recorded; recorded: {', '.join(trains)}")
        return trains[name][:, example].flatten(1)

    def __str__(self) -> str:
        counts, rates = self.counts, self.rates()
        header = ("neuron layer", "neurons", "examples", "steps", "spikes per example", "firing rate")
        rows = [header]
        for name in self.names:
            if name in counts:
                c = counts[name]
                steps = ", ".join(str(s) for s in sorted(set(self._steps)))
                rows.append((name, str(c[0].numel()), str(c.shape[0]), steps, f"{float(c.sum()) / c.shape[0]:.1f}", f"{rates[name]:.4f}"))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def _need_trains(self) -> None:
        if not self.keep_trains:
            raise ConversionError("this recording kept spike counts only (record(snn, trains=False)): record with trains=True for spike trains")

    @staticmethod
    def _join(parts: list[torch.Tensor], dim: int) -> torch.Tensor:
        try:
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim)
        except RuntimeError as error:
            raise ConversionError(f"the recorded runs have different neuron shapes (inputs of different sizes?): read them one by one from record.runs ({error})") from error


def neuron_names(snn: SpikingNetwork) -> list[str]:
    """The spiking neurons' module paths in ``snn.network``, in graph order (a neuron fused with
    the gated max pool that reads it is ``<fused>.neuron``)."""
    return [name for name, _ in graph_neurons(snn.network)]


@contextmanager
def record(snn: SpikingNetwork, layers: Optional[Sequence[str]] = None, trains: bool = True) -> Iterator[SpikeRecord]:
    """Record the spikes of ``snn``'s neurons while the ``with`` block runs it.

    Args:
        snn: a network made by ``ann2snn.convert`` (or ``ann2snn.load``).
        layers: names of the neuron modules to record (default: all; ``neuron_names(snn)``
            lists them).
        trains: keep every step's spikes (``record.spikes``, ``record.raster``); ``False`` keeps
            only the spike counts per neuron (``record.counts``, ``record.rates()``), which
            needs memory for one step rather than all of them.

    The network runs in step mode inside the block (``snn.mode`` is restored afterwards); its
    outputs are the same as in layer mode. Spikes are stored as booleans on the device the
    network runs on, detached from autograd.
    """
    require_network(snn, "record")
    available = neuron_names(snn)
    names = list(available if layers is None else layers)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConversionError(f"no neuron layer named {', '.join(map(repr, unknown))}; the network's are {', '.join(available) or 'none'}")
    result = SpikeRecord(names, trains, {name: snn.network.get_submodule(name).source for name in names})

    def hook(name: str):
        def on_forward(module: SpikingNeuron, inputs: tuple, output: torch.Tensor) -> None:
            if not module.analog:  # calibration runs neurons as ReLUs: not spikes
                result._add(name, output.detach() != 0)

        return on_forward

    handles = [snn.network.get_submodule(name).register_forward_hook(hook(name)) for name in names]
    reset = snn.reset

    def reset_and_mark() -> None:
        reset()
        result._new_run()

    previous_mode = snn.mode
    snn.mode = "step"
    snn.reset = reset_and_mark  # an instance attribute: every reset starts a new run
    try:
        yield result
    finally:
        del snn.reset
        snn.mode = previous_mode
        for handle in handles:
            handle.remove()


def run_sequence(snn: SpikingNetwork, x_seq: torch.Tensor, return_sequence: bool = False, time_dim: int = 0):
    """Run ``snn`` on a time-varying input, one step per element of ``x_seq`` along ``time_dim``
    (default: ``[T, batch, ...]``), starting from a fresh state.

    Each step's input is fed to the network as it is, whatever encoder the network was converted
    with (the input is already encoded: event frames, spikes, or analog values that change over
    time). In layer mode (``snn.mode``, the default) all steps run at once, time folded into the
    batch and chunked as for ``snn(x)`` (``SpikingNetwork.sequence_readouts``); in step mode, one
    ``snn.step`` per step. Both give the same outputs (and gradients). The number of steps is ``x_seq``'s, not ``snn.T``; thresholds and corrections tuned
    for ``snn.T`` are used as they are.

    Returns the readout averaged over the steps, then passed through the network's output head
    (softmax / log-softmax, if the CNN ended in one), like ``snn(x)``; with
    ``return_sequence=True``, each step's readout through the output head, ``[T, batch, ...]``.
    """
    require_network(snn, "run_sequence")
    if not isinstance(x_seq, torch.Tensor) or x_seq.dim() < 2:
        raise InputShapeError(f"run_sequence() takes a tensor [T, batch, ...] (time along time_dim={time_dim}); got {_describe(x_seq)}")
    _check_time_dimension(snn, x_seq, time_dim)
    steps = x_seq.movedim(time_dim, 0)
    if steps.shape[0] == 0:
        raise InputShapeError("run_sequence(): the sequence has no time steps")
    if snn.mode == "layer":
        readouts = snn.sequence_readouts(steps)
    else:
        readouts = torch.stack(_step_readouts(snn, steps))
    if return_sequence:
        return torch.stack([_head(snn, y) for y in readouts.unbind(0)])
    return _head(snn, readouts.mean(0))


def _example_rank(snn: SpikingNetwork) -> Optional[int]:
    """How many dimensions one example has (``snn.input_shape``, else what the first layer's
    weights fix), if known."""
    if snn.input_shape is not None:
        return len(snn.input_shape)
    layer = input_layer(snn.network)
    return None if layer is None else layer.rank


def _check_time_dimension(snn: SpikingNetwork, x_seq: torch.Tensor, time_dim: int) -> None:
    """Refuse a sequence with the rank of one batch: it lacks the time dimension."""
    rank = _example_rank(snn)
    if rank is not None and x_seq.dim() == rank + 1:
        repeat = " or x.unsqueeze(0).expand(T, *x.shape) for T steps of the same input" if time_dim == 0 else ""
        shape = ", ".join(map(str, x_seq.shape))
        raise InputShapeError(
            f"run_sequence() takes a sequence [T, batch, ...] (time along time_dim={time_dim}), but x_seq [{shape}] has the rank of one batch "
            f"(the network takes {rank} dimension{'s' * (rank != 1)} per example): add the time dimension, e.g. x.unsqueeze({time_dim}) for one step"
            f"{repeat} (or run snn(x), which encodes x over snn.T steps)"
        )


def _step_readouts(snn: SpikingNetwork, steps: torch.Tensor) -> list[torch.Tensor]:
    """Step mode: one ``snn.step`` per step of ``steps``, passed through as given, from a fresh state."""
    encoder = snn.encoder.kind
    snn.encoder.kind = "direct"  # steps pass through as given
    outputs = []
    try:
        snn.reset()
        with snn.without_head():
            for x_t in steps.unbind(0):
                outputs.append(snn.step(x_t))
    finally:
        snn.reset()
        snn.encoder.kind = encoder
    return outputs


def _head(snn: SpikingNetwork, y: torch.Tensor) -> torch.Tensor:
    """The network's output head (a trailing softmax / log_softmax of the CNN)."""
    for kind, dim in snn.output_head:
        y = F.log_softmax(y, dim) if kind == "log_softmax" else F.softmax(y, dim)
    return y


def _describe(x: object) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def plot_raster(rec: SpikeRecord, path: str | os.PathLike, example: int = 0, run: int = 0, title: Optional[str] = None) -> None:
    """Write a spike raster of one example to ``path`` (PNG): one panel per neuron layer, time
    along x, the layer's neurons along y (at most 2,000 per layer, evenly spaced), black where a
    neuron spiked. Needs matplotlib (``pip install 'ann2snn[plot]'``)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(f"plot_raster() needs matplotlib, which is not installed ({error}): pip install 'ann2snn[plot]'", name=error.name) from None

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from .atomic import atomic_path

    trains = rec.runs[run]
    names = [name for name in rec.names if name in trains]
    if not names:
        raise ConversionError("nothing was recorded: run the network inside the record() block")
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 1.2 + 1.6 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        raster = trains[name][:, example].flatten(1).cpu()  # [T, neurons]
        shown = torch.linspace(0, raster.shape[1] - 1, min(raster.shape[1], 2000)).round().long().unique()
        image = raster[:, shown].T.float().numpy()  # [neurons, T]: black where a neuron spiked
        ax.imshow(image, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest", origin="lower")
        rate = float(raster.float().mean())
        ax.set_ylabel("neuron", fontsize=9)
        label = f"{rec.sources[name]} -> {name}" if name in rec.sources else name
        ax.set_title(f"{label}: {raster.shape[1]} neurons{'' if len(shown) == raster.shape[1] else f' ({len(shown)} shown)'}, rate {rate:.3f} spikes/neuron/step", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    steps = trains[names[0]].shape[0]
    axes[-1, 0].set_xlim(-0.5, steps - 0.5)
    axes[-1, 0].set_xlabel("time step", fontsize=9)
    figure.suptitle(title or f"spike raster, example {example}", fontsize=11)
    figure.tight_layout()
    try:
        target = os.fspath(path)
        with atomic_path(target) as tmp:
            figure.savefig(tmp, dpi=120, format="png")
    finally:
        plt.close(figure)
