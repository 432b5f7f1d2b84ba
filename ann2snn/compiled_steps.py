"""Compiled time steps for the fused backward through time (opt-in: ``snn.compiled_neurons = True``).

``bptt.SubtractResetSequence`` runs each step of a neuron as a handful of in-place tensor
operations, one pass over the layer's state each; on a CPU those passes, not the
convolutions, are most of a fine-tuning step's extra cost. Here one step's forward (charge,
fire, reset, scale) and one step's backward (surrogate slope, the gradients through the reset,
the input scaling and the leak) are each a single function that ``torch.compile`` (Inductor)
fuses into one loop over the state: the same arithmetic, read and written once per step.

Why it is opt-in: compiling costs tens of seconds in every new process (30-90 s measured here;
Inductor caches its C++ kernels on disk, which shortens it only somewhat), and the fused kernels round differently from the eager
operations (a multiply-add may round once), so a membrane can differ in its last bit and, rarely,
a spike at an exact tie can flip; the gradients agree to rounding. ``tests/test_compiled_steps.py``
checks both paths against each other.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import torch

from .errors import NeuronCompileError


def forward_step(
    u: torch.Tensor,
    current: torch.Tensor,
    beta: Optional[torch.Tensor],
    theta: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    scale: Optional[torch.Tensor],
    charged_out: torch.Tensor,
    spikes_out: torch.Tensor,
) -> None:
    """One step for a batch: charge the membrane ``u`` (threshold units) with ``current`` (the
    layer's input, offset by ``bias`` and divided by ``theta``, when ``theta`` is given), fire,
    reset by subtraction; writes the membrane before the spike decision into ``charged_out``,
    the spikes (times ``scale``) into ``spikes_out`` and the reset membrane into ``u``."""
    if theta is not None:
        current = (current if bias is None else current + bias) / theta
    charged = current + u if beta is None else torch.addcmul(current, u, beta)
    spikes = (charged > 1.0).to(charged.dtype)
    charged_out.copy_(charged)
    u.copy_(charged - spikes)
    spikes_out.copy_(spikes if scale is None else spikes * scale)


def backward_step(
    membrane: torch.Tensor,
    grad_spikes: torch.Tensor,
    grad_after_reset: torch.Tensor,
    scale: Optional[torch.Tensor],
    theta: Optional[torch.Tensor],
    beta: Optional[torch.Tensor],
    previous: Optional[torch.Tensor],
    previous_is_charged: bool,
    grad_beta: Optional[torch.Tensor],
    grad_current: torch.Tensor,
    accumulate_current: bool,
) -> None:
    """One step of the reverse loop of ``bptt.SubtractResetSequence.backward`` for a batch:
    from the membrane before the spike decision (``membrane``), the gradient of this step's
    output (``grad_spikes``, before the ``scale``) and of the membrane after its reset
    (``grad_after_reset``, updated in place to the previous step's), writes the gradient of the
    current into ``grad_current`` (added to it with ``accumulate_current``: a repeated current)
    and adds the leak's gradient into ``grad_beta`` (with ``previous``: the membrane after the
    previous reset, or, with ``previous_is_charged``, the previous membrane before its reset)."""
    slope = (membrane - 1.0).abs().add(1.0).pow(-2)
    grad_z = grad_spikes if scale is None else grad_spikes * scale
    grad_u = grad_after_reset + (grad_z - grad_after_reset) * slope
    grad_in = grad_u if theta is None else grad_u / theta
    if accumulate_current:
        grad_current.add_(grad_in)
    else:
        grad_current.copy_(grad_in)
    if beta is None:
        grad_after_reset.copy_(grad_u)
        return
    if grad_beta is not None and previous is not None:
        after = previous - (previous > 1.0).to(previous.dtype) if previous_is_charged else previous
        grad_beta.add_(grad_u * after)
    grad_after_reset.copy_(grad_u * beta)


#: Compilations allowed per step function: one per combination of ``None`` arguments, ranks and
#: dtypes, and a few for views at the start of their storage (dynamo specialises offsets 0 and 1).
#: Past torch's default (8) dynamo would run the step uncompiled; the limit is raised only while
#: a step is called, not for the user's own compiled code.
RECOMPILE_LIMIT = 64
#: The name of that setting in this torch (``cache_size_limit`` before torch 2.7).
_LIMIT_SETTING = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"


@functools.cache
def compiled(step: Callable) -> Callable:
    """``step`` compiled by ``torch.compile`` with dynamic shapes (not one compilation per batch size)."""
    kernel = torch.compile(step, dynamic=True)

    @functools.wraps(step)
    def run(*args):
        try:
            with torch._dynamo.config.patch(**{_LIMIT_SETTING: RECOMPILE_LIMIT}):
                return kernel(*args)
        except Exception as error:
            if type(error).__module__.startswith(("torch._dynamo", "torch._inductor")):
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise NeuronCompileError(
                    f"snn.compiled_neurons: torch.compile could not compile a neuron step ({first}); it needs a working "
                    "C++ compiler on CPU (Triton on GPU): set snn.compiled_neurons = False to train without it"
                ) from error
            raise

    return run
