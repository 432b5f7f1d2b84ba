"""Peer converters, run side by side with ann2snn on the same trained CNN, calibration batches and T.

- ``"SpikingJelly 99.9"``: SpikingJelly's ``ann2snn.Converter`` with its rate-coding recipe
  (``RateCodingRecipe(mode="99.9%")``): conv-BN fusion, a 99.9th-percentile scale per layer (per
  batch, averaged over the batches with momentum 0.1, SpikingJelly's own procedure), IF neurons
  with soft (subtractive) reset starting at 0, thresholds applied by scaling in and out.
- ``"sinabs"``: ``sinabs.from_model`` (``IAFSqueeze``: integrate-and-fire, single spike per step,
  subtractive reset, membrane bounded below at -threshold) on the BN-folded CNN, with data-based
  normalisation at the 99.9th percentile of each ReLU's output over all calibration examples
  (Rueckauer et al. 2017, what ``sinabs.utils.normalize_weights`` implements), applied with the
  bias scaled correctly: ``normalize_weights`` as shipped divides a layer's bias by that layer's
  factor only, not by the product with the layers before it, which breaks nets with biases.

Both peers match only ``nn.ReLU`` modules; zoo nets call ``F.relu``, so the CNN is first traced
and every functional ReLU made an ``nn.ReLU`` module (``relu_modules``): the peers get the same
network, not a silently unconverted one. Each peer runs T steps on direct (repeated analog) input
and its readout is averaged over T. Max pooling acts on spikes in both (their design).

The peers are optional (``pip install ann2snn[peers]``): ``missing(name)`` says why one cannot run.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

#: Method name (the ``method`` of a results row) -> the package it needs.
PEERS: dict[str, str] = {"SpikingJelly 99.9": "spikingjelly", "sinabs": "sinabs"}

#: Percentile of the activations that sets each layer's scale, for every peer.
PERCENTILE = 99.9

_RELU_FUNCTIONS = (F.relu, torch.relu, torch.nn.functional.relu_, torch.relu_)


def missing(name: str) -> Optional[str]:
    """None when peer ``name`` can run here, else a note saying why not (for logs and tables)."""
    if name not in PEERS:
        raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
    package = PEERS[name]
    if importlib.util.find_spec(package) is None:
        return f"{name}: skipped, {package} is not installed (pip install 'ann2snn[peers]')"
    return None


def version(name: str) -> str:
    """The installed version of peer ``name``'s package."""
    return importlib.metadata.version(PEERS[name])


def relu_modules(cnn: nn.Module) -> fx.GraphModule:
    """An fx copy of ``cnn`` (eval mode) in which every ReLU is an ``nn.ReLU`` module: ``F.relu``,
    ``torch.relu`` and ``x.relu()`` calls become modules ``relu_0``, ``relu_1``, ... (what both
    peers' converters look for); existing ``nn.ReLU`` modules are kept."""
    gm = fx.symbolic_trace(copy.deepcopy(cnn).eval())
    count = 0
    for node in list(gm.graph.nodes):
        functional = node.op == "call_function" and node.target in _RELU_FUNCTIONS
        method = node.op == "call_method" and node.target in ("relu", "relu_")
        if not (functional or method):
            continue
        name = f"relu_{count}"
        count += 1
        gm.add_submodule(name, nn.ReLU())
        with gm.graph.inserting_after(node):
            module_node = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(module_node)
        gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    if not any(isinstance(m, nn.ReLU) for m in gm.modules()):
        raise ValueError("the CNN has no ReLU: the peers convert ReLU activations only")
    return gm.eval()


