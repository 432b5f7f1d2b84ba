"""A fused backpropagation-through-time for the default neuron (SuperSpike surrogate).

Autograd through T separate steps stores and revisits every intermediate tensor; this
``autograd.Function`` runs the T steps in place and differentiates them in one reverse loop,
storing only the membrane before each spike decision. It computes exactly what autograd computes
through ``SpikingNeuron.step`` (subtractive reset) with Norse's ``super`` surrogate, whose derivative is
``1 / (|u - 1| + 1)^2`` (Norse 1.1.0 ignores ``alpha`` for it), including the gradient through
the reset; ``tests/test_neurons.py`` checks the two against each other.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from . import compiled_steps
from .tiled_pool import PoolBackward

#: The surrogate methods this fused path implements.
FUSED_METHODS = ("super",)


def _superspike_slope(distance: torch.Tensor) -> torch.Tensor:
    """The surrogate's derivative ``1 / (|u - 1| + 1)^2``, in place, from ``distance = u - 1``."""
    return distance.abs_().add_(1.0).pow_(-2)


class SubtractResetSequence(torch.autograd.Function):
    """Spikes [T, ...] of a (leaky) integrate-and-fire neuron with subtractive reset, in threshold
    units, from currents [T, ...] (or one [...] current repeated T times), starting at the membrane
    ``initial`` (shaped like one step's current); returns ``(spikes, final)``, ``final`` the
    membrane after the last reset. Both ``initial`` and ``final`` are differentiable, so a
    sequence run in time chunks (each chunk starting from the previous chunk's ``final``) has
    the gradients of one run over all steps."""

    @staticmethod
    def forward(
        ctx,
        current: torch.Tensor,
        beta: Optional[torch.Tensor],
        steps: int,
        repeated: bool,
        initial: torch.Tensor,
        rows: int = 0,
        theta: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        scale: Optional[torch.Tensor] = None,
        pool: Optional[tuple[Callable[[torch.Tensor], torch.Tensor], PoolBackward]] = None,
        compiled: bool = False,
    ):
        """``rows``: examples per batch slice (0: the whole batch). The loops run over all steps of
        one slice, then the next, so that a slice's tensors stay in cache; every element sees the
        same operations in the same order either way. With ``theta`` (and ``bias``; neither is
        differentiated), ``current`` is the layer's input and the current is ``(current + bias) /
        theta``, computed (and differentiated) slice by slice in the same loops. With ``scale``
        (not differentiated), the spikes are returned multiplied by it (the neuron's output,
        spikes times its threshold), the product formed, and differentiated, in the same loops:
        the same bits as multiplying afterwards, without another pass over the whole sequence.
        With ``pool`` (``(forward, backward)`` of an average pool, ``tiled_pool.average_pool_backward``;
        needs ``scale``), each step's scaled spikes are pooled in the same loops and the pooled
        steps returned: the unpooled spike train is never stored, and the pool is differentiated
        slice by slice in the reverse loop, the same bits as pooling afterwards. ``compiled``: each
        step (forward and backward) runs as one compiled kernel over the whole batch
        (``compiled_steps``: equal up to rounding, not bit for bit)."""
        if repeated and theta is not None:
            raise ValueError("a repeated current is scaled once by the caller, not per step")
        if pool is not None and scale is None:
            raise ValueError("an average pool inside the loop needs the spikes scaled in it (scale=)")
        shape = current.shape if repeated else current.shape[1:]
        u = initial.to(current.dtype).clone()
        membranes = torch.empty((steps, *shape), dtype=current.dtype, device=current.device)
        if compiled:
            spikes = _compiled_forward(u, current, repeated, membranes, beta, theta, bias, scale, pool[0] if pool is not None else None)
        else:
            spikes = torch.empty_like(membranes) if pool is None else None  # pooled: shaped at the first step
            spike_buffer = torch.empty_like(u[: rows or shape[0]]) if pool is not None else None
            divide = divides_while_charging(current, beta, theta, u)
            buffer = torch.empty_like(u[: rows or shape[0]]) if theta is not None and not (divide and bias is None) else None
            for part in _slices(shape[0], rows):
                u_part = u[part]
                scratch = buffer[: u_part.shape[0]] if buffer is not None else None
                for t in range(steps):
                    current_t = current[part] if repeated else current[t, part]
                    charged = membranes[t, part]  # the membrane before the spike decision, written where it is kept
                    charge_slice(u_part, current_t, beta, charged, theta, bias, divide, scratch)
                    z = spikes[t, part] if pool is None else spike_buffer[: u_part.shape[0]]
                    torch.gt(charged, 1.0, out=z)
                    torch.sub(charged, z, out=u_part)
                    if scale is not None:
                        z.mul_(scale)
                    if pool is not None:
                        pooled = pool[0](z)
                        if spikes is None:
                            spikes = torch.empty((steps, shape[0], *pooled.shape[1:]), dtype=pooled.dtype, device=pooled.device)
                        spikes[t, part] = pooled
        ctx.save_for_backward(membranes, beta, initial, theta, scale)
        ctx.repeated, ctx.rows, ctx.pool_backward = repeated, rows, pool[1] if pool is not None else None
        ctx.compiled = compiled
        ctx.initial_dtype = initial.dtype
        return spikes, u

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor, grad_final: torch.Tensor):
        membranes, beta, initial, theta, scale = ctx.saved_tensors
        steps = membranes.shape[0]
        grad_current = torch.zeros_like(membranes[0]) if ctx.repeated else torch.empty_like(membranes)
        grad_beta = torch.zeros_like(membranes[0]) if beta is not None and ctx.needs_input_grad[1] else None
        if ctx.compiled:
            grad_start = _compiled_backward(ctx, membranes, grad_spikes, grad_final, beta, initial, theta, scale, grad_current, grad_beta)
        else:
            grad_start = torch.empty_like(membranes[0])  # dL/du'_0 per element
            rows = ctx.rows or membranes.shape[1]
            # scratch for one slice: the surrogate's slope, two for dL/du_t and dL/du'_t in turn, and u'_{t-1}
            slope_buffer, work, spare, before = (torch.empty_like(membranes[0, :rows]) for _ in range(4))
            for part in _slices(membranes.shape[1], ctx.rows):
                n = part.stop - part.start
                slope = slope_buffer[:n]
                grad_after_reset = grad_final[part].clone()  # dL/du'_t, from step t + 1 (after the last step: from the next chunk)
                for t in range(steps - 1, -1, -1):
                    _superspike_slope(torch.sub(membranes[t, part], 1.0, out=slope))
                    if ctx.pool_backward is not None:  # through the pool, then the scaling
                        grad_z = ctx.pool_backward(grad_spikes[t, part], membranes[t, part], work[:n]).mul_(scale)
                    else:
                        grad_z = grad_spikes[t, part] if scale is None else torch.mul(grad_spikes[t, part], scale, out=work[:n])
                    grad_u = torch.sub(grad_z, grad_after_reset, out=work[:n])  # dL/dz_t: the spike also lowers u' = u - z
                    if ctx.repeated:
                        torch.addcmul(grad_after_reset, grad_u, slope, out=grad_u)
                        grad_current[part].add_(grad_u)
                    elif theta is None:
                        grad_u = torch.addcmul(grad_after_reset, grad_u, slope, out=grad_current[t, part])
                    else:
                        torch.addcmul(grad_after_reset, grad_u, slope, out=grad_u)
                        torch.div(grad_u, theta, out=grad_current[t, part])  # through (x + bias) / theta
                    if beta is None:
                        grad_after_reset = grad_u
                        work, spare = spare, work  # the next step's dL/du_t must not overwrite this one
                    else:
                        if grad_beta is not None:
                            grad_beta[part].addcmul_(grad_u, _after_reset(membranes[t - 1, part], before[:n]) if t > 0 else initial[part])
                        grad_after_reset = torch.mul(grad_u, beta, out=spare[:n])
                grad_start[part] = grad_after_reset
        if grad_beta is not None:
            grad_beta = _sum_to(grad_beta, beta.shape)
        grad_initial = None
        if ctx.needs_input_grad[4]:  # the membrane a previous chunk handed over
            grad_initial = grad_start if grad_start.shape == initial.shape else _sum_to(grad_start, initial.shape)
            grad_initial = grad_initial.to(ctx.initial_dtype)
        return grad_current, grad_beta, None, None, grad_initial, None, None, None, None, None, None


