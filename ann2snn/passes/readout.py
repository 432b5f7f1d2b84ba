"""The readout: a trailing softmax / log_softmax is taken out of the graph and kept as the output
head, which the time loop applies to the output averaged over T (so ``snn(x)`` returns what
``model(x)`` returns: probabilities or log-probabilities, not logits), and the last affine layer
is marked as the readout. The head is recorded in ``gm.meta["output_head"]`` as (kind, dim) pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..analysis import describe, module_of
from ..neurons import SpikingNeuron
from ..report import ConversionReport
from ._util import finish, replace_with_input, where

SOFTMAX_MODULES = (nn.Softmax, nn.LogSoftmax)
SOFTMAX_FUNCTIONS = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
SOFTMAX_METHODS = {"softmax", "log_softmax"}
AFFINE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: Ops that carry the readout unchanged in shape semantics (linear, so averaging commutes).
PASS_THROUGH_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "mean"}


def _is_softmax(gm: fx.GraphModule, node: fx.Node) -> bool:
    return isinstance(module_of(gm, node), SOFTMAX_MODULES) or (node.op == "call_function" and node.target in SOFTMAX_FUNCTIONS) or (node.op == "call_method" and node.target in SOFTMAX_METHODS)


def _last_affine(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """Walk back from the output through linear reshapes to the affine layer that feeds it."""
    while isinstance(node, fx.Node):
        module = module_of(gm, node)
        if isinstance(module, AFFINE_MODULES) or isinstance(module, SpikingNeuron):
            return node
        if node.op == "call_method" and node.target in PASS_THROUGH_METHODS or node.op == "call_function" and node.target in (torch.flatten, torch.squeeze):
            node = node.args[0]
            continue
        if isinstance(module, (nn.Flatten, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            node = node.args[0]
            continue
        return None
    return None


def _head(gm: fx.GraphModule, node: fx.Node) -> tuple[str, object]:
    """(kind, dim) of a softmax-like node: kind "softmax" or "log_softmax"."""
    module = module_of(gm, node)
    if module is not None:
        return ("log_softmax" if isinstance(module, nn.LogSoftmax) else "softmax"), module.dim
    name = node.target if isinstance(node.target, str) else node.target.__name__
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    return ("log_softmax" if "log_softmax" in name else "softmax"), dim


def mark_readout(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Move trailing softmax ops to the output head and record which layer is the non-spiking readout."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    result = output.args[0]
    head: list[tuple[str, object]] = []
    while isinstance(result, fx.Node) and _is_softmax(gm, result) and len(result.users) == 1:
        kind, dim = _head(gm, result)
        if not (dim is None or isinstance(dim, int)):
            break
        head.insert(0, (kind, dim))
        report.add(result.name, describe(gm, result), f"output head: {kind} of the output averaged over T", "head", where(result))
        source = result.args[0]
        replace_with_input(result)
        result = source
    gm.meta["output_head"] = head
    last = _last_affine(gm, result) if isinstance(result, fx.Node) else None
    if last is None:
        report.warn("no affine readout layer found at the output: the output is averaged over T as it is")
    elif isinstance(module_of(gm, last), SpikingNeuron):
        report.warn("the network ends with a ReLU: the output is the neuron's spike rate, averaged over T")
    else:
        report.add(last.name, describe(gm, last), "non-spiking readout, averaged over T", "readout", where(last))
    return finish(gm)