class PeerSNN(nn.Module):
    """A peer's converted network run for ``T`` steps on direct (repeated) input; returns the
    readout averaged over the steps, shaped like the CNN's output. The state is reset before every
    forward, so each call is one independent presentation."""

    def __init__(self, net: nn.Module, T: int, run: Callable[[nn.Module, torch.Tensor, int], torch.Tensor], peer: str, settings: dict[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.T = T
        self._run = run
        self.peer = peer
        self.settings = settings

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self.net, x, self.T)


# -- SpikingJelly --------------------------------------------------------------------------------
def convert_spikingjelly(cnn: nn.Module, calibration: list[torch.Tensor], T: int, percentile: float = PERCENTILE, channel_wise: bool = False, half_threshold: bool = False) -> PeerSNN:
    """SpikingJelly's converter (``Converter(RateCodingRecipe(...))``) on ``calibration``; IF
    neurons with soft reset. ``channel_wise``/``half_threshold`` select its per-channel mode."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.ann2snn import Converter, RateCodingRecipe
    from spikingjelly.activation_based.ann2snn.recipes import rate_coding

    recipe = RateCodingRecipe(dataloader=calibration, mode=f"{percentile}%", channel_wise=channel_wise, half_threshold=half_threshold)
    quiet = rate_coding.tqdm
    rate_coding.tqdm = lambda iterable, *args, **kwargs: iterable  # its calibration loop draws a progress bar
    try:
        device = next(cnn.parameters()).device
        net = Converter(recipe, device=device).convert(relu_modules(cnn))
    finally:
        rate_coding.tqdm = quiet
    functional.set_step_mode(net, "m")  # multi-step: each stateless layer runs once on [T*B, ...]
    net.eval()

    def run(net: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
        functional.reset_net(net)
        out = net(x.unsqueeze(0).expand(T, *x.shape))
        functional.reset_net(net)
        return out.mean(0)

    settings = dict(mode=f"{percentile}%", channel_wise=channel_wise, half_threshold=half_threshold, neuron="IFNode(v_reset=None)", step_mode="m")
    return PeerSNN(net, T, run, "spikingjelly", settings)


# -- sinabs --------------------------------------------------------------------------------------
class _Scale(nn.Module):
    """Multiplies by a constant: the normalisation factors around each spiking layer."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def relu_percentiles(gm: nn.Module, calibration: list[torch.Tensor], percentile: float = PERCENTILE) -> dict[str, float]:
    """The ``percentile`` of each ``nn.ReLU`` module's output over all calibration examples."""
    outputs: dict[str, list[torch.Tensor]] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: outputs.setdefault(name, []).append(out.detach().cpu().flatten()))
        for name, module in gm.named_modules() if isinstance(module, nn.ReLU)
    ]  # fmt: skip
    device = next(gm.parameters()).device
    try:
        with torch.no_grad():
            for x in calibration:
                gm(x.to(device))
    finally:
        for handle in handles:
            handle.remove()
    scales = {name: float(np.percentile(torch.cat(chunks).numpy(), percentile)) for name, chunks in outputs.items()}
    return {name: s if s > 0 else 1.0 for name, s in scales.items()}  # a dead layer keeps threshold 1


def convert_sinabs(cnn: nn.Module, calibration: list[torch.Tensor], T: int, percentile: float = PERCENTILE, multi_spike: bool = False) -> PeerSNN:
    """``sinabs.from_model`` on the BN-folded CNN, normalised at ``percentile`` on ``calibration``:
    around each ReLU-turned-IAF layer with scale s, the input is divided by s and the spikes are
    multiplied by s, which equals Rueckauer's weight normalisation (W_l * s_(l-1) / s_l,
    b_l / s_l) folded into the weights, on any graph. ``multi_spike`` uses sinabs's default
    ``MultiSpike`` (several spikes per step) instead of single spikes."""
    import sinabs
    from sinabs.activation import MembraneSubtract, MultiSpike, SingleSpike
    from torch.fx.experimental.optimization import fuse

    gm = fuse(relu_modules(cnn))  # sinabs has no BN folding of its own
    scales = relu_percentiles(gm, calibration, percentile)
    for name, scale in scales.items():
        parent, _, leaf = name.rpartition(".")
        owner = gm.get_submodule(parent) if parent else gm
        setattr(owner, leaf, nn.Sequential(_Scale(1 / scale), nn.ReLU(), _Scale(scale)))
    network = sinabs.from_model(
        gm, spike_threshold=torch.tensor(1.0), spike_fn=MultiSpike if multi_spike else SingleSpike, reset_fn=MembraneSubtract(),
        min_v_mem=-1.0, num_timesteps=T,
    )  # fmt: skip
    net = network.spiking_model.eval()

    def run(net: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
        _clear_states(net)
        out = net(x.unsqueeze(1).expand(x.shape[0], T, *x.shape[1:]).reshape(x.shape[0] * T, *x.shape[1:]))
        _clear_states(net)
        return out.reshape(x.shape[0], T, *out.shape[1:]).mean(1)

    settings = dict(percentile=percentile, normalisation="per ReLU, bias-correct", spike_fn="MultiSpike" if multi_spike else "SingleSpike", reset="MembraneSubtract", min_v_mem=-1.0, scales=scales)
    return PeerSNN(net, T, run, "sinabs", settings)


def _clear_states(net: nn.Module) -> None:
    """Empty every sinabs state buffer, so the next forward starts from zero at its own batch size
    (sinabs would otherwise resample old states when the batch size changes)."""
    from sinabs.layers import StatefulLayer

    for module in net.modules():
        if isinstance(module, StatefulLayer):
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = buffer.new_zeros(0)


#: Method name -> converter(cnn, calibration, T).
CONVERTERS: dict[str, Callable[[nn.Module, list[torch.Tensor], int], PeerSNN]] = {
    "SpikingJelly 99.9": convert_spikingjelly,
    "sinabs": convert_sinabs,
}


def convert_peer(name: str, cnn: nn.Module, calibration: list[torch.Tensor], T: int) -> PeerSNN:
    """Convert ``cnn`` with peer ``name`` (a key of ``PEERS``); raises ImportError with the note
    when its package is missing."""
    note = missing(name)
    if note:
        raise ImportError(note)
    return CONVERTERS[name](cnn, calibration, T)


__all__ = ["PEERS", "PERCENTILE", "PeerSNN", "convert_peer", "convert_sinabs", "convert_spikingjelly", "missing", "relu_modules", "relu_percentiles", "version"]
