"""Fold BatchNorm into the convolution or linear layer before it."""

from __future__ import annotations

import copy
import warnings
from typing import Optional

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..analysis import describe, module_of
from ..errors import ConversionWarning
from ..report import ConversionReport
from ._util import finish, where

FOLDABLE = {nn.BatchNorm1d: (nn.Conv1d, nn.Linear), nn.BatchNorm2d: (nn.Conv2d,), nn.BatchNorm3d: (nn.Conv3d,)}


def unfoldable_reason(node: fx.Node, bn: nn.Module, producer: object, layer: Optional[nn.Module]) -> str:
    """Why a batch norm cannot be folded into the op before it ('' when it can)."""
    if not bn.track_running_stats:
        return "it tracks no running statistics (track_running_stats=False), so it normalises by each batch's own"
    if not isinstance(layer, FOLDABLE[type(bn)]):
        before = f"`{producer.name}`" if isinstance(producer, fx.Node) and producer.op != "placeholder" else "the network's input"
        kinds = " or ".join(cls.__name__ for cls in FOLDABLE[type(bn)])
        return f"it follows {before}, not a {kinds} layer"
    if len(producer.users) != 1:
        others = ", ".join(f"`{u.name}`" for u in producer.users if u is not node)
        return f"the output of `{producer.target}` is also used by {others}; fold it by hand or give that branch its own layer"
    return ""


def _warn(report: ConversionReport, message: str) -> None:
    """A warning in the report and through Python's ``warnings`` (``ConversionWarning``)."""
    report.warn(message)
    warnings.warn(message, ConversionWarning, stacklevel=4)


def fold_batchnorm(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Replace ``bn(layer(x))`` by ``layer'(x)`` with the normalisation folded into the weights.

    A batch norm that follows anything else, or whose layer output is used elsewhere too, stays
    (it is an affine map in evaluation mode); the report says so and a ``ConversionWarning`` says why.
    """
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if type(bn) not in FOLDABLE:
            continue
        producer = node.args[0] if node.args else None
        layer = module_of(gm, producer) if isinstance(producer, fx.Node) else None
        reason = unfoldable_reason(node, bn, producer, layer)
        if reason:
            report.add(node.name, describe(gm, node), "kept (an affine map in evaluation)", "carried", where(node))
            _warn(report, f"batch norm `{node.target}` ({where(node) or 'top level'}) could not be folded: {reason}; it stays an affine layer in the SNN (exact on rates, one more layer to run)")
            continue
        fuse = fuse_conv_bn_eval if isinstance(layer, nn.modules.conv._ConvNd) else fuse_linear_bn_eval
        fused = fuse(copy.deepcopy(layer).eval(), copy.deepcopy(bn).eval())
        gm.add_submodule(str(producer.target), fused)
        report.add(node.name, describe(gm, node), f"folded into `{producer.target}`", "folded", where(node))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
    return finish(gm)
