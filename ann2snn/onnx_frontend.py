"""ONNX models as input: an ONNX file (or ``onnx.ModelProto``) imported as a ``torch.fx.GraphModule``
through ``onnx2torch``, which ``ann2snn.convert`` then converts like any PyTorch model (same passes,
same report). An optional dependency: ``pip install onnx onnx2torch``.

    from ann2snn.onnx_frontend import convert_onnx, load_onnx
    snn = convert_onnx("model.onnx", T=64, calibration=batches)   # or convert(load_onnx(path), ...)

Each ONNX node becomes the torch op or module that onnx2torch maps it to (``Conv`` -> ``nn.Conv2d``,
``Gemm`` -> ``nn.Linear``, ``Relu`` -> ``nn.ReLU``, ``MaxPool`` -> ``nn.MaxPool2d``, ``Add`` ->
``torch.add``, ``GlobalAveragePool`` -> ``torch.mean``...), and converts as that op does (see
``docs/supported_ops.md``). Before importing, identical initializers that the PyTorch exporter
shares through ``Identity`` nodes are unshared, and a model whose opset onnx2torch does not cover is
moved to opset 17 by ONNX's version converter. The per-example input shape is read from the ONNX
graph: symbolic sizes (``dynamic_axes``) stay free at run time (``snn.input_shape`` holds ``None``
there).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

from torch import fx, nn

from .errors import ConversionError

#: The opset a model is moved to when onnx2torch lacks converters at the model's own opset.
FALLBACK_OPSET = 17
INSTALL_HINT = "pip install onnx onnx2torch"


def _import_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnx2torch
    except ImportError as error:
        raise ConversionError(f"ONNX models need the optional packages onnx and onnx2torch ({error.name} is missing): {INSTALL_HINT}") from error
    _register_global_max_pool()
    return onnx, onnx2torch


def _register_global_max_pool() -> None:
    """Teach onnx2torch ``GlobalMaxPool`` (global max pooling of audio CNNs; onnx2torch 1.5 lacks
    it) as ``nn.AdaptiveMaxPool1d/2d(1)``, which the compiler gates by running spike count."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OperationConverterResult, get_shape_from_value_info, onnx_mapping_from_node

    if OperationDescription("", "GlobalMaxPool", 1) in _CONVERTER_REGISTRY:
        return

    @add_converter(operation_type="GlobalMaxPool", version=1)
    def _global_max_pool(node: Any, graph: Any) -> Any:
        shape = get_shape_from_value_info(graph.value_info[node.input_values[0]]) if node.input_values[0] in graph.value_info else None
        pools = {3: nn.AdaptiveMaxPool1d(1), 4: nn.AdaptiveMaxPool2d(1), 5: nn.AdaptiveMaxPool3d(1)}
        if shape is None or len(shape) not in pools:
            raise NotImplementedError(f"GlobalMaxPool of an input of unknown or unsupported rank ({shape})")
        return OperationConverterResult(torch_module=pools[len(shape)], onnx_mapping=onnx_mapping_from_node(node=node))


def _read(onnx: Any, model: Any) -> Any:
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ConversionError(f"{path}: no such ONNX file")
        try:
            return onnx.load(str(path))
        except Exception as error:  # protobuf DecodeError and friends
            raise ConversionError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from error
    if isinstance(model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(model))
        except Exception as error:
            raise ConversionError(f"the bytes given are not an ONNX model ({type(error).__name__}: {error})") from error
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    raise ConversionError(f"load_onnx takes a path, bytes or an onnx.ModelProto, not {type(model).__name__}")


def _unshare_initializers(onnx: Any, model: Any) -> Any:
    """Replace ``Identity`` nodes that read an initializer by a copy of it (torch.onnx.export shares
    identical weights that way; onnx2torch needs weights as initializers)."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input and node.input[0] in initializers:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            initializers[copy.name] = copy
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return model


def _opsets(model: Any) -> dict[str, int]:
    return {("" if entry.domain == "ai.onnx" else entry.domain): entry.version for entry in model.opset_import}


def unsupported_nodes(model: Any) -> list[str]:
    """The nodes of an ONNX model that onnx2torch has no converter for, as ``name (op_type, opset)``."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = _opsets(model)
    missing = []
    for node in model.graph.node:
        version = opsets.get(node.domain or "", opsets.get("", 0))
        try:
            get_converter(node.op_type, version, node.domain or "")
        except NotImplementedError:
            missing.append(f"`{node.name or node.output[0]}` ({node.op_type}, opset {version})")
    return missing