def _compiled_forward(u, current, repeated, membranes, beta, theta, bias, scale, pool) -> torch.Tensor:
    """The loop of ``SubtractResetSequence.forward`` with one compiled kernel per step
    (``compiled_steps.forward_step``) over the whole batch, writing ``membranes`` and ``u``;
    returns the spikes (pooled by ``pool``, an average pool's forward, when given)."""
    step = compiled_steps.compiled(compiled_steps.forward_step)
    steps = membranes.shape[0]
    spikes = torch.empty_like(membranes) if pool is None else None  # pooled: shaped at the first step
    spike_buffer = torch.empty_like(u) if pool is not None else None
    for t in range(steps):
        z = spikes[t] if pool is None else spike_buffer
        step(u, *_detached(current if repeated else current[t], beta, theta, bias, scale), membranes[t], z)
        if pool is not None:
            pooled = pool(z)
            if spikes is None:
                spikes = torch.empty((steps, *pooled.shape), dtype=pooled.dtype, device=pooled.device)
            spikes[t] = pooled
    return spikes


def _compiled_backward(ctx, membranes, grad_spikes, grad_final, beta, initial, theta, scale, grad_current, grad_beta) -> torch.Tensor:
    """The reverse loop of ``SubtractResetSequence.backward`` with one compiled kernel per step
    (``compiled_steps.backward_step``) over the whole batch; returns dL/du'_0."""
    step = compiled_steps.compiled(compiled_steps.backward_step)
    beta, initial, theta, scale = _detached(beta, initial, theta, scale)
    grad_after_reset = grad_final.clone()
    work = torch.empty_like(membranes[0]) if ctx.pool_backward is not None else None
    for t in range(membranes.shape[0] - 1, -1, -1):
        grad_z = ctx.pool_backward(grad_spikes[t], membranes[t], work) if ctx.pool_backward is not None else grad_spikes[t]
        previous = membranes[t - 1] if t > 0 else initial
        step(membranes[t], grad_z, grad_after_reset, scale, theta, beta, previous, t > 0, grad_beta, grad_current if ctx.repeated else grad_current[t], ctx.repeated)
    return grad_after_reset


