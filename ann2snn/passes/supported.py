"""Refuse (or, with ``allow_analog``, keep and list) ops that have no spiking equivalent.

Supported ops are linear or affine (so on spike trains they compute the map of the rates:
the time average of ``A z_t + b`` is ``A r + b``) or bookkeeping: convolution and transposed
convolution, linear layers, average pooling, upsampling and interpolation (every mode is a fixed
linear map of the input), padding (zero, constant, reflection, replication, circular), reshapes,
residual adds, concatenation, slicing, scaling by constants, and the temporal modules the other
passes inserted. The tables below are the registry: each entry says how the op is carried, and
``ann2snn.supported_ops`` renders them (with the other passes' tables) as the supported-ops table.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..analysis import constant_like, describe, module_of
from ..errors import ConversionError, ConversionWarning
from ..report import ConversionReport
from ..temporal import TemporalModule
from ..trace import EXPORTED_PROGRAM
from ._util import finish, where
from .pooling import INPUT_PATH as INPUT_PATH_MAX


@dataclass(frozen=True)
class Carried:
    """How a supported op is carried into the SNN. ``inputs``: "any" (linear jointly in every
    activation argument: add, cat), "one" (linear in one activation argument, the others must be
    constants such as weights: mul, matmul, F.conv1d) or "first" (only the first argument may be an
    activation: division)."""

    how: str
    inputs: str = "any"


_LINEAR = Carried("linear map, applied to each step's spikes (exact on rates)")
_AFFINE = Carried("affine map in evaluation, applied to each step (exact on rates)")
_POOL = Carried("average pooling: linear, applied to each step (exact on rates)")
_RESAMPLE = Carried("upsampling / interpolation: a fixed linear map of the input in every mode, applied to each step (exact on rates)")
_PAD = Carried("padding (zero, constant, reflection, replication, circular): affine, applied to each step (exact on rates)")
_SHAPE = Carried("reshaping / indexing / joining: moves values only (exact)")
_ARITH = Carried("addition / subtraction: linear (exact on rates)")
_SCALE = Carried("product with constants (weights, scalars): linear in the one activation (exact on rates)", "one")
_DIVIDE = Carried("division by a constant: linear (exact on rates)", "first")
_REDUCE = Carried("sum / mean over dimensions: linear (exact on rates)")
_INPUT_MAX = Carried("max pooling on the input path (before any neuron): computed on the encoded input")

CARRIED_MODULES: dict[type, Carried] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear), _LINEAR),
    **dict.fromkeys((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), Carried("transposed convolution: linear map, applied to each step (exact on rates)")),
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _POOL),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), Carried("batch norm that could not be folded: affine in evaluation (exact on rates)")),
    **dict.fromkeys((nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d), _RESAMPLE),
    **dict.fromkeys(
        (
            nn.ZeroPad1d,
            nn.ZeroPad2d,
            nn.ZeroPad3d,
            nn.ConstantPad1d,
            nn.ConstantPad2d,
            nn.ConstantPad3d,
            nn.ReflectionPad1d,
            nn.ReflectionPad2d,
            nn.ReflectionPad3d,
            nn.ReplicationPad1d,
            nn.ReplicationPad2d,
            nn.ReplicationPad3d,
            nn.CircularPad1d,
            nn.CircularPad2d,
            nn.CircularPad3d,
        ),
        _PAD,
    ),
    **dict.fromkeys((nn.Flatten, nn.Unflatten, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle, nn.Fold, nn.Unfold, nn.Identity), _SHAPE),
    **dict.fromkeys((nn.MaxPool1d, nn.MaxPool2d), _INPUT_MAX),
    TemporalModule: Carried("inserted by the compiler (gated max pool, time broadcast, rate averaging)"),
}
CARRIED_FUNCTIONS: dict[Callable, Carried] = {
    **dict.fromkeys((operator.add, operator.sub, operator.neg, operator.pos, torch.add, torch.sub, torch.subtract, torch.neg, torch.negative), _ARITH),
    **dict.fromkeys(
        (
            operator.getitem,
            getattr,
            torch.cat,
            torch.concat,
            torch.concatenate,
            torch.stack,
            torch.flatten,
            torch.reshape,
            torch.squeeze,
            torch.unsqueeze,
            torch.transpose,
            torch.swapaxes,
            torch.movedim,
            torch.permute,
            torch.t,
            torch.narrow,
            torch.select,
            torch.split,
            torch.chunk,
            torch.unbind,
            torch.roll,
            torch.flip,
            torch.tile,
            torch.repeat_interleave,
            torch.pixel_shuffle,
            torch.pixel_unshuffle,
            torch.channel_shuffle,
            torch.native_channel_shuffle,
            F.pixel_shuffle,
            F.pixel_unshuffle,
            F.channel_shuffle,
            F.fold,
            F.unfold,
            torch.clone,
            torch.detach,
        ),
        _SHAPE,
    ),
    **dict.fromkeys((torch.mean, torch.sum, torch.cumsum), _REDUCE),
    **dict.fromkeys((F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d), _POOL),
    **dict.fromkeys((F.interpolate, F.upsample, F.upsample_nearest, F.upsample_bilinear), _RESAMPLE),
    F.pad: _PAD,
    **dict.fromkeys(
        (
            F.linear,
            F.conv1d,
            F.conv2d,
            F.conv3d,
            F.conv_transpose1d,
            F.conv_transpose2d,
            F.conv_transpose3d,
            torch.conv1d,
            torch.conv2d,
            torch.conv3d,
            torch.conv_transpose1d,
            torch.conv_transpose2d,
            torch.conv_transpose3d,
            operator.matmul,
            torch.matmul,
            torch.mm,
            torch.bmm,
            torch.einsum,
        ),
        Carried("linear layer written as a function: linear in its one activation argument (exact on rates)", "one"),
    ),
    **dict.fromkeys((operator.mul, torch.mul, torch.multiply), _SCALE),
    **dict.fromkeys((operator.truediv, torch.div, torch.divide, torch.true_divide), _DIVIDE),
}
CARRIED_METHODS: dict[str, Carried] = {
    **dict.fromkeys(("add", "sub", "neg", "add_", "sub_", "__add__", "__radd__", "__sub__"), _ARITH),
    **dict.fromkeys(
        (
            "view",
            "reshape",
            "flatten",
            "size",
            "dim",
            "permute",
            "transpose",
            "contiguous",
            "squeeze",
            "unsqueeze",
            "chunk",
            "split",
            "narrow",
            "view_as",
            "reshape_as",
            "expand",
            "expand_as",
            "to",
            "type_as",
            "float",
            "double",
            "half",
            "unflatten",
            "repeat",
            "roll",
            "flip",
            "movedim",
            "swapaxes",
            "t",
            "select",
            "unbind",
            "tile",
            "repeat_interleave",
            "clone",
            "detach",
            "unfold",
            "__getitem__",
        ),
        _SHAPE,
    ),
    **dict.fromkeys(("mean", "sum", "cumsum"), _REDUCE),
    **dict.fromkeys(("mul", "mul_", "__mul__", "__rmul__", "matmul", "__matmul__"), _SCALE),
    **dict.fromkeys(("div", "div_", "__truediv__"), _DIVIDE),
}


def carried_rule(gm: fx.GraphModule, node: fx.Node) -> Carried | None:
    """The registry entry that carries a node, or None."""
    if node.op == "call_module":
        module = module_of(gm, node)
        return next((rule for cls, rule in CARRIED_MODULES.items() if isinstance(module, cls)), None)
    if node.op == "call_function":
        return CARRIED_FUNCTIONS.get(node.target) if _hashable(node.target) else None
    if node.op == "call_method":
        return CARRIED_METHODS.get(node.target)
    return None


def _hashable(target: object) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def is_supported(gm: fx.GraphModule, node: fx.Node, memo: dict) -> bool:
    """Whether a node has an exact spiking (rate-coded) equivalent."""
    if node.op in ("placeholder", "output", "get_attr") or constant_like(node, memo) or node.meta.get(INPUT_PATH_MAX):
        return True
    rule = carried_rule(gm, node)
    if rule is None:
        return False
    if node.op == "call_function" and node.target in (torch.div, torch.divide) and node.kwargs.get("rounding_mode") is not None:
        return False  # floor or trunc division is not linear
    if rule.inputs == "one":
        return sum(not constant_like(a, memo) for a in node.all_input_nodes) <= 1
    if rule.inputs == "first":
        first = node.args[0] if node.args else None
        return all(constant_like(a, memo) for a in node.all_input_nodes if a is not first)
    return True


#: The way out per kind of refused op (matched by lower-case substring of its kind), first match wins.
ADVICE: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("groupnorm", "layernorm", "instancenorm", "localresponsenorm", "group_norm", "layer_norm", "instance_norm", "normalize", "rmsnorm", "rms_norm"),
        "normalisation by statistics of the activations is not linear: use BatchNorm (folded into the layer before it), or allow_analog=True",
    ),
    (("softmax",), "a softmax inside the network (not at the output): allow_analog=True"),
    (
        (
            "sigmoid",
            "tanh",
            "hardswish",
            "silu",
            "gelu",
            "mish",
            "elu",
            "leaky_relu",
            "leakyrelu",
            "prelu",
            "softplus",
            "swish",
            "logsigmoid",
            "softsign",
            "hardshrink",
            "tanhshrink",
            "threshold",
            "rrelu",
            "exp",
            "log",
            "sqrt",
            "pow",
            "abs",
        ),
        "a nonlinearity other than ReLU: retrain with ReLU (or ReLU6 / clamp(min=0), which become capped neurons) for an exact conversion, or allow_analog=True",
    ),
    (("mul", "matmul", "bmm", "einsum", "div", "mm", "linear", "conv"), "a product of two activations (gating, attention, squeeze-excitation, dynamic weights) is not linear: allow_analog=True"),
    (("max", "min", "amin", "topk", "sort", "median", "argmax"), "an order statistic that is not a max pooling over spatial dimensions: allow_analog=True"),
)
DEFAULT_ADVICE = "no spiking equivalent: allow_analog=True, or replace it by a supported op, or make its module a leaf (leaf_modules=[...]) with allow_analog=True"
#: The same for a graph read back from a ``torch.export`` program: it has no modules to make leaves.
EXPORTED_DEFAULT_ADVICE = "no spiking equivalent: allow_analog=True, or replace it by a supported op in the original model and export it again"


def kind_of(gm: fx.GraphModule, node: fx.Node) -> str:
    """The op kind a refusal groups by: module class, ``F.function`` or ``Tensor.method``."""
    module = module_of(gm, node)
    return type(module).__name__ if module is not None else describe(gm, node)


def advice_for(kind: str, exported: bool = False) -> str:
    """The way out for a refused op kind; ``exported``: the graph came from a ``torch.export`` program."""
    parts = kind.lower().split(".")
    low = parts[-2] if exported and len(parts) > 2 else parts[-1]  # torch.sigmoid.default: the op, not its overload
    default = EXPORTED_DEFAULT_ADVICE if exported else DEFAULT_ADVICE
    return next((advice for keys, advice in ADVICE if any(key in low for key in keys)), default)


def from_exported_program(gm: fx.GraphModule) -> bool:
    """Whether ``gm`` was traced from a ``torch.export`` program (``trace`` marks it in ``gm.meta``)."""
    return bool(getattr(gm, "meta", {}).get(EXPORTED_PROGRAM))


def refusal_message(groups: dict[str, list[str]], exported: bool = False) -> str:
    """One message listing every refused op, grouped by kind, each with its node and source line."""
    count = sum(len(places) for places in groups.values())
    lines = [f"{count} op{'s' * (count != 1)} of the network ha{'ve' if count != 1 else 's'} no spiking equivalent ({len(groups)} kind{'s' * (len(groups) != 1)}; all are listed):"]
    for kind, places in groups.items():
        lines.append(f"- {kind} ({len(places)}): {advice_for(kind, exported)}")
        lines += [f"    {place}" for place in places]
    lines.append(
        "Way out for all of them at once: convert(..., allow_analog=True) keeps them as analog (non-spiking) "
        "layers that see their inputs' firing rates (their error then shrinks with T); or replace them in the "
        "model and retrain."
    )
    return "\n".join(lines)


def check_supported(gm: fx.GraphModule, report: ConversionReport, allow_analog: bool, encoded_input: bool = False) -> fx.GraphModule:
    """Raise one ConversionError listing every unsupported op (grouped by kind, each with node,
    module and source line), or, with ``allow_analog``, record each as analog: as a rate island
    where its input changes from step to step (after a neuron, or reading the input when
    ``encoded_input``, i.e. under rate or latency encoding)."""
    from .analog import make_island, step_varying  # analog imports this module

    memo: dict = {}
    refused: dict[str, list[str]] = {}
    dynamic = step_varying(gm, encoded_input)
    islands: dict[fx.Node, fx.Node] = {}
    analog: list[str] = []
    for node in list(gm.graph.nodes):
        if node in islands or is_supported(gm, node, memo):
            continue
        what = describe(gm, node)
        if not allow_analog:
            refused.setdefault(kind_of(gm, node), []).append(f"unsupported op {what} at node `{node.name}` ({where(node) or 'top level'})")
            continue
        if node in dynamic:
            make_island(gm, node, dynamic, memo, islands)
            after = "kept analog on firing rates: running mean of its spiking inputs in, increments out (converges with T)"
        else:
            after = "kept analog (non-spiking) on the input path"
        report.add(node.name, what, after, "analog", where(node))
        analog.append(f"{what} at `{node.name}`")
    if refused:
        raise ConversionError(refusal_message(refused, from_exported_program(gm)))
    if analog:
        message = f"the network is not purely spiking (allow_analog=True): each of these {len(analog)} op{'s' * (len(analog) > 1)} stays analog: {', '.join(analog)}"
        report.warn(message)
        warnings.warn(message, ConversionWarning, stacklevel=3)
    return finish(gm)
