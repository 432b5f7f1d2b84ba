"""Remove dropout (an identity in evaluation) and identity modules."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..report import ConversionReport
from ._util import describe, finish, module_of, replace_with_input, where

DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
DROPOUT_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, torch.dropout}


def remove_dropout_and_identity(gm: fx.GraphModule, report: ConversionReport) -> fx.GraphModule:
    """Drop every dropout (module or functional) and ``nn.Identity`` call."""
    for node in list(gm.graph.nodes):
        module = module_of(gm, node)
        is_dropout = isinstance(module, DROPOUT_MODULES) or (node.op == "call_function" and node.target in DROPOUT_FUNCTIONS)
        if is_dropout or isinstance(module, nn.Identity):
            report.add(node.name, describe(gm, node), "(removed)", "dropped", where(node))
            replace_with_input(node)
    return finish(gm)