def _detached(*tensors: Optional[torch.Tensor]) -> list[Optional[torch.Tensor]]:
    """The tensors without their autograd history (a compiled step is specialised on it)."""
    return [None if tensor is None else tensor.detach() for tensor in tensors]


def divides_while_charging(current: torch.Tensor, beta: Optional[torch.Tensor], theta: Optional[torch.Tensor], u: torch.Tensor) -> bool:
    """Whether ``charge_slice`` adds ``x / theta`` to the membrane in one op (``addcdiv``, the bits
    of dividing first): an IF neuron given its layer's input, everything of one dtype."""
    return theta is not None and beta is None and current.dtype == theta.dtype == u.dtype


def charge_slice(
    u: torch.Tensor,
    current: torch.Tensor,
    beta: Optional[torch.Tensor],
    out: torch.Tensor,
    theta: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    divide: bool = False,
    buffer: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``out = beta * u + I`` (``u + I`` without leak) for one batch slice, the charge of the fast
    loops (``out`` may be ``u``): ``I`` is ``current``, or with ``theta`` the layer input's
    ``(current + bias) / theta``, formed in ``buffer`` (``divide``: see ``divides_while_charging``)."""
    if theta is not None and bias is not None:
        current = torch.add(current, bias, out=buffer)
    if theta is not None and not divide:
        current = torch.div(current, theta, out=buffer)
    if divide:
        return torch.addcdiv(u, current, theta, out=out)
    if beta is None:
        return torch.add(u, current, out=out)
    return torch.addcmul(current, u, beta, out=out)  # beta * u + I in one pass


def _after_reset(membrane: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The membrane after the reset, ``u - (u > 1)``, recomputed into ``out`` as the forward loop computed it."""
    return torch.sub(membrane, torch.gt(membrane, 1.0, out=out), out=out)


def _slices(batch: int, rows: int) -> list[slice]:
    """Consecutive slices of ``rows`` examples (one slice of all when ``rows`` is 0)."""
    rows = batch if rows <= 0 else rows
    return [slice(start, min(batch, start + rows)) for start in range(0, batch, rows)]


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Reduce a gradient to a broadcast parameter's shape (scalar, or [C, 1, ...] per channel)."""
    if len(shape) == 0:
        return grad.sum()
    lead = grad.dim() - len(shape)
    dims = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
    return grad.sum(dim=dims, keepdim=True).reshape(shape)
