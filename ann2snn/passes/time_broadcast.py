"""Mark the time-invariant part of the graph, so that layer mode computes it once.

Under direct encoding every step sees the same input, so every node that depends on the input
but on no neuron (the "static" prefix) is the same at every step. In layer mode it runs once on
``[B, ...]``; a neuron reading a static value integrates the same current every step
(``broadcast_input``), and a ``TimeBroadcast`` node repeats a static value over T wherever it
meets temporal values in any other op (a residual add from the input, say).
"""

from __future__ import annotations

from torch import fx

from ..analysis import module_of, split_static
from ..report import ConversionReport
from ..temporal import TemporalModule, TimeBroadcast
from ._util import finish, unique_name


def insert_time_broadcasts(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Flag neurons fed by static values and insert TimeBroadcast where static meets temporal."""
    static, dynamic = split_static(gm)
    for node in list(gm.graph.nodes):
        if node not in dynamic:
            continue
        module = module_of(gm, node)
        if isinstance(module, TemporalModule):
            module.static_source = node.args[0] in static
            continue
        for value in [i for i in node.all_input_nodes if i in static]:
            name = unique_name(gm, f"{value.name}_over_time")
            gm.add_submodule(name, TimeBroadcast())
            gm.get_submodule(name).static_source = True
            with gm.graph.inserting_before(node):
                repeated = gm.graph.call_module(name, (value,))
            node.replace_input_with(value, repeated)
    return finish(gm)
