"""Analog islands that converge with T (``allow_analog=True``).

An op with no spiking equivalent that reads spiking layers (GroupNorm, LeakyReLU, GELU, a
product of two activations...) must see rates, not one step's spikes: a nonlinear op of spikes is
not the op of the rate, and its error would never shrink with T. So each such op ``f`` becomes an
island: a ``RateMean`` on each of its inputs that carry spikes (the running mean up to step ``t``)
and a ``RateIncrement`` after it (step ``t`` emits ``t*f(mean_t) - (t-1)*f(mean_{t-1})``), so the
time average of its outputs up to any ``t`` is ``f`` of its inputs' rates up to ``t``. Downstream
layers and neurons integrate those increments; a readout averages them to ``f(rates)``.

Ops on the input path (before any neuron) read the same input at every step under direct
encoding and stay as they are. Under a spiking encoder (rate, latency) the input itself is spikes,
so ops that read it become islands too (``step_varying``). Chained islands pass rates directly (no
increment-then-mean in between).
"""

from __future__ import annotations

import math

from torch import fx

from ..temporal_ops import RateIncrement, RateMean
from ..analysis import constant_like, split_static
from ._util import is_in_place, unique_name


def step_varying(gm: fx.GraphModule, encoded_input: bool) -> set[fx.Node]:
    """The nodes whose values change from step to step: those computed from a neuron's output and,
    when the input is encoded as spikes (``encoded_input``: rate or latency encoding), also those
    computed from the input alone. An analog op reading one of them must see rates (an island)."""
    static, dynamic = split_static(gm)
    return dynamic | static if encoded_input else dynamic


def make_island(gm: fx.GraphModule, node: fx.Node, dynamic: set[fx.Node], memo: dict, islands: dict[fx.Node, fx.Node]) -> fx.Node:
    """Wrap ``node`` (an analog op reading spiking values) into a rate island; returns the node that
    now carries its output (the increments). ``islands`` maps each island's increment node to the
    op node inside it, so that a following island reads the op's rates directly."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for value in list(dict.fromkeys(node.all_input_nodes)):
        if value in islands:
            node.replace_input_with(value, islands[value])  # f2(f1(rates)): no increments in between
        elif value in dynamic and not constant_like(value, memo):
            name = unique_name(gm, f"{node.name}_rate_in")
            gm.add_submodule(name, RateMean())
            with gm.graph.inserting_before(node):
                mean = gm.graph.call_module(name, (value,))
            mean.meta = dict(value.meta)
            node.replace_input_with(value, mean)
    name = unique_name(gm, f"{node.name}_rate_out")
    gm.add_submodule(name, RateIncrement())
    with gm.graph.inserting_after(node):
        increment = gm.graph.call_module(name, (node,))
    increment.meta = dict(node.meta)
    node.replace_all_uses_with(increment, delete_user_cb=lambda user: user is not increment)
    if is_in_place(node) and node.args and isinstance(node.args[0], fx.Node):
        source = node.args[0]  # later readers of the tensor the op changed in place read its result
        original = source.args[0] if source.op == "call_module" and isinstance(gm.get_submodule(str(source.target)), RateMean) else source
        original.replace_all_uses_with(increment, delete_user_cb=lambda user: user not in (source, node, increment) and order.get(user, math.inf) > order[node])
    islands[increment] = node
    dynamic.update((node, increment))
    return increment
