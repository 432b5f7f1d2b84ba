"""Refuse (or, with ``allow_analog``, keep and list) ops that have no spiking equivalent.

Supported ops are linear (so they act on spike trains as on rates) or bookkeeping: convolution,
linear, average pooling, reshapes, residual adds, concatenation, slicing, scalar scaling, and
the temporal modules the other passes inserted.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import ConversionError
from ..report import ConversionReport
from ..temporal import TemporalModule
from ._util import describe, finish, module_of, where

LINEAR_MODULES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d, nn.MaxPool1d, nn.MaxPool2d,
    TemporalModule,
)
LINEAR_FUNCTIONS = {
    operator.add, operator.sub, operator.neg, operator.getitem, torch.add, torch.sub, torch.cat,
    torch.concat, torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.transpose,
    torch.permute, torch.mean, torch.sum, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.pad, F.linear, F.conv1d, F.conv2d, getattr, torch.neg,
}
SCALAR_FUNCTIONS = {operator.mul, operator.truediv, operator.floordiv, torch.mul, torch.div}
LINEAR_METHODS = {
    "view", "reshape", "flatten", "size", "dim", "permute", "transpose", "contiguous", "squeeze",
    "unsqueeze", "mean", "sum", "add", "sub", "neg", "chunk", "split", "narrow", "view_as",
    "reshape_as", "expand", "expand_as", "to", "type_as", "float", "unflatten",
}
SCALAR_METHODS = {"mul", "div", "__mul__", "__truediv__"}


def constant_like(node: object, memo: dict) -> bool:
    """True for values that do not carry activations: constants, parameters (``get_attr``) and
    values computed only from tensor sizes (``x.size(0) * 4``)."""
    if not isinstance(node, fx.Node):
        return True
    if node not in memo:
        if node.op == "get_attr":
            memo[node] = True
        elif node.op == "call_method" and node.target in ("size", "dim"):
            memo[node] = True
        elif node.op == "call_function" and node.target is getattr:
            memo[node] = node.args[1] in ("shape", "ndim")
        elif node.op in ("call_function", "call_method") and node.target in (operator.getitem, *SCALAR_FUNCTIONS, *SCALAR_METHODS, operator.add, operator.sub):
            memo[node] = all(constant_like(a, memo) for a in node.all_input_nodes)
        else:
            memo[node] = False
    return memo[node]


def is_supported(gm: fx.GraphModule, node: fx.Node, memo: dict) -> bool:
    """Whether a node has an exact spiking (rate-coded) equivalent."""
    if node.op in ("placeholder", "output", "get_attr"):
        return True
    if node.op == "call_module":
        return isinstance(module_of(gm, node), LINEAR_MODULES)
    if node.target in SCALAR_FUNCTIONS or node.target in SCALAR_METHODS:
        tensors = [a for a in node.args if isinstance(a, fx.Node) and not constant_like(a, memo)]
        return len(tensors) <= 1
    if node.op == "call_function":
        return node.target in LINEAR_FUNCTIONS
    return node.target in LINEAR_METHODS


def check_supported(gm: fx.GraphModule, report: ConversionReport, allow_analog: bool) -> fx.GraphModule:
    """Raise ConversionError at the first unsupported op, or record each as analog."""
    memo: dict = {}
    for node in gm.graph.nodes:
        if is_supported(gm, node, memo):
            continue
        what = describe(gm, node)
        if not allow_analog:
            raise ConversionError(
                f"unsupported op {what} at node `{node.name}` ({where(node) or 'top level'}): it has no "
                "spiking equivalent. Pass allow_analog=True to keep it as an analog (non-spiking) layer, "
                "replace it with a ReLU, or make its module a leaf and allow_analog=True."
            )
        report.add(node.name, what, "kept analog (non-spiking)", "analog", where(node))
        report.warn(f"{what} at `{node.name}` stays analog: the network is not purely spiking")
    return finish(gm)
