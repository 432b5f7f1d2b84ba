"""Fold BatchNorm into the convolution or linear layer before it."""

from __future__ import annotations

import copy

from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..analysis import describe, module_of
from ..report import ConversionReport
from ._util import finish, where

FOLDABLE = {nn.BatchNorm1d: (nn.Conv1d, nn.Linear), nn.BatchNorm2d: (nn.Conv2d,), nn.BatchNorm3d: (nn.Conv3d,)}


def fold_batchnorm(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Replace ``bn(layer(x))`` by ``layer'(x)`` with the normalisation folded into the weights.

    A batch norm that follows anything else, or whose layer output is used elsewhere too, stays
    (it is an affine map in evaluation mode) and the report says so.
    """
    for node in list(gm.graph.nodes):
        bn = module_of(gm, node)
        if type(bn) not in FOLDABLE:
            continue
        producer = node.args[0] if node.args else None
        layer = module_of(gm, producer) if isinstance(producer, fx.Node) else None
        if not isinstance(layer, FOLDABLE[type(bn)]) or len(producer.users) != 1 or not bn.track_running_stats:
            report.add(node.name, describe(gm, node), "kept (an affine map in evaluation)", "carried", where(node))
            report.warn(f"batch norm `{node.target}` could not be folded (it does not directly follow a conv/linear layer used only by it)")
            continue
        fuse = fuse_conv_bn_eval if isinstance(layer, nn.modules.conv._ConvNd) else fuse_linear_bn_eval
        fused = fuse(copy.deepcopy(layer).eval(), copy.deepcopy(bn).eval())
        gm.add_submodule(str(producer.target), fused)
        report.add(node.name, describe(gm, node), f"folded into `{producer.target}`", "folded", where(node))
        node.replace_all_uses_with(producer)
        gm.graph.erase_node(node)
    return finish(gm)
