"""Spiking neuron modules: the neuron models a ReLU can become, and the seam to add more.

Every model is a subclass of ``SpikingNeuron`` that registers itself under a name
(``class MyNeuron(SpikingNeuron, model="my-model")``); ``convert(model, neuron="my-model")`` then
uses it, and ``NEURON_MODELS`` lists them. A model defines its dynamics once, per time step, in
units of the threshold ``theta`` (``u = v / theta``), in ``step(current, u, beta)`` (by default
``charge``, ``fire`` and ``reset_membrane``)::

    u[t+1] = beta * u[t] + I[t] / theta     charge (``torch.addcmul``)
    z      = H(u[t+1] - 1)                  fire (Norse's ``threshold``: heaviside forward, surrogate backward)
    u      = reset(u, z)                    reset_membrane
    out    = z * theta

and its initial membrane (``initial``; half threshold unless output-space calibration set it per
channel). The input may carry a calibrated per-channel offset (``bias``, added to ``I``).
``beta = 1`` is the integrate-and-fire neuron that rate-coded conversion needs; ``beta < 1`` leaks.

The models here:

- ``"subtract"`` (``SpikingNeuron``, the default): reset by subtraction, ``u -= z``, which keeps
  the charge above threshold and so makes the spike count track the integrated input.
- ``"reset-to-zero"`` (``ResetToZeroNeuron``): ``u = 0`` after a spike, as most hardware and NIR
  do; it drops the excess charge, so rates fall below the ReLU's (more with coarser time steps).
- ``"norse"`` (``NorseLIFNeuron``): the step is Norse's own ``LIFBoxCell`` (subtractive reset),
  a submodule of the neuron, for users who want Norse modules in the converted graph; finite
  time constants only (Norse's box cell scales its input by ``1/tau``, so it has no IF limit).

The step is the reference; the fast paths are derived from the same pieces and tested against
it: the layer-mode inference loop (in place, over cache-sized batch slices) runs ``charge``,
``fire`` and the model's ``reset_membrane_`` (``inference_loop``), and the fused backward through
time (``bptt.SubtractResetSequence``) is written for subtractive reset (``fused_backward``).
A model whose step is not made of those pieces (``NorseLIFNeuron``) sets both to False and runs
its step in every regime.

Why the default integration is one line of torch rather than ``norse...lif_box_feed_forward_step``:
Norse's box-LIF computes ``v + dt*tau_mem_inv*(x + v_leak - v)``, which couples leak and input
gain, so ``beta = 1`` (IF) cannot be expressed at all and ``beta -> 1`` needs the input divided
by ``1 - beta``; its value reset also costs four tensor ops where the subtractive reset needs
one. The spike non-linearity and its surrogate gradient are Norse's (``threshold(x, method,
alpha)``). ``tests/test_neurons.py`` checks that the dynamics equal Norse's ``lif_box`` step
with ``reset_subtract`` and a rescaled input for every finite time constant.
"""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch
from torch import nn

with warnings.catch_warnings():  # Norse 1.1 scripts functions at import; torch deprecates torch.jit.script
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=Warning)
    from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
    from norse.torch.functional.reset import reset_subtract
    from norse.torch.functional.threshold import threshold as norse_threshold
    from norse.torch.module.lif_box import LIFBoxCell

from .bptt import FUSED_METHODS, SubtractResetSequence, charge_slice, divides_while_charging
from .errors import ConversionError
from .temporal import GatedMaxPool, TemporalModule
from .tiled_pool import average_pool_backward

#: Initial membrane potential in threshold units: half threshold, which centres the rounding error
#: of a rate-coded neuron (and is the half-step shift of ``ann2snn.qcfs.QCFS``).
HALF_THRESHOLD = 0.5

#: Layer mode runs each neuron's loop (inference, and the fused BPTT forward and backward) over
#: batch slices of about this many bytes per step (one example at least), so that a slice's
#: membrane and spikes stay in the core's cache over the steps of a chunk; the results are the
#: same bits as one whole-batch loop. See ``SpikingNeuron._spike_train_inference``, tools/bench.py.
SLICE_BYTES = 512 * 2**10