def onnx_input_shape(model: Any) -> Optional[tuple[Optional[int], ...]]:
    """The per-example input shape of the ONNX graph's first real input (initializers excluded),
    ``None`` for symbolic sizes; ``None`` when the graph does not say."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if not inputs or not inputs[0].type.HasField("tensor_type") or not inputs[0].type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inputs[0].type.tensor_type.shape.dim]
    return tuple(dims[1:]) if len(dims) > 1 else None


def load_onnx(model: str | os.PathLike | bytes | Any) -> fx.GraphModule:
    """Import an ONNX model (path, bytes or ``onnx.ModelProto``) as a ``torch.fx.GraphModule`` that
    ``ann2snn.convert`` takes; ``module.meta["onnx_input_shape"]`` holds the graph's per-example
    input shape (``None`` for symbolic sizes).

    Raises:
        ConversionError: without onnx / onnx2torch, for a file that is not ONNX, or listing every
            ONNX node that onnx2torch cannot import (with the way out).
    """
    onnx, onnx2torch = _import_onnx()
    proto = _unshare_initializers(onnx, _read(onnx, model))
    if unsupported_nodes(proto) and _opsets(proto).get("", 0) != FALLBACK_OPSET:
        try:
            moved = onnx.version_converter.convert_version(proto, FALLBACK_OPSET)
        except Exception:  # the version converter refuses some graphs; keep the original then
            moved = None
        if moved is not None and not unsupported_nodes(moved):
            proto = moved
    missing = unsupported_nodes(proto)
    if missing:
        raise ConversionError(
            f"{len(missing)} ONNX node{'s' * (len(missing) != 1)} cannot be imported (onnx2torch has no converter for "
            f"{'them' if len(missing) != 1 else 'it'}, also not at opset {FALLBACK_OPSET}): "
            + ", ".join(missing)
            + f". Way out: export the model again with torch.onnx.export(..., opset_version={FALLBACK_OPSET}) and ops that "
            "onnx2torch covers, or convert the PyTorch model itself with ann2snn.convert"
        )
    try:
        module = onnx2torch.convert(proto)
    except Exception as error:  # onnx2torch raises KeyError, NotImplementedError... on graphs it cannot map
        raise ConversionError(
            f"onnx2torch cannot import this ONNX model ({type(error).__name__}: {error}); export it again with "
            f"torch.onnx.export(..., opset_version={FALLBACK_OPSET}) or convert the PyTorch model itself with ann2snn.convert"
        ) from error
    module = _with_identifier_names(module)
    module.meta["onnx_input_shape"] = onnx_input_shape(proto)
    return module


def _with_identifier_names(module: fx.GraphModule) -> fx.GraphModule:
    """The same graph with submodule and attribute names made Python identifiers (onnx2torch names
    them after ONNX nodes, ``conv1/Conv``, which saved networks cannot hold)."""
    graph = module.graph
    root: dict[str, Any] = {}
    renamed: dict[str, str] = {}
    for node in graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        target = str(node.target)
        if target not in renamed:
            value = module
            for part in target.split("."):
                value = getattr(value, part)
            clean = ".".join(re.sub(r"\W", "_", part) or "_" for part in target.split("."))
            base, k = clean, 1
            while clean in root:
                clean, k = f"{base}_{k}", k + 1
            renamed[target], root[clean] = clean, value
        node.target = renamed[target]
    renamed_module = fx.GraphModule(root, graph, type(module).__name__)
    renamed_module.meta.update(getattr(module, "meta", {}))
    return renamed_module


def convert_onnx(model: str | os.PathLike | bytes | Any, **options: Any):
    """``ann2snn.convert(load_onnx(model), **options)``; ``input_shape`` defaults to the ONNX graph's
    per-example input shape (symbolic sizes free)."""
    from .convert import convert

    module = load_onnx(model)
    options.setdefault("input_shape", module.meta.get("onnx_input_shape"))
    return convert(module, **options)
