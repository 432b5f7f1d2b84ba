"""Remove ops that are identities in evaluation: dropout (every variant, module or functional),
``nn.Identity`` and torchvision's stochastic depth (``StochasticDepth`` / ``stochastic_depth``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..analysis import describe, module_of
from ..report import ConversionReport
from ._util import arg, finish, replace_with_input, where

#: Every dropout module (subclasses of ``_DropoutNd`` included: user-defined variants too).
DROPOUT_MODULES = (nn.modules.dropout._DropoutNd,)
DROPOUT_FUNCTIONS = {
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.alpha_dropout,
    F.feature_alpha_dropout,
    torch.dropout,
    torch.dropout_,
    torch.alpha_dropout,
    torch.alpha_dropout_,
    torch.feature_dropout,
    torch.feature_dropout_,
    torch.feature_alpha_dropout,
    torch.feature_alpha_dropout_,
}
IDENTITY_MODULES = (nn.Identity,)
#: Modules matched by class name (their libraries are optional): identities in evaluation.
IDENTITY_MODULE_NAMES = {"StochasticDepth": "torchvision.ops"}
#: Functions matched by name and library, with the index and name of their ``training`` argument.
IDENTITY_FUNCTION_NAMES = {"stochastic_depth": ("torchvision.ops", 3, "training")}


def _named_identity_module(module: object) -> bool:
    owner = IDENTITY_MODULE_NAMES.get(type(module).__name__)
    return owner is not None and type(module).__module__.startswith(owner)


def _named_identity_function(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    spec = IDENTITY_FUNCTION_NAMES.get(getattr(node.target, "__name__", ""))
    if spec is None or not (getattr(node.target, "__module__", "") or "").startswith(spec[0]):
        return False
    return arg(node, spec[1], spec[2], True) is False


def is_identity_in_eval(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a node is dropout, an identity module or stochastic depth (all identities in eval)."""
    module = module_of(gm, node)
    if module is not None:
        return isinstance(module, DROPOUT_MODULES + IDENTITY_MODULES) or _named_identity_module(module)
    if node.op == "call_function" and node.target in DROPOUT_FUNCTIONS:
        return True
    return _named_identity_function(node)


def remove_dropout_and_identity(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Drop every dropout (module or functional), identity module and stochastic depth call."""
    for node in list(gm.graph.nodes):
        if is_identity_in_eval(gm, node) and node.args and isinstance(node.args[0], fx.Node):
            report.add(node.name, describe(gm, node), "(removed: an identity in evaluation)", "dropped", where(node))
            replace_with_input(node)
    return finish(gm)
