"""The supported-ops table, generated from the passes' own registries so that it cannot drift.

``python -m ann2snn.supported_ops`` prints it as markdown (``docs/supported_ops.md`` is its
output); ``rows()`` returns it as data: (op, how it converts, exactness, NIR export).
"""

from __future__ import annotations

import operator
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .neurons import SpikingNeuron
from .passes import cleanup, fold_bn, pooling, readout, relu, supported
from .temporal import TemporalModule

#: What ``ann2snn.nir_export`` writes as NIR nodes (everything else is refused by the export).
NIR_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten)
NIR_FUNCTIONS = {operator.add, torch.add, torch.flatten, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d}
NIR_METHODS = {"flatten", "view", "reshape"}

EXACT = "exact in the rate limit"
#: ONNX ops that tests/test_onnx_frontend.py imports and converts (zoo M5, torchvision resnet18, an audio CNN).
ONNX_TESTED = ("Conv", "Gemm", "Relu", "MaxPool", "GlobalAveragePool", "GlobalMaxPool (1-D and 2-D)", "Add", "Flatten", "LogSoftmax", "Identity", "BatchNormalization (folded by the exporter)")
Row = tuple[str, str, str, str]


def function_name(function: Callable) -> str:
    """How users write a function: ``F.conv1d``, ``torch.cat``, ``operator.add``."""
    owner = getattr(function, "__module__", None) or ""
    name = getattr(function, "__name__", str(function))
    if owner.startswith("torch.nn.functional") or owner == "torch._C._nn" or function in vars(F).values() and getattr(F, name, None) is function:
        return f"F.{name}"
    if owner in ("_operator", "operator"):
        return f"operator.{name}"
    if owner == "builtins":
        return name
    if owner == "torch" or owner.startswith("torch.") or getattr(torch, name, None) is function:
        return f"torch.{name}"
    return f"{owner.split('.')[0]}.{name}"


def _nir(kind: str, target: object) -> str:
    if kind == "module":
        return "yes" if isinstance(target, type) and issubclass(target, NIR_MODULES) or target is SpikingNeuron else "no"
    if kind == "function":
        return "yes" if target in NIR_FUNCTIONS else "no"
    return "flattening only" if target in NIR_METHODS else "no"


def _module_name(cls: type) -> str:
    if cls is nn.modules.dropout._DropoutNd:  # the base class: name what users write
        return ", ".join(f"nn.{c.__name__}" for c in cls.__subclasses__()) + " (any _DropoutNd subclass)"
    return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn") else cls.__name__


def _names(kind: str, targets: Iterable) -> list[tuple[str, object]]:
    if kind == "module":
        return [(_module_name(t), t) for t in targets]
    if kind == "function":
        return [(function_name(t), t) for t in targets]
    return [(f"Tensor.{t}", t) for t in targets]


