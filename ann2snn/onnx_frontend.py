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
from typing import Any, Iterator, Optional

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
        return _read_file(onnx, Path(model))
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


def _read_file(onnx: Any, path: Path) -> Any:
    """The model in ``path``, with its external data once every data file is checked (``external_data_problem``)."""
    if not path.is_file():
        raise ConversionError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf DecodeError and friends
        raise ConversionError(f"{path} is not an ONNX model ({type(error).__name__}: {error})") from error
    problem = external_data_problem(proto, path.parent)
    if problem:
        raise ConversionError(f"{path}: its external data is refused: {problem}")
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except Exception as error:
        raise ConversionError(f"{path}: its external data cannot be read ({type(error).__name__}: {str(error).strip().splitlines()[0]})") from error
    return proto


def _tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            yield from ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors)
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _tensors(sub)


def external_data_problem(proto: Any, folder: Path) -> Optional[str]:
    """Why the external data of ``proto`` (a model file in ``folder``) must not be read, or None: a
    data file must be a regular file in ``folder`` or below it, named by a relative path, not
    reached through a symlink (a model file must not read other files on the machine)."""
    base = Path(os.path.realpath(folder))
    for tensor in _tensors(proto.graph):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        location = {entry.key: entry.value for entry in tensor.external_data}.get("location", "")
        name, target = f"tensor `{tensor.name}` is stored in {location!r}", base / location
        if not location or Path(location).is_absolute() or not Path(os.path.normpath(target)).is_relative_to(base):
            return f"{name}, outside the model's folder {base}; external data must be a file in that folder: move it there"
        if os.path.realpath(target) != os.path.normpath(target):
            return f"{name}, which is reached through a symbolic link; external data must be a regular file in {base}: copy the file there"
        if not target.is_file():
            return f"{name}, which is missing or not a file in {base}"
    return None


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
    nodes = _onnx_nodes(proto)
    module, renamed = _with_identifier_names(module)
    module.meta["onnx_input_shape"] = onnx_input_shape(proto)
    module.meta["onnx_nodes"] = {renamed.get(target, target): node for target, node in nodes.items()}
    return module


def _onnx_nodes(proto: Any) -> dict[str, tuple[str, str]]:
    """onnx2torch's submodule name of each ONNX node -> (the node's name, its op type)."""
    from onnx2torch.onnx_graph import OnnxGraph

    return {name: (node.name or node.output_values[0], node.operation_type) for name, node in OnnxGraph(proto.graph).nodes.items()}


#: Where a library message places a node: ``module `PATH`, FILE:LINE: `code``` (see ``passes._util.where``).
_WHERE = re.compile(r"module `([^`]+)`(?:, [^`\n]+?:\d+(?:: `[^`\n]*`)?)?")
#: A line of the Python code fx generated for the imported graph, as a message names it.
_GENERATED = re.compile(r"<eval_with_key>\.\d+:\d+(?:: `[^`\n]*`)?")


def in_onnx_terms(message: str, module: fx.GraphModule) -> str:
    """``message`` (about a module ``load_onnx`` made) with each place named as the ONNX node and op
    type (``ONNX node `/Sigmoid` (Sigmoid)``) instead of onnx2torch's module and the Python code it
    generated or runs."""
    nodes: dict[str, tuple[str, str]] = module.meta.get("onnx_nodes", {}) if hasattr(module, "meta") else {}

    def place(match: re.Match) -> str:
        found = nodes.get(match.group(1).split(".")[0])
        return f"ONNX node `{found[0]}` ({found[1]})" if found else match.group(0)

    return _GENERATED.sub("the ONNX graph", _WHERE.sub(place, message)) if nodes else message


def _with_identifier_names(module: fx.GraphModule) -> tuple[fx.GraphModule, dict[str, str]]:
    """The same graph with submodule and attribute names made Python identifiers (onnx2torch names
    them after ONNX nodes, ``conv1/Conv``, which saved networks cannot hold), and old -> new names."""
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
    return renamed_module, renamed


def convert_onnx(model: str | os.PathLike | bytes | Any, **options: Any):
    """``ann2snn.convert(load_onnx(model), **options)``; ``input_shape`` defaults to the ONNX graph's
    per-example input shape (symbolic sizes free)."""
    from .convert import convert

    module = load_onnx(model)
    options.setdefault("input_shape", module.meta.get("onnx_input_shape"))
    try:
        return convert(module, **options)
    except ConversionError as error:
        raise ConversionError(in_onnx_terms(str(error), module)) from error