#: Time constant (in steps) that learn_tau starts from when ``tau=inf`` is asked for: an exact
#: IF neuron has no gradient for its decay, so learning starts from a nearly IF neuron.
LEARNABLE_IF_TAU = 1e4


def beta_from_tau(tau: float) -> float:
    """Per-step decay ``beta = 1 - 1/tau`` for a time constant in steps (``inf`` gives 1)."""
    if tau <= 1.0:
        raise ConversionError(f"tau={tau} is too small: the time constant must exceed 1 step (or be float('inf') for integrate-and-fire)")
    return 1.0 if math.isinf(tau) else 1.0 - 1.0 / tau


#: The neuron models by name, for ``convert(neuron=...)``: every subclass of ``SpikingNeuron``
#: declared with ``model="name"``.
NEURON_MODELS: dict[str, type["SpikingNeuron"]] = {}


class SpikingNeuron(TemporalModule):
    """A rate-coded stand-in for a ReLU (or a ReLU capped at ``cap``).

    Parameters and buffers belong to this module (so they are in ``parameters()``,
    ``state_dict()`` and moved by ``.to()``): ``threshold`` (buffer, scalar or per channel),
    ``bias`` (buffer, added to the input current; zero unless output-space calibration set it),
    ``initial`` (buffer, the starting membrane potential in threshold units), and either a fixed
    ``beta`` buffer or a learnable ``leak_logit`` parameter with ``beta = sigmoid(-leak_logit)``,
    which keeps the decay in (0, 1). ``levels``: set for a converted ``QCFS`` activation, whose
    learned clip is the threshold (calibration leaves it alone) and whose quantization analog
    mode reproduces.

    This class is the ``"subtract"`` model (reset by subtraction); see the module docstring for
    how a subclass defines another model.
    """

    #: How the membrane is reset after a spike ("subtract" or "zero"; NIR export records it).
    reset_mode = "subtract"
    #: Layer-mode inference runs the in-place loop built from ``charge``/``fire``/``reset_membrane_``.
    inference_loop = True
    #: Layer-mode training may run the fused backward through time (written for subtractive reset).
    fused_backward = True

    def __init_subclass__(cls, model: Optional[str] = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if model is not None:
            if model in NEURON_MODELS:
                raise ValueError(f"neuron model {model!r} is already defined by {NEURON_MODELS[model].__name__}")
            NEURON_MODELS[model] = cls
            cls.model_name = model
        # the fast paths are built from this class's pieces: a model that redefines a piece they
        # use runs its own step instead, unless it says otherwise
        own = vars(cls)
        redefines_reset_only_out_of_place = "reset_membrane" in own and "reset_membrane_" not in own
        if (any(name in own for name in ("charge", "fire", "step")) or redefines_reset_only_out_of_place) and "inference_loop" not in own:
            cls.inference_loop = False
        if any(name in own for name in ("charge", "fire", "step", "reset_membrane")) and "fused_backward" not in own:
            cls.fused_backward = False

    def __init__(
        self,
        *,
        tau: float = math.inf,
        learn_tau: bool = False,
        cap: Optional[float] = None,
        method: str = "super",
        alpha: float = 100.0,
        source: str = "relu",
    ) -> None:
        super().__init__()
        self.cap = cap
        self.method = method
        self.alpha = float(alpha)
        self.source = source
        self.learn_tau = learn_tau
        self.register_buffer("threshold", torch.tensor(1.0 if cap is None else min(1.0, cap)))
        self.register_buffer("bias", torch.tensor(0.0))
        self.register_buffer("initial", torch.tensor(HALF_THRESHOLD))
        self.levels: Optional[int] = None  # QCFS quantization levels; set: the threshold is fixed
        beta = beta_from_tau(tau)
        if learn_tau:
            if beta >= 1.0:
                beta = beta_from_tau(LEARNABLE_IF_TAU)
            self.leak_logit = nn.Parameter(torch.tensor(math.log((1 - beta) / beta)))
        else:
            self.register_buffer("fixed_beta", torch.tensor(beta))
        self.v: Optional[torch.Tensor] = None
        self.observer = None  # set by calibration: called with the analog activation
        self.channels: Optional[int] = None  # set by calibration
        self.fused_bptt = True  # False: plain autograd through each step (the reference)

    #: The name this model is registered under (``NEURON_MODELS``).
    model_name = "subtract"

    @classmethod
    def check_settings(cls, tau: float, learn_tau: bool) -> None:
        """Refuse, with ``ConversionError``, conversion settings this model cannot honour (checked
        when a ``ConversionConfig`` is made, before any work). Every setting suits this one."""

    # -- dynamics: the one definition of this model ---------------------------------------------
    def charge(self, u: torch.Tensor, current: torch.Tensor, beta: Optional[torch.Tensor]) -> torch.Tensor:
        """The membrane after integrating one step's ``current`` (threshold units); ``beta=None``: no leak.
        The leak is ``torch.addcmul`` (``beta * u + I``), the op the fast loops use, so every path
        rounds alike (on CPUs with fused multiply-add it rounds once, not twice)."""
        return current + u if beta is None else torch.addcmul(current, u, beta)

    def fire(self, u: torch.Tensor) -> torch.Tensor:
        """Spikes where the membrane exceeds the threshold, with Norse's surrogate gradient."""
        return norse_threshold(u - 1.0, self.method, self.alpha)

    def reset_membrane(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The membrane after the spikes ``z``: reset by subtraction."""
        return u - z

    def reset_membrane_(self, u: torch.Tensor, z: torch.Tensor) -> None:
        """``reset_membrane`` in place, without gradients (the fast loops)."""
        u.sub_(z)

    def step(self, current: torch.Tensor, u: torch.Tensor, beta: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step, differentiable (the reference every fast path is checked against):
        returns (spikes, membrane after the reset)."""
        u = self.charge(u, current, beta)
        z = self.fire(u)
        return z, self.reset_membrane(u, z)

    #: Layer-mode training runs each step of the fused backward through time as one compiled
    #: kernel (``compiled_steps``; set from ``SpikingNetwork.compiled_neurons``, off by default).
    compiled_bptt = False
    #: Layer mode may run the sequence in time chunks: the membrane (``v``) carries over.
    supports_time_chunks = True
    #: Set by the time loop (``SpikingNetwork.pool_static_input``, off by default): in layer mode,
    #: a neuron with a time-invariant input and a fused gated max pool runs on the max-pooled
    #: input even where ``_static_leaders`` cannot prove that exact (a leaky neuron), an
    #: approximation (see there).
    pool_static_input = False

    # -- parameters -------------------------------------------------------------------------
    @property
    def beta(self) -> torch.Tensor:
        """Per-step membrane decay in (0, 1]."""
        if self.learn_tau:
            return torch.sigmoid(-self.leak_logit)
        return self.fixed_beta

    @property
    def tau(self) -> torch.Tensor:
        """Membrane time constant in steps (``inf`` for integrate-and-fire)."""
        return 1.0 / (1.0 - self.beta.detach())

    def time_constants(self) -> list[nn.Parameter]:
        """The trainable parameter that sets the time constant (with ``learn_tau``), else none."""
        return [self.leak_logit] if self.learn_tau else []

    def make_tau_per_channel(self, channels: int) -> None:
        """Give every channel its own learnable time constant (starting from the layer's)."""
        if not self.learn_tau:
            raise ConversionError("per-channel time constants need learn_tau=True")
        self.leak_logit = nn.Parameter(self.leak_logit.detach().expand(channels).clone())

    def set_threshold(self, threshold: torch.Tensor) -> None:
        """Set the firing threshold (scalar, or one value per channel); capped rates stay capped."""
        threshold = threshold.detach().to(self.threshold.device, self.threshold.dtype)  # float64 networks stay float64
        if self.cap is not None:
            threshold = threshold.clamp(max=self.cap)
        if not torch.isfinite(threshold).all() or (threshold <= 0).any():
            raise ConversionError(f"{self.source}: threshold must be finite and positive, got {threshold}")
        self.threshold = threshold

    def set_correction(self, bias: Optional[torch.Tensor] = None, initial: Optional[torch.Tensor] = None) -> None:
        """Set the input offset (input units) and the initial membrane potential (threshold units),
        scalars or one value per channel; ``None`` leaves a value as it is."""
        for name, value in (("bias", bias), ("initial", initial)):
            if value is None:
                continue
            value = value.detach().to(self.threshold.device, self.threshold.dtype)
            if not torch.isfinite(value).all():
                raise ConversionError(f"{self.source}: {name} correction must be finite, got {value}")
            setattr(self, name, value)

    def clear_correction(self) -> None:
        """Back to no offset and the half-threshold start."""
        self.bias = torch.zeros((), device=self.threshold.device, dtype=self.threshold.dtype)
        self.initial = torch.full((), HALF_THRESHOLD, device=self.threshold.device, dtype=self.threshold.dtype)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Calibration state (threshold, bias, initial potential) is a scalar or one value per
        channel: take the shape the state dict has, so networks calibrated differently exchange weights."""
        for name in ("threshold", "bias", "initial"):
            value = state_dict.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(value, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _initial_state(self, current: torch.Tensor) -> torch.Tensor:
        """A fresh membrane shaped like ``current``, at the initial potential."""
        return self._broadcast(self.initial, current.dim()).expand_as(current).clone()

    @staticmethod
    def _slice_rows(state: torch.Tensor) -> int:
        """Examples per batch slice of the layer-mode loops: one step of a slice within ``SLICE_BYTES``."""
        per_example = max(1, state[0].numel() * state.element_size()) if state.dim() > 0 and state.shape[0] else 1
        return max(1, min(state.shape[0] if state.dim() else 1, SLICE_BYTES // per_example))

    def _start_state(self, current: torch.Tensor) -> torch.Tensor:
        """The membrane a layer-mode call starts from: where the previous time chunk left it
        (``chunked``), else a fresh one."""
        if self.chunked and self.v is not None:
            return self.v
        return self._initial_state(current)

    def _keep_state(self, u: torch.Tensor) -> None:
        """Hand the membrane after this call's last step to the next time chunk."""
        if self.chunked:
            self.v = u

    def _broadcast(self, value: torch.Tensor, ndim: int) -> torch.Tensor:
        """Shape a scalar or per-channel tensor to broadcast against [N, C, ...] activations."""
        if value.dim() == 0:
            return value
        return value.view(-1, *([1] * (ndim - 2)))

    def extra_repr(self) -> str:
        kind = "learnable LIF" if self.learn_tau else ("IF" if float(self.fixed_beta) == 1.0 else "LIF")
        cap = f", cap={self.cap}" if self.cap is not None else ""
        return f"{kind}, reset={self.reset_mode}, method={self.method!r}{cap}"

    # -- execution ----------------------------------------------------------------------------
    def reset(self) -> None:
        self.v = None

    def forward(self, x: torch.Tensor, pool: Optional[nn.Module] = None) -> torch.Tensor:
        """Spikes times the threshold for input ``x`` (the ReLU itself in analog mode). ``pool``:
        in layer mode, a gated max pool applied to each step's spikes inside the loop, or an
        average pool applied to each step's spikes times the threshold, so the unpooled spike
        train is never stored (the output is then the pooled one); paths without such a loop
        pool the train afterwards."""
        if self.analog:
            out = x.clamp(min=0.0) if self.cap is None else x.clamp(0.0, self.cap)
            if self.levels is not None:  # a converted QCFS: its quantization, as the CNN had it
                theta = self._broadcast(self.threshold, x.dim())
                out = torch.floor(out / theta * self.levels + HALF_THRESHOLD) / self.levels * theta
            if self.observer is not None:
                self.observer(out)
            return out
        theta = self._broadcast(self.threshold, x.dim())
        beta = None if (not self.learn_tau and float(self.fixed_beta) == 1.0) else self._broadcast(self.beta, x.dim())
        bias = self._broadcast(self.bias, x.dim()) if self.bias.dim() > 0 or float(self.bias) != 0.0 else None
        pool = pool if self.time_steps is not None else None
        if isinstance(pool, GatedMaxPool) and self.broadcast_input:
            # each window's largest input: exact for IF neurons (see _static_leaders), and for
            # every neuron with the pool_static_input approximation
            leaders = pool._pool(x) if self.pool_static_input else self._static_leaders(x, pool, beta, theta, bias)
            if leaders is not None:
                x, pool = leaders, None
        if self.time_steps is not None and not self.broadcast_input and self.inference_loop and not torch.is_grad_enabled():
            # layer-mode inference: the loop scales each slice of the input while it is in cache
            return self._spike_train_inference(x.unflatten(0, (self.time_steps, -1)).unbind(0), beta, pool, theta, bias, raw=True)
        if self.time_steps is not None and not self.broadcast_input and self._fused_bptt_applies(x, beta):
            # layer-mode training, default surrogate: the fused loop scales the input slice by slice
            return self._spike_train_fused(x.unflatten(0, (self.time_steps, -1)), self.time_steps, beta, pool, theta, theta, bias)
        if bias is not None:
            x = x + bias
        if self.time_steps is None:  # step mode: one tick, state kept between calls
            return self._step_once(x, beta, theta)
        current = x / theta
        steps = self.time_steps
        sequence = current if self.broadcast_input else current.unflatten(0, (steps, -1))  # [B, ...] or [T, B, ...]
        currents = [current] * steps if self.broadcast_input else sequence.unbind(0)
        if self._differentiable(current, beta) or not self.inference_loop:
            if self._fused_bptt_applies(current, beta):
                return self._spike_train_fused(sequence, steps, beta, pool, theta)
            if pool is not None and not isinstance(pool, GatedMaxPool):  # an average pool: after the reference loop
                return pool(self._spike_train(currents, beta, None) * theta)
            return self._spike_train(currents, beta, pool) * theta
        return self._spike_train_inference(currents, beta, pool, theta)

    def _static_leaders(self, x: torch.Tensor, pool: GatedMaxPool, beta: Optional[torch.Tensor], theta: torch.Tensor, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The max-pooled input ``x``, when running this neuron on it alone gives, bit for bit,
        what the gated ``pool`` gives on the spikes of every position: a layer-mode inference IF
        neuron (reset by subtraction, threshold above 0, initial potential in [0, 1], float32 or
        float64) whose input is the same at every step; else ``None``.

        Why it is exact. In threshold units a position's current is ``c = fl(fl(x + bias) / theta)``,
        non-decreasing in ``x``, so a window's largest input has its largest current; equal
        currents give equal spike trains. Take two positions with ``c1 > c2``. If ``c1 > 1`` the
        first fires at every step. If ``c2 <= 0`` the second never fires (its membrane stays at
        most 1). Otherwise both membranes stay in [0, 1]: a step charges to ``v = fl(u + c)`` and
        a spike subtracts 1 exactly (Sterbenz, ``v`` in (1, 2]). Then, at every step, either the
        first position has more spikes, or as many and a membrane at least as high. This holds at
        the start; with equal counts rounding is monotone, so the second cannot fire alone and
        the order of the membranes survives; when the first is one spike ahead and the second
        fires alone, the second's new membrane is ``fl(u2 + c2) - 1 <= c2 + eps/2``, while the
        first, whose membrane has been at least eps since its first spike (a stored value above 1
        is at least 1 + eps), reaches ``fl(u1 + c1) >= c1 + eps/2``, higher. So the largest input
        holds the window's largest running count at every step, and the increases of that count,
        which the gated pool emits, are its spikes. Overlapping and padded windows change nothing."""
        plain = type(self).reset_membrane_ is SpikingNeuron.reset_membrane_ and type(self)._spike_train_inference is SpikingNeuron._spike_train_inference
        if beta is not None or not plain or not self.inference_loop or x.dtype not in (torch.float32, torch.float64) or x.dim() != pool.dims + 2:
            return None  # (an input without its batch dimension is pooled as unbatched: windows would span channels)
        if self._differentiable(x, beta) or (torch.is_grad_enabled() and (theta.requires_grad or (bias is not None and bias.requires_grad))):
            return None
        if not (bool((self.threshold > 0).all()) and bool(((self.initial >= 0) & (self.initial <= 1)).all())):
            return None
        return pool._pool(x)

    def _step_once(self, x: torch.Tensor, beta: Optional[torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
        """Step mode: one step for the (offset) input ``x``, returning spikes times ``theta``.
        Without gradients it runs the same arithmetic without the surrogate's autograd function
        (``u > 1`` is Norse's ``heaviside(u - 1)`` bit for bit), an IF neuron charging with one
        ``addcdiv`` (``u + x / theta``: the bits of dividing first, as the layer-mode loops)."""
        plain = self.inference_loop and not self._differentiable(x, beta) and not theta.requires_grad
        if plain and self.v is not None and not self.v.requires_grad and divides_while_charging(x, beta, theta, self.v):
            u = torch.addcdiv(self.v, x, theta)
        else:
            current = x / theta
            if self.v is None:
                self.v = self._initial_state(current)
            if not plain or self.v.requires_grad:
                z, self.v = self.step(current, self.v, beta)
                return z * theta
            u = self.charge(self.v, current, beta)
        z = torch.gt(u, 1.0, out=torch.empty_like(u))
        self.reset_membrane_(u, z)
        self.v = u
        return z.mul_(theta)

    def _differentiable(self, current: torch.Tensor, beta: Optional[torch.Tensor]) -> bool:
        """Whether layer mode must record gradients (else it runs the in-place inference loop)."""
        carried = self.chunked and self.v is not None and self.v.requires_grad
        return torch.is_grad_enabled() and (current.requires_grad or carried or (beta is not None and beta.requires_grad))

    def _fused_bptt_applies(self, x: torch.Tensor, beta: Optional[torch.Tensor]) -> bool:
        return self.fused_backward and self.method in FUSED_METHODS and self.fused_bptt and self._differentiable(x, beta)

    def _spike_train_fused(
        self,
        sequence: torch.Tensor,
        steps: int,
        beta: Optional[torch.Tensor],
        pool: Optional[nn.Module],
        theta: torch.Tensor,
        input_theta: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Layer mode, differentiable, default surrogate: all steps in ``bptt.SubtractResetSequence``,
        returning the output, spikes times ``theta`` pooled by ``pool`` (with ``input_theta``,
        ``sequence`` is the layer's input, offset and scaled inside the loop). The loop scales
        the spikes while in cache (unless a gated max pool must see them unscaled), and runs an
        average pool with a slice-wise backward (``average_pool_backward``) on each step."""
        initial = self._start_state(sequence if self.broadcast_input else sequence[0])
        gated = isinstance(pool, GatedMaxPool)
        scale = theta if not gated and theta.dtype == sequence.dtype else None
        backward = average_pool_backward(pool) if pool is not None and not gated and scale is not None else None
        inside = (pool.forward, backward) if backward is not None else None
        spikes, final = SubtractResetSequence.apply(sequence, beta, steps, self.broadcast_input, initial, self._slice_rows(initial), input_theta, bias, scale, inside, self.compiled_bptt)
        self._keep_state(final)
        if gated:
            return pool.gate_sequence(spikes, pool.spike_bound(steps)).flatten(0, 1) * theta
        out = spikes.flatten(0, 1) if scale is not None else spikes.flatten(0, 1) * theta
        return out if pool is None or inside is not None else pool(out)

    def _spike_train(self, currents: list[torch.Tensor], beta: Optional[torch.Tensor], pool: Optional[GatedMaxPool]) -> torch.Tensor:
        """Layer mode through the model's ``step`` at every step (autograd through Norse's surrogate
        spike function when gradients are recorded; the reference the fast loops are checked against)."""
        u = self._start_state(currents[0])
        gate = pool.spike_gate(u, len(currents), differentiable=torch.is_grad_enabled()) if pool is not None else None
        spikes = []
        for current_t in currents:
            z, u = self.step(current_t, u, beta)
            spikes.append(gate(z) if gate is not None else z)
        self._keep_state(u)
        return torch.cat(spikes, 0)

    def _spike_train_inference(
        self, currents: list[torch.Tensor], beta: Optional[torch.Tensor], pool: Optional[nn.Module], theta: torch.Tensor, bias: Optional[torch.Tensor] = None, raw: bool = False
    ) -> torch.Tensor:
        """Layer mode without gradients: the same arithmetic in place, written into one buffer,
        returning the output (spikes times ``theta``). ``u > 1`` equals Norse's
        ``heaviside(u - 1)`` bit for bit (``u - 1`` is exact near 1).

        ``currents``: one per step, in threshold units, or with ``raw`` the layer's inputs, which
        the loop offsets by ``bias`` and divides by the threshold itself. The loop runs over
        batch slices of about ``SLICE_BYTES`` per step (all steps of one slice, then the next),
        so that a slice's membrane, current and gate state stay in cache from step to step;
        every element sees the same operations in the same order as in one whole-batch pass, so
        the result is identical. ``pool``: a gated max pool gating each step's spikes, or an
        average pool (any other module) pooling each step's spikes times ``theta``; the pooled
        steps are what is written."""
        u = self._start_state(currents[0])
        self._keep_state(u)  # updated in place below
        steps, batch = len(currents), u.shape[0]
        rows = self._slice_rows(u)
        gate = pool.spike_gate(u, steps, differentiable=False) if isinstance(pool, GatedMaxPool) else None
        if gate is not None and not getattr(gate, "batch_slices", False):  # a gate for the whole batch only
            rows = batch
        out = torch.empty((steps,) + tuple(u.shape), dtype=u.dtype, device=u.device) if pool is None else None  # pooled: shaped at the first step
        z_buffer = torch.empty_like(u[:rows]) if pool is not None else None
        current_buffer = torch.empty_like(u[:rows]) if raw else None
        scaling = theta if raw else None  # raw: as forward's (x + bias) / theta, one slice at a time
        divide = divides_while_charging(currents[0], beta, scaling, u)
        for start in range(0, batch, rows):
            part = slice(start, min(batch, start + rows))
            u_part = u[part]
            z = z_buffer[: u_part.shape[0]] if pool is not None else None
            scratch = current_buffer[: u_part.shape[0]] if raw else None
            for t in range(steps):
                charge_slice(u_part, currents[t][part], beta, u_part, scaling, bias, divide, scratch)  # in place
                spikes_t = torch.gt(u_part, 1.0, out=z if pool is not None else out[t, part])  # fire
                self.reset_membrane_(u_part, spikes_t)
                if pool is None:
                    out[t, part].mul_(theta)  # spikes times the threshold, while in cache
                    continue
                if gate is not None and out is not None and rows < batch:
                    gate(spikes_t, part, out=out[t, part])  # gated straight into the output
                else:
                    if gate is None:  # an average pool of the spikes times the threshold
                        pooled = pool.forward(spikes_t.mul_(theta))
                    else:
                        pooled = gate(spikes_t, part) if rows < batch else gate(spikes_t)
                    if out is None:
                        out = torch.empty((steps, batch) + tuple(pooled.shape[1:]), dtype=u.dtype, device=u.device)
                    out[t, part] = pooled
                if gate is not None:
                    out[t, part].mul_(theta)  # the gated spikes times the threshold
        return out.flatten(0, 1)


NEURON_MODELS[SpikingNeuron.model_name] = SpikingNeuron


class ResetToZeroNeuron(SpikingNeuron, model="reset-to-zero"):
    """The same neuron with reset to zero: the membrane forgets its charge above threshold after
    a spike (as NIR's ``v_reset = 0`` and most neuromorphic chips do). Rates then fall below the
    ReLU's, the more the coarser the time steps, so conversion is less exact than with
    subtraction; offered for hardware that resets this way. Training runs the plain autograd step
    (the fused backward is written for subtractive reset)."""

    reset_mode = "zero"
    inference_loop = True  # charge and fire are the default's; only the in-place reset differs

    def reset_membrane(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The membrane after the spikes ``z``: zero where a spike was emitted (Norse's
        ``reset_value`` with a zero reset potential, so the surrogate gradient flows through it)."""
        return (1.0 - z) * u

    def reset_membrane_(self, u: torch.Tensor, z: torch.Tensor) -> None:
        u.mul_(1.0 - z)


class SubtractiveBoxCell(LIFBoxCell):
    """Norse's ``LIFBoxCell`` (it is one) with subtractive reset, unit threshold, no leak
    potential and ``dt = 1``, whose state is plain data (``tau_mem_inv``, surrogate ``method``
    and ``alpha``): Norse's parameter tuple cannot be pickled, so the cell stores those three
    and rebuilds the tuple, and ``ann2snn.save`` can store it in its safe format."""

    def __init__(self, tau_mem_inv: float, method: str, alpha: float) -> None:
        super().__init__(self._box_parameters(tau_mem_inv, method, alpha), dt=1.0)

    @staticmethod
    def _box_parameters(tau_mem_inv: float, method: str, alpha: float) -> LIFBoxParameters:
        return LIFBoxParameters(
            tau_mem_inv=torch.as_tensor(tau_mem_inv), v_leak=torch.as_tensor(0.0), v_th=torch.as_tensor(1.0),
            v_reset=torch.as_tensor(0.0), method=method, alpha=alpha, reset_method=reset_subtract,
        )  # fmt: skip

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        for derived in ("p", "activation", "activation_sparse", "state_fallback"):
            state.pop(derived, None)
        state["box"] = (float(self.p.tau_mem_inv), self.p.method, float(self.p.alpha))
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        tau_mem_inv, method, alpha = state.pop("box")
        super().__setstate__(state)
        self.p = self._box_parameters(tau_mem_inv, method, alpha)
        self.activation, self.activation_sparse, self.state_fallback = lif_box_feed_forward_step, None, self.initial_state


class NorseLIFNeuron(SpikingNeuron, model="norse"):
    """A neuron whose time step is Norse's own ``norse.torch.LIFBoxCell`` (box LIF with
    ``reset_subtract``, unit threshold, ``dt = 1``; ``SubtractiveBoxCell``), kept as the submodule ``cell`` so Norse's
    tools see Norse modules in the converted graph. Norse's cell computes
    ``v + (1/tau) (i - v)``: fed ``i = tau * I`` it is ``beta v + I``, the default neuron's
    leaky dynamics (equal up to rounding; ``tests/test_neurons.py``). It has no
    integrate-and-fire limit and a fixed time constant: give a finite ``tau`` and no
    ``learn_tau``. Threshold, offset, initial potential and the ``spikes * theta`` output are
    the default neuron's, so calibration and correction apply unchanged."""

    @classmethod
    def check_settings(cls, tau: float, learn_tau: bool) -> None:
        if math.isinf(tau):
            raise ConversionError(
                "neuron='norse': Norse's LIF box cell scales its input by 1/tau, so it cannot be an integrate-and-fire "
                "neuron; give a finite time constant (for example tau=1000, nearly IF), or use neuron='subtract'"
            )
        if learn_tau:
            raise ConversionError("neuron='norse' has a fixed time constant (a parameter of Norse's cell): use learn_tau=False, or neuron='subtract' to learn tau")

    def __init__(self, *, tau: float = math.inf, learn_tau: bool = False, **kwargs) -> None:
        self.check_settings(tau, learn_tau)
        super().__init__(tau=tau, learn_tau=False, **kwargs)
        self.cell = SubtractiveBoxCell(1.0 - float(self.fixed_beta), self.method, self.alpha)

    def step(self, current: torch.Tensor, u: torch.Tensor, beta: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of Norse's cell, fed ``tau * current`` so that its leak-coupled input gain cancels."""
        z, state = self.cell(current / self.cell.p.tau_mem_inv, LIFBoxFeedForwardState(v=u))
        return z, state.v
