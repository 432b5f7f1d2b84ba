"""Fuse each spiking neuron with the pool (gated max or average) that alone reads it into one
``NeuronPool`` node.

Layer mode then runs the pool inside the neuron's loop, step by step, and the neuron's unpooled
spike train over all steps is never stored (see ``ann2snn.temporal.NeuronPool``, which also
says when the two run one after the other: analog and step mode, and observed neurons). The
neuron and the pool become submodules ``<fused>.neuron`` and ``<fused>.pool`` of a module named
after both; the report's entries name them so.
"""

from __future__ import annotations

from torch import fx

from ..analysis import neuron_pool_pairs
from ..report import ConversionReport
from ..temporal import NeuronPool
from ._util import finish, unique_name


def fuse_neuron_pools(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Replace every (neuron, pool) pair where the pool is the neuron's only reader by one call
    of a ``NeuronPool`` holding both (and the two nodes' names)."""
    for neuron_node, pool_node in neuron_pool_pairs(gm):
        neuron_name, pool_name = str(neuron_node.target), str(pool_node.target)
        name = unique_name(gm, f"{neuron_name}_{pool_name}".replace(".", "_"))
        gm.add_submodule(name, NeuronPool(gm.get_submodule(neuron_name), gm.get_submodule(pool_name), (neuron_node.name, pool_node.name)))
        with gm.graph.inserting_before(pool_node):
            fused = gm.graph.call_module(name, neuron_node.args, dict(neuron_node.kwargs))
        fused.meta = dict(neuron_node.meta)
        pool_node.replace_all_uses_with(fused)
        gm.graph.erase_node(pool_node)
        gm.graph.erase_node(neuron_node)
        report.rename_module(neuron_name, f"{name}.neuron")
        report.rename_module(pool_name, f"{name}.pool")
    return finish(gm)