def _grouped(kind: str, table: dict, exact: Callable[[object], str], nir: Callable[[object], str] | None = None) -> list[Row]:
    """One row per distinct description: the ops that share it listed together."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name, target in _names(kind, table):
        how = table[target] if isinstance(table[target], str) else table[target].how
        export = nir(target) if nir is not None else _nir(kind, target)
        groups.setdefault((how, exact(target), export), []).append(f"`{name}`")
    return [(", ".join(sorted(set(names))), how, ex, nir) for (how, ex, nir), names in groups.items()]


def rows() -> list[Row]:
    """(op, how it converts, exactness, NIR export) for every op a pass knows, pass by pass."""
    out: list[Row] = []
    spiking = lambda target: EXACT + " (IF neurons, T -> infinity)"  # noqa: E731
    neuron = lambda target: "yes (IF / LIF node)"  # noqa: E731
    out += _grouped("module", relu.MODULE_FORMS, spiking, neuron)
    out += _grouped("function", dict.fromkeys(relu._FUNCTIONS, "spiking neuron (clamp/clip/hardtanh with min 0: capped neuron)"), spiking, neuron)
    out += _grouped("method", dict.fromkeys(relu._METHODS, "spiking neuron (clamp/clip with min 0: capped neuron)"), spiking, neuron)
    folded = {bn: f"folded into the {' / '.join(c.__name__ for c in layers)} before it (else kept: affine)" for bn, layers in fold_bn.FOLDABLE.items()}
    out += _grouped("module", folded, lambda target: "exact", lambda target: "no" if target is nn.BatchNorm3d else "yes, when folded")
    gated = "maxpool='gated' (default): gated by running spike count; maxpool='avg': average pool (on the input path: kept)"
    converge = lambda target: "converges with T (gated); approximate (avg)"  # noqa: E731
    out += _grouped("module", {nn.MaxPool1d: gated, nn.MaxPool2d: gated, nn.AdaptiveMaxPool1d: gated, nn.AdaptiveMaxPool2d: gated}, converge)
    out += _grouped("function", dict.fromkeys([*pooling._FUNCTIONS, *pooling._ADAPTIVE_FUNCTIONS], gated), converge)
    reduce = "max over dims other than the batch: gated by running spike count (GatedMaxReduce; torch.max returns the gated indices); maxpool='avg': mean"
    out += _grouped("function", {torch.amax: reduce, torch.max: reduce}, converge)
    out += _grouped("method", {"amax": reduce, "max": reduce}, converge)
    removed = "removed: an identity in evaluation"
    gone = lambda target: "yes (removed)"  # noqa: E731
    out += _grouped("module", dict.fromkeys(cleanup.DROPOUT_MODULES + cleanup.IDENTITY_MODULES, removed), lambda target: "exact", gone)
    out += [(f"`{cleanup.IDENTITY_MODULE_NAMES[name]}.{name}`", removed, "exact", "yes (removed)") for name in cleanup.IDENTITY_MODULE_NAMES]
    out += _grouped("function", dict.fromkeys(cleanup.DROPOUT_FUNCTIONS, removed), lambda target: "exact", gone)
    out += [(f"`{spec[0]}.{name}`", removed + f" ({spec[2]}=False)", "exact", "yes (removed)") for name, spec in cleanup.IDENTITY_FUNCTION_NAMES.items()]
    head = "at the output: output head, applied to the output averaged over T (inside the network: analog)"
    outside = lambda target: "outside the graph (snn.output_head)"  # noqa: E731
    out += _grouped("module", dict.fromkeys(readout.SOFTMAX_MODULES, head), lambda target: "exact", outside)
    out += _grouped("function", dict.fromkeys(readout.SOFTMAX_FUNCTIONS, head), lambda target: "exact", outside)
    out += _grouped("method", dict.fromkeys(readout.SOFTMAX_METHODS, head), lambda target: "exact", outside)
    carried_exact = lambda target: EXACT if "exact" in (supported.CARRIED_MODULES.get(target) or supported.CARRIED_FUNCTIONS.get(target) or supported.CARRIED_METHODS.get(target)).how else "exact"  # noqa: E731
    modules = {cls: rule for cls, rule in supported.CARRIED_MODULES.items() if cls is not TemporalModule and cls not in (nn.MaxPool1d, nn.MaxPool2d, *cleanup.IDENTITY_MODULES)}
    out += _grouped("module", modules, carried_exact)
    out += _grouped("function", supported.CARRIED_FUNCTIONS, carried_exact)
    out += _grouped("method", supported.CARRIED_METHODS, carried_exact)
    out.append(
        (
            "anything else (GroupNorm, LayerNorm, GELU, SiLU, Hardswish, LeakyReLU, sigmoid, products of activations, ...)",
            "refused, all listed in one error; with allow_analog=True kept analog: after spiking layers, or reading a rate- "
            "or latency-encoded input, as an island that reads the running mean of its inputs and emits increments (its "
            "time average is the op of the rates); ann2snn.profile counts its MACs",
            "converges with T (analog, not spiking)",
            "no",
        )
    )
    return out


def markdown() -> str:
    """The table as markdown, with a note on how it is made."""
    lines = [
        "# Supported operations",
        "",
        "Generated from the compiler's own registries by `python -m ann2snn.supported_ops > docs/supported_ops.md`",
        "(do not edit by hand; a test checks that this file is up to date).",
        "",
        '"Exact in the rate limit": the op is linear or affine, so applied to each step\'s spikes it computes the op',
        "of the firing rates, and the integrate-and-fire SNN reproduces the CNN as T grows. Ops are matched in",
        "module, functional and method form; a module is matched by class (subclasses included).",
        "",
        "| op | how it converts | exact? | NIR export |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows()]
    lines += [
        "",
        "## Batch sizes in reshapes",
        "",
        "A reshape to the batch size of another tensor (`h.view(x.size(0), -1)`, `x.shape[0]`, `reshape`,",
        "`torch.reshape`, `expand`) takes it from the tensor reshaped instead (`h.size(0)`) where the graph proves",
        "both have as many rows in the CNN (every op between them keeps dim 0): in layer mode the layers after the",
        "first neuron run on T x B rows, the input on B. A reshape that changes the batch is left as written and,",
        "where it would fail in layer mode, warned about. `len(x)` and tensors created from a traced size",
        "(`torch.zeros(x.shape[0], n)`) cannot be traced: use `x.size(0)` or `flatten(1)`, and `torch.zeros(1, n)`.",
        "",
        "A CNN that computes with its batch runs in step mode only: a reshape to a leading size computed from a",
        "batch size (`h.view(x.shape[0] // 2, -1)`, `h.reshape(2 * x.size(0), F)`) or to a constant one",
        "(`h.reshape(2, -1, C)`), a slice, an index (`h[0]`), `cat`, split, reduction (`h.mean()` with no dim",
        "too), `roll`, `flip` or flatten along dim 0, a permute that moves it, a reduction over the batch after",
        "`unsqueeze(0)` or `stack` (`h[None].sum(1)`; reducing the new dim 0, as `torch.stack([a, b]).sum(0)`,",
        "is fine), or, found when the network first runs, a join of examples such as `h.reshape(-1, 2 * F)`",
        "(the CNN fails on one example but runs on the whole batch) and an op along a dimension counted from",
        "the end that is dim 0 (`h.mean(-2)` on `[B, F]`). Layer mode folds the T steps into the batch and runs the batch",
        'in slices, so it would mix time steps and examples there: `convert(..., mode="layer")` (the default)',
        'and `snn.mode = "layer"` raise a ConversionError naming the node and its source line. With',
        '`mode="step"` the batch arithmetic runs as in the CNN (output-space correction then runs step by step too).',
        "",
        "## ONNX models",
        "",
        "`ann2snn.onnx_frontend.load_onnx(path)` (then `ann2snn.convert`) or `convert_onnx(path, ...)` imports an ONNX",
        "model through onnx2torch (optional: `pip install onnx onnx2torch`). Each ONNX op becomes the torch op",
        "onnx2torch maps it to and converts as in the table above; `GlobalMaxPool` (missing in onnx2torch 1.5)",
        f"becomes `nn.AdaptiveMaxPool1d/2d(1)`. Tested end to end: {', '.join(ONNX_TESTED)}. A model whose opset",
        "onnx2torch does not cover is moved to opset 17 first; nodes it cannot import are listed in one error.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
