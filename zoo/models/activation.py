"""The activation a zoo model is trained with: ReLU, or QCFS for conversion-aware training."""

from torch import nn

import ann2snn

ACTIVATIONS = ("relu", "qcfs")


def make_activation(kind: str = "relu", levels: int = 8) -> nn.Module:
    """``nn.ReLU()``, or ``ann2snn.QCFS(levels)`` (its clip learned from 4.0), which ``ann2snn.convert``
    turns into neurons that reproduce it at ``T = levels`` steps."""
    if kind == "relu":
        return nn.ReLU()
    if kind == "qcfs":
        return ann2snn.QCFS(levels, threshold=4.0)
    raise ValueError(f"activation={kind!r} is not one of {ACTIVATIONS}")
