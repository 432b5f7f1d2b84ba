"""The ``ann2snn`` command: ``ann2snn convert model.pt -o snn.pt [--calibrate DATA] ...``.

Reads a trained CNN (a zoo checkpoint, a ``torch.export`` program, a state dict with
``--model``, or a pickled module with ``--trust-pickle``), converts it with the library's
defaults (``ann2snn.convert``'s signature) unless told otherwise, prints the conversion report,
optionally measures CNN and SNN on labelled data (``--evaluate``, at one T or a table over
several), and writes the SNN (loadable with ``ann2snn.load``) and optionally a markdown report,
a NIR graph, a drawing and a profile. User errors print one ``error: ...`` line on stderr and
exit with status 2; no output file is written unless every requested output was produced.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import itertools
import json
import os
import pickle
import shutil
import sys
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import fx, nn

from .config import ConversionConfig
from .convert import convert, recalibrate
from .errors import ConversionError, ConversionWarning
from .export_archive import UnsafeArchive, refuse_unpickling, unsafe_entries
from .io import holds_pickled_objects, save
from .report import ConversionReport
from .timeloop import SpikingNetwork

EXIT_ERROR = 2
#: Largest --T accepted: far beyond any useful simulation, small enough to fail fast rather than exhaust memory.
MAX_STEPS = 100_000


class CliError(Exception):
    """A problem with the command's inputs; printed as one line, exit status 2."""


# -- arguments ------------------------------------------------------------------------------------
def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,8000 (per-example sizes, no batch)") from None
    if not shape or any(size <= 0 for size in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive integer")
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive integer")
    return value


def _steps(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{text!r}: at most {MAX_STEPS:,} time steps (each step holds the activations of every layer)")
    return value


def _step_list(text: str) -> tuple[int, ...]:
    """``25`` or ``8,16,32``: one or more time-step counts, each checked like ``--T``."""
    steps = tuple(_steps(part.strip()) for part in text.split(","))
    if len(set(steps)) != len(steps):
        raise argparse.ArgumentTypeError(f"{text!r} names a T twice")
    return steps


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-config is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-config must be a JSON object, like '{\"n_classes\": 10}'")
    return value


def _number_or_word(text: str) -> float | str:
    """A number, or a word for settings that take either (``--percentile auto``); the config checks the value."""
    try:
        return float(text)
    except ValueError:
        return text


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _default_text(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per ``ConversionConfig`` field (``--T``, ``--learn-tau``, ``--percentile``, ...),
    with the field's default, help and choices; values are checked by the config (``config_from``)."""
    group = parser.add_argument_group("conversion settings", "the fields of ann2snn.ConversionConfig; the defaults are the library's")
    defaults = ConversionConfig()
    for f in dataclasses.fields(ConversionConfig):
        default, help, flag = getattr(defaults, f.name), f.metadata["help"], "--" + f.name.replace("_", "-")
        said = f" (default: {_default_text(default)})" if default is not None else ""
        if f.name == "T":
            group.add_argument(
                flag, type=_step_list, default=(default,), metavar="T[,T...]",
                help=f"{help}{said}; several, like 8,16,32, with --evaluate: a table over T, and the SNN written is the one for the first",
            )  # fmt: skip
        elif "bool" in str(f.type):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help + said)
        elif f.metadata["choices"]:
            group.add_argument(flag, choices=f.metadata["choices"], default=default, help=help + said)
        else:
            annotation = str(f.type)
            kind = (_number_or_word if "str" in annotation else _float) if "float" in annotation else str
            group.add_argument(flag, type=kind, default=default, metavar=f.metadata["metavar"] or f.name.upper(), help=help + said)


def config_from(args: argparse.Namespace, T: Optional[int] = None) -> ConversionConfig:
    """The ``ConversionConfig`` of the command's flags (at ``T``, default the first ``--T``)."""
    settings = {name: getattr(args, name) for name in ConversionConfig.names()}
    return ConversionConfig(**{**settings, "T": T or args.T[0]})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ann2snn", description="Convert trained CNNs into spiking neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser(
        "convert", help="convert a trained CNN into an SNN",
        description="Convert a trained CNN into a spiking network and save it (load it back with ann2snn.load); with --evaluate, measure what the conversion cost.",
    )
    c.add_argument("model", type=Path, help="a zoo checkpoint {'model', 'config', 'state_dict'}, a torch.export program (.pt2), a state dict (with --model), or a pickled nn.Module (with --trust-pickle)")
    c.add_argument("-o", "--output", type=Path, help="where to write the SNN (default: MODEL with suffix .snn.pt)")
    c.add_argument("--calibrate", metavar="DATA", help="calibration data: a zoo data set ('synthetic', 'fsdd:PATH' or 'fsdd' with --data-dir, 'speech_commands:PATH') or a .pt file of input batches (a tensor [N, ...] or a list of tensors)")
    c.add_argument("--calibration-size", type=_positive_int, default=512, help="examples taken from a zoo data set's training split for calibration (default: %(default)s)")
    c.add_argument("--evaluate", metavar="DATA", help="measure CNN accuracy, SNN accuracy and their agreement at each --T: a zoo data set's test split (as for --calibrate) or a .pt file holding a pair (inputs [N, ...], targets [N] of class indices)")
    c.add_argument("--evaluate-size", type=_positive_int, metavar="N", help="evaluate on the first N examples only (default: all)")
    c.add_argument("--data-dir", metavar="PATH", help="the folder of a zoo data set named without ':PATH' in --calibrate or --evaluate")
    c.add_argument("--batch-size", type=_positive_int, default=64, help="batch size for calibration, evaluation and profiling (default: %(default)s)")
    c.add_argument("--input-shape", type=_shape, help="per-example input shape without batch, like 1,8000")
    c.add_argument("--model", dest="model_name", metavar="NAME", help="zoo model name, for a plain state dict")
    c.add_argument("--model-config", type=_json_object, default={}, metavar="JSON", help="options for zoo.create, e.g. '{\"n_classes\": 10}' (default: those in the checkpoint)")
    c.add_argument("--trust-pickle", action="store_true", help="allow loading a whole pickled nn.Module, or a torch.export program with pickled entries: unpickling runs arbitrary code from the file, so only use it for files you trust")
    add_config_arguments(c)
    c.add_argument("--report", type=Path, help="write the conversion report as markdown")
    c.add_argument("--nir", type=Path, help="write the SNN as a NIR graph (needs --maxpool avg if the net max-pools; checked before calibration)")
    c.add_argument("--draw", type=Path, help="write a PNG of the network before and after conversion")
    c.add_argument("--profile", action="store_true", help="print firing rates, synaptic operations and an energy estimate")
    return parser


# -- loading the model ------------------------------------------------------------------------------
def _zoo():
    try:
        return importlib.import_module("zoo")
    except ImportError as error:
        raise CliError(f"the model zoo is not importable ({error}); install the audio extra (pip install 'ann2snn[audio]'), or pass an exported program or a pickled module") from error


def _zoo_model(name: str, config: dict, state_dict: dict, origin: str) -> nn.Module:
    zoo = _zoo()
    if name not in zoo.names():
        raise CliError(f"{origin}: unknown zoo model {name!r}; the zoo has {', '.join(zoo.names())}")
    try:
        model = zoo.create(name, **config)
    except Exception as error:  # the zoo's constructors raise whatever torch raises for a bad size
        raise CliError(f"{origin}: cannot build zoo model {name!r} with config {config}: {_first_line(error)}") from error
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise CliError(f"{origin}: the weights do not fit zoo model {name!r} with config {config}: {' '.join(first[:3])}") from error
    return model


def _from_dict(payload: dict, args: argparse.Namespace) -> nn.Module:
    origin = str(args.model)
    if "state_dict" in payload and isinstance(payload.get("model"), str):
        if args.model_name and args.model_name != payload["model"]:
            raise CliError(f"{origin} is a checkpoint of zoo model {payload['model']!r}, but --model says {args.model_name!r}")
        config = {**(payload.get("config") or {}), **args.model_config}
        return _zoo_model(payload["model"], config, payload["state_dict"], origin)
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if not args.model_name:
            names = ", ".join(_zoo().names())
            raise CliError(f"{origin} is a plain state dict: name its architecture with --model NAME (one of {names}) and --model-config JSON if needed")
        return _zoo_model(args.model_name, args.model_config, payload, origin)
    raise CliError(f"{origin} holds a dict that is neither a checkpoint {{'model', 'config', 'state_dict'}} nor a state dict")


def _is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


def load_model(args: argparse.Namespace) -> tuple[nn.Module, Optional[tuple[int, ...]]]:
    """The CNN to convert and, where the file says, its per-example input shape."""
    path: Path = args.model
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if _is_exported_program(path):
        program = load_exported_program(path, args.trust_pickle)
        inputs = program.example_inputs[0] if program.example_inputs else ()
        shape = tuple(inputs[0].shape[1:]) if len(inputs) == 1 and isinstance(inputs[0], torch.Tensor) else None
        return lift_exported(program.module()), shape
    payload = _load_file(path, args.trust_pickle)
    if isinstance(payload, nn.Module):
        return payload, None
    if isinstance(payload, dict):
        model = _from_dict(payload, args)
        spec = getattr(model, "input_spec", None)
        return model, tuple(spec.shape) if spec is not None else None
    raise CliError(f"{path} holds a {type(payload).__name__}, not a model")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _load_file(path: Path, trust_pickle: bool) -> Any:
    """The file's content, read with ``weights_only=True``; unpickled only with --trust-pickle."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not holds_pickled_objects(path, error):
            raise CliError(f"{path} is not a model file (a checkpoint, state dict, exported program or pickled module): {_first_line(error)}") from error
    except Exception as error:
        raise CliError(f"{path} is not a model file (a checkpoint, state dict, exported program or pickled module): {_first_line(error)}") from error
    if not trust_pickle:
        raise CliError(
            f"{path} holds pickled Python objects (a whole nn.Module?); unpickling runs arbitrary code from the "
            "file, so it is refused by default. If you trust the file, pass --trust-pickle; better, save a "
            "state dict or a torch.export program"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except RuntimeError as error:
        if "magic number" not in str(error):  # not torch's format: a plain pickle.dump
            raise CliError(f"{path} cannot be unpickled: {_first_line(error)}") from error
    except Exception as error:
        raise CliError(f"{path} cannot be unpickled: {_first_line(error)}") from error
    try:
        with path.open("rb") as file:
            return pickle.load(file)
    except Exception as error:
        raise CliError(f"{path} cannot be unpickled: {_first_line(error)}") from error


def load_exported_program(path: Path, trust_pickle: bool) -> torch.export.ExportedProgram:
    """``torch.export.load(path)``, refusing (unless ``trust_pickle``) archives that loading would run code from."""
    if not trust_pickle:
        try:
            problems = unsafe_entries(path)
        except Exception as error:
            raise CliError(f"{path} looks like a torch.export archive but cannot be read: {_first_line(error)}") from error
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise CliError(f"{path} is a torch.export archive with {problems[0]}{more}: loading it runs code from the file, so it is refused; pass --trust-pickle only if you trust the file")
    try:
        with warnings.catch_warnings(), (nullcontext() if trust_pickle else refuse_unpickling()):
            warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)  # the archive's buffers are read-only
            return torch.export.load(path)
    except UnsafeArchive as error:
        raise CliError(f"{path} is a torch.export archive with {error}: loading it runs code from the file, so it is refused; pass --trust-pickle only if you trust the file") from error
    except Exception as error:
        raise CliError(f"{path} looks like a torch.export archive but cannot be loaded: {_first_line(error)}") from error


# -- exported programs --------------------------------------------------------------------------------
EXPORTED_OPS_NOTE = (
    "its ATen ops are read back as torch modules and functions only for convolution, linear, batch norm, "
    "ReLU/hardtanh/clamp, max/average/adaptive pooling, flatten, view/reshape, add, mean, cat, dropout and "
    "softmax; convert the original nn.Module or a checkpoint of it instead"
)


class ExportedModel(fx.GraphModule):
    """The torch-level graph read back from a ``torch.export`` program (see ``lift_exported``)."""


def _aten(name: str):
    packet, overload = name.split(".")
    return getattr(getattr(torch.ops.aten, packet), overload)


def lift_exported(module: fx.GraphModule) -> fx.GraphModule:
    """Rewrite the ATen-level graph of ``ExportedProgram.module()`` into torch-level modules and
    functions that the converter understands (conv/linear/batch norm modules, ``torch.relu``,
    ``F.max_pool1d``, ...), dropping the shape guards, so that the batch size is free again.

    Ops not listed stay as they are; the converter then names the first one it cannot handle.
    Reshapes to a fixed batch size are rewritten to keep the leading dimension (-1).
    """
    graph = fx.Graph()
    values: dict[fx.Node, fx.Node] = {}
    output = graph.graph_copy(module.graph, values)
    result = output[0] if isinstance(output, (tuple, list)) and len(output) == 1 else output
    graph.output(result)
    modules: dict[str, nn.Module] = {}

    def tensor(node: fx.Node) -> torch.Tensor:
        return _attr(module, str(node.target)).detach().clone()

    def owner(*params: Any) -> str:
        target = next(p.target for p in params if p is not None)
        name = target.rsplit(".", 1)[0] if "." in target else target
        while name in modules:
            name += "_"
        return name

    def conv(dims: int) -> Callable[[fx.Node], nn.Module]:
        def build(node: fx.Node) -> nn.Module:
            _, weight, bias, *rest = list(node.args) + [None] * max(0, 3 - len(node.args))
            stride, padding, dilation, groups = (rest + [1, 0, 1, 1][len(rest):])[:4]
            w = tensor(weight)
            layer = (nn.Conv1d if dims == 1 else nn.Conv2d)(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, bias=bias is not None)
            layer.weight = nn.Parameter(w)
            if bias is not None:
                layer.bias = nn.Parameter(tensor(bias))
            return layer
        return build

    def linear(node: fx.Node) -> nn.Module:
        weight, bias = node.args[1], node.args[2] if len(node.args) > 2 else None
        w = tensor(weight)
        layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        layer.weight = nn.Parameter(w)
        if bias is not None:
            layer.bias = nn.Parameter(tensor(bias))
        return layer

    def batch_norm(node: fx.Node) -> nn.Module:
        _, weight, bias, mean, var, _, momentum, eps, *_ = node.args
        rank = node.meta["val"].dim() if "val" in node.meta else 3
        norm = (nn.BatchNorm1d if rank <= 3 else nn.BatchNorm2d)(tensor(mean).numel(), eps, momentum, affine=weight is not None)
        norm.running_mean.copy_(tensor(mean))
        norm.running_var.copy_(tensor(var))
        if weight is not None:
            norm.weight = nn.Parameter(tensor(weight))
            norm.bias = nn.Parameter(tensor(bias))
        return norm.eval()

    as_module: dict[Any, tuple[Callable[[fx.Node], nn.Module], Callable[[fx.Node], tuple]]] = {
        _aten("conv1d.default"): (conv(1), lambda n: n.args[1:3]),
        _aten("conv2d.default"): (conv(2), lambda n: n.args[1:3]),
        _aten("linear.default"): (linear, lambda n: n.args[1:3]),
        _aten("batch_norm.default"): (batch_norm, lambda n: (n.args[1], n.args[3])),
    }
    as_function: dict[Any, Callable] = {
        _aten("relu.default"): torch.relu, _aten("relu_.default"): torch.relu_, _aten("hardtanh.default"): F.hardtanh,
        _aten("clamp.default"): torch.clamp, _aten("max_pool1d.default"): F.max_pool1d, _aten("max_pool2d.default"): F.max_pool2d,
        _aten("avg_pool1d.default"): F.avg_pool1d, _aten("avg_pool2d.default"): F.avg_pool2d,
        _aten("adaptive_avg_pool1d.default"): F.adaptive_avg_pool1d, _aten("adaptive_avg_pool2d.default"): F.adaptive_avg_pool2d,
        _aten("flatten.using_ints"): torch.flatten, _aten("add.Tensor"): torch.add, _aten("mean.dim"): torch.mean,
        _aten("cat.default"): torch.cat,
    }
    softmax = {_aten("log_softmax.int"): F.log_softmax, _aten("softmax.int"): F.softmax}  # (x, dim, dtype): keep (x, dim)
    for node in list(graph.nodes):
        if node.op == "call_module" and str(node.target).startswith("_guards"):
            graph.erase_node(node)
        elif node.op != "call_function":
            continue
        elif node.target in as_module:
            build, params = as_module[node.target]
            name = owner(*params(node))
            modules[name] = build(node)
            with graph.inserting_before(node):
                new = graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        elif node.target in as_function:
            node.target = as_function[node.target]
        elif node.target in softmax:
            node.target, node.args = softmax[node.target], node.args[:2]
        elif node.target in (_aten("view.default"), _aten("reshape.default")):
            node.target, node.args = torch.reshape, (node.args[0], (-1, *node.args[1][1:]))
        elif node.target == _aten("dropout.default"):  # (x, p, train): the converter drops and reports it
            node.target = F.dropout
        elif node.target in (_aten("clone.default"), _aten("contiguous.default")):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif node.target in (torch._assert, _aten("_assert_scalar.default"), _aten("sym_constrain_range_for_size.default")):
            graph.erase_node(node)
    for node in reversed(list(graph.nodes)):
        if node.op == "get_attr" and not node.users:
            graph.erase_node(node)
    attributes = {str(n.target): _attr(module, str(n.target)) for n in graph.nodes if n.op == "get_attr"}
    return ExportedModel({**attributes, **modules}, graph).eval()


def _attr(module: nn.Module, target: str) -> Any:
    owner, _, name = target.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name)


# -- calibration data -----------------------------------------------------------------------------
def _front_end(zoo, data_set: str, model: nn.Module, shape: Optional[tuple[int, ...]]):
    """The zoo front end that turns clips of ``data_set`` into this model's input: waveform for
    [1, samples], log-mel for [1, n_mels, frames] (10 ms hop), at the data set's sample rate."""
    spec = getattr(model, "input_spec", None)
    shape = tuple(spec.shape) if spec is not None else shape
    if shape is None or len(shape) not in (2, 3):
        raise CliError("calibrating from a zoo data set needs the model's input shape, [1, samples] or [1, n_mels, frames]: pass --input-shape")
    rate = zoo.data.splits.SAMPLE_RATES.get(data_set, 8000)
    if len(shape) == 2:
        front_end = zoo.FrontEnd(kind="waveform", sample_rate=rate, length_s=shape[1] / rate)
    else:
        front_end = zoo.FrontEnd(kind="logmel", sample_rate=rate, n_mels=shape[1], length_s=(shape[2] - 1) / 100)
    if front_end.output_shape != shape:
        raise CliError(f"no zoo front end makes inputs of shape {shape} from {data_set}; calibrate with a .pt file of input batches instead")
    return front_end


def _float32(x: torch.Tensor, source: str, option: str = "--calibrate") -> torch.Tensor:
    """``x`` as float32: other floating types are converted; integers are refused (their scale is unknown)."""
    if not x.is_floating_point():
        raise CliError(f"{option} {source}: the network takes float32; got {str(x.dtype).removeprefix('torch.')}")
    return x.float()


def _float32_batch(item: Any, source: str) -> Any:
    """A batch, or an (input, target) pair, with its input as float32."""
    if isinstance(item, torch.Tensor):
        return _float32(item, source)
    if isinstance(item, (list, tuple)) and item and isinstance(item[0], torch.Tensor):
        return type(item)([_float32(item[0], source), *item[1:]])
    return item


def _zoo_split(option: str, source: str, split: str, limit: Optional[int], args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[int, ...]]) -> list[tuple[torch.Tensor, int]]:
    """The first ``limit`` (input, label) items of ``split`` of the zoo data set ``source``
    ('NAME:PATH', or 'NAME' with --data-dir), through the front end that makes this model's input."""
    name, _, data_dir = source.partition(":")
    zoo = _zoo()
    if name not in zoo.data.NAMES:
        raise CliError(f"{option} {source}: no such file, and not a zoo data set ({', '.join(zoo.data.NAMES)}; e.g. fsdd:PATH)")
    data_dir = data_dir or args.data_dir
    try:
        splits = zoo.data.load_splits(name, data_dir=data_dir or None, front_end=_front_end(zoo, name, model, shape), cached=False)
        items = splits[split]
        count = len(items) if limit is None else min(len(items), limit)
        return [items[i] for i in range(count)]
    except (zoo.DataError, OSError, ValueError) as error:
        hint = ""
        if not data_dir and name != "synthetic":
            hint = f" (give its folder: {option} {name}:PATH, or --data-dir PATH"
            hint += "; to download FSDD: python -c \"import zoo; zoo.data.download_fsdd('data/fsdd')\")" if name == "fsdd" else ")"
        raise CliError(f"{option} {source}: {error}{hint}") from error


def calibration_batches(args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[int, ...]]) -> list[torch.Tensor]:
    """Input batches from a .pt file or from the training split of a zoo data set."""
    source = args.calibrate
    path = Path(source)
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CliError(f"--calibrate {source}: not a tensor file ({_first_line(error)})") from error
        if isinstance(data, torch.Tensor):
            if data.dim() < 2:
                raise CliError(f"--calibrate {source}: a tensor of shape {tuple(data.shape)} is not a batch [N, ...] of inputs")
            return list(_float32(data, source).split(args.batch_size))
        if isinstance(data, (list, tuple)) and data:
            return [_float32_batch(item, source) for item in data]  # batches or (input, target) pairs, checked by the calibration
        raise CliError(f"--calibrate {source}: expected a tensor [N, ...] or a list of batches, found {type(data).__name__} {data!r:.60}")
    items = [x for x, _ in _zoo_split("--calibrate", source, "train", args.calibration_size, args, model, shape)]
    if not items:
        raise CliError(f"--calibrate {source}: the training split is empty")
    return list(torch.stack(items).split(args.batch_size))


# -- evaluation ---------------------------------------------------------------------------------
def evaluation_data(args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(inputs, targets, description) from a .pt file of an (inputs, targets) pair or from the
    test split of a zoo data set; at most ``--evaluate-size`` examples."""
    source = args.evaluate
    path = Path(source)
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CliError(f"--evaluate {source}: not a tensor file ({_first_line(error)})") from error
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
            found = type(data).__name__ + (f" of {len(data)}" if isinstance(data, (tuple, list, dict)) else "")
            raise CliError(f"--evaluate {source}: expected a pair (inputs, targets) of tensors, as written by torch.save((inputs, targets), PATH); found a {found}")
        inputs, targets = data
        if inputs.dim() < 2 or targets.dim() != 1 or len(inputs) != len(targets):
            raise CliError(
                f"--evaluate {source}: inputs must be a batch [N, ...] and targets [N] class indices; "
                f"got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}"
            )
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise CliError(f"--evaluate {source}: targets must be integer class indices, not {str(targets.dtype).removeprefix('torch.')}")
        inputs, where = _float32(inputs, source, "--evaluate"), str(path)
    else:
        items = _zoo_split("--evaluate", source, "test", args.evaluate_size, args, model, shape)
        if not items:
            raise CliError(f"--evaluate {source}: the test split is empty")
        inputs = torch.stack([x for x, _ in items])
        targets = torch.tensor([int(y) for _, y in items])
        where = f"the test split of {source.partition(':')[0]}"
    if args.evaluate_size is not None:
        inputs, targets = inputs[: args.evaluate_size], targets[: args.evaluate_size]
    if len(inputs) == 0:
        raise CliError(f"--evaluate {source}: no examples")
    return inputs, targets.long(), f"{len(inputs)} examples of {where}"


@torch.no_grad()
def predictions(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, int]:
    """The top class of every input, computed in batches, and the number of classes."""
    model.eval()
    outputs = [model(batch) for batch in inputs.split(batch_size)]
    if not all(isinstance(y, torch.Tensor) and y.dim() == 2 for y in outputs):
        raise CliError("--evaluate needs a classifier: a model whose output is [batch, classes]")
    return torch.cat([y.argmax(1) for y in outputs]), outputs[0].shape[1]


def _percent(hits: torch.Tensor) -> str:
    return f"{100 * hits.float().mean().item():.1f} %"


class Evaluation:
    """The evaluation data and the CNN's predictions, checked before conversion starts; then
    (``start``) the CNN's accuracy and one row per T: SNN accuracy and top-1 agreement with the
    CNN, printed as they are measured."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, description: str, batch_size: int) -> None:
        self.inputs, self.targets, self.batch_size, self.description = inputs, targets, batch_size, description
        try:
            self.cnn, classes = predictions(model, inputs, batch_size)
        except RuntimeError as error:
            raise CliError(f"--evaluate: the model fails on the evaluation inputs of shape {tuple(inputs.shape)}: {_first_line(error)}") from error
        if int(targets.min()) < 0 or int(targets.max()) >= classes:
            raise CliError(f"--evaluate: targets must be class indices in 0..{classes - 1} (the model has {classes} outputs); found {int(targets.min())}..{int(targets.max())}")

    def start(self, note: Optional[str] = None) -> None:
        print(f"\nevaluation on {self.description}: CNN accuracy {_percent(self.cnn == self.targets)}")
        if note:
            print(note)
        print(f"{'T':>6}  {'SNN accuracy':>12}  {'agreement with CNN':>18}")

    def row(self, T: int, snn: SpikingNetwork) -> None:
        spiking, _ = predictions(snn, self.inputs, self.batch_size)
        print(f"{T:>6}  {_percent(spiking == self.targets):>12}  {_percent(spiking == self.cnn):>18}", flush=True)


# -- outputs --------------------------------------------------------------------------------------
class Outputs:
    """The output files, checked before any work, each written into its own staging folder
    (``.NAME.partial/`` beside it, removed by the next run if a kill left it) and renamed into
    place only when all are ready."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths  # option -> path
        self.staged: list[tuple[Path, Path]] = []

    @staticmethod
    def staging(path: Path) -> Path:
        return path.with_name(f".{path.name}.partial")

    def check(self) -> None:
        """Refuse folders, missing or read-only parent folders; remove staging left by a killed run."""
        for option, path in self.paths.items():
            if path.is_dir():
                raise CliError(f"{option} {path} is a folder: give a file name")
            if not path.parent.is_dir():
                raise CliError(f"{option} {path}: the folder {path.parent} does not exist")
            if not os.access(path.parent, os.W_OK | os.X_OK):
                raise CliError(f"{option} {path}: the folder {path.parent} is not writable")
            shutil.rmtree(self.staging(path), ignore_errors=True)

    def stage(self, option: str, write: Callable[[Path], None]) -> None:
        path = self.paths[option]
        folder = self.staging(path)
        try:
            folder.mkdir()
            self.staged.append((folder, path))
            write(folder / path.name)
        except OSError as error:
            raise CliError(f"{option} {path}: cannot write it: {_first_line(error)}") from error

    def commit(self) -> list[Path]:
        for folder, path in self.staged:
            os.replace(folder / path.name, path)
        return [path for _, path in self.staged]

    def discard(self) -> None:
        for folder, _ in self.staged:
            shutil.rmtree(folder, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path after symlinks, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(named: dict[str, Path]) -> None:
    """Refuse two options that name the same file (an output would destroy an input or another output)."""
    for (a, path_a), (b, path_b) in itertools.combinations(named.items(), 2):
        if _same_file(path_a, path_b):
            raise CliError(f"{b} {path_b} is the same file as {a} {path_a}: give every output its own path")


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The requested output files by option (``-o`` defaults to MODEL with suffix .snn.pt)."""
    paths = {"-o": args.output or args.model.with_suffix(".snn.pt")}
    paths.update({f"--{name}": getattr(args, name) for name in ("report", "nir", "draw") if getattr(args, name)})
    return paths


def report_table(report: ConversionReport) -> str:
    """The report as a plain-text table: node, before, after, threshold; then the summary line."""
    header = ("node", "before", "after", "threshold")
    rows = [header] + [row[:4] for row in report.rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + [report.summary(), report.settings_line()])


# -- the command ----------------------------------------------------------------------------------
def _check_model_shape(model: nn.Module, shape: tuple[int, ...]) -> None:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
    except Exception as error:
        raise CliError(f"the model does not take inputs of shape [batch, {', '.join(map(str, shape))}]: {str(error).splitlines()[0]}") from error


def _convert(args: argparse.Namespace, model: nn.Module, T: int, batches: Optional[list], shape: Optional[tuple[int, ...]], trial: bool = False) -> SpikingNetwork:
    """``ann2snn.convert`` with the command's settings (a ``trial`` conversion, without
    calibration, leaves the per-channel settings out); errors on torch.export programs say what
    the program reader covers."""
    config = config_from(args, T)
    if trial:
        config = config.replace(per_channel=None, tau_per_channel=False)
    try:
        return convert(model, config=config, calibration=batches, input_shape=shape)
    except ConversionError as error:
        if isinstance(model, ExportedModel):
            raise CliError(f"{error} [{args.model} is a torch.export program: {EXPORTED_OPS_NOTE}]") from error
        raise


def check_nir_exportable(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...]) -> None:
    """Convert without calibration (fast) and translate to NIR in memory, so that a network NIR
    cannot hold (gated max pooling, analog ops) is refused before calibration, not after it."""
    from .nir_export import export_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionWarning)  # no calibration: expected here
        trial = _convert(args, model, args.T[0], None, shape, trial=True)
    try:
        export_nir(trial, input_shape=shape)
    except ConversionError as error:
        raise CliError(f"--nir {args.nir}: {error} (checked before calibration; nothing was written)") from error


def run_convert(args: argparse.Namespace) -> int:
    if len(args.T) > 1 and not args.evaluate:
        raise CliError(f"--T {','.join(map(str, args.T))}: several T values make a table with --evaluate; to convert, give one T")
    config_from(args)  # a bad setting fails before any work
    outputs = Outputs(output_paths(args))
    inputs = {"the input": args.model}
    inputs.update({option: Path(value) for option, value in (("--calibrate", args.calibrate), ("--evaluate", args.evaluate)) if value and Path(value).is_file()})
    check_distinct({**inputs, **outputs.paths})
    outputs.check()
    model, file_shape = load_model(args)
    shape = args.input_shape or file_shape
    if args.input_shape:
        _check_model_shape(model, args.input_shape)
    if args.nir and shape is not None:
        check_nir_exportable(args, model, shape)
    batches = calibration_batches(args, model, shape) if args.calibrate else None
    if args.nir and shape is None and batches:
        first = batches[0][0] if isinstance(batches[0], (list, tuple)) else batches[0]
        check_nir_exportable(args, model, tuple(first.shape[1:]))
    evaluation = Evaluation(model, *evaluation_data(args, model, shape), args.batch_size) if args.evaluate else None
    snn = _convert(args, model, args.T[0], batches, shape)
    print(report_table(snn.report))
    for warning in snn.report.warnings:
        if batches is not None or not warning.startswith("no calibration data"):  # said below, in CLI terms
            print(f"warning: {warning}", file=sys.stderr)
    if batches is None:
        print("warning: no --calibrate data: thresholds are not balanced (all 1.0), so the SNN will be inaccurate", file=sys.stderr)
    if evaluation is not None:
        evaluate_over_T(args, snn, batches, evaluation)
    try:
        outputs.stage("-o", lambda p: save(snn, p))
        _extras(args, model, snn, batches, outputs)
        written = outputs.commit()
    finally:
        outputs.discard()
    print("wrote " + ", ".join(map(str, written)))
    return 0


def evaluate_over_T(args: argparse.Namespace, snn: SpikingNetwork, batches: Optional[list], evaluation: Evaluation) -> None:
    """One row per --T: the converted SNN at the first; for the others a copy, recalibrated for
    that T when there is calibration data (thresholds and corrections are T-specific)."""
    evaluation.start(f"thresholds and corrections calibrated for each T; the SNN written is the one for T={args.T[0]}" if len(args.T) > 1 and batches is not None else None)
    evaluation.row(args.T[0], snn)
    for T in args.T[1:]:
        other = copy.deepcopy(snn)
        if batches is not None:
            recalibrate(other, batches, T=T)
        else:
            other.T = T
        evaluation.row(T, other)


def _extras(args: argparse.Namespace, model: nn.Module, snn: SpikingNetwork, batches: Optional[list[torch.Tensor]], outputs: Outputs) -> None:
    """The optional outputs: markdown report, NIR graph, drawing, profile."""
    if args.report:
        outputs.stage("--report", lambda p: p.write_text(snn.report.to_markdown() + "\n"))
    if args.nir:
        from .nir_export import export_nir

        outputs.stage("--nir", lambda p: export_nir(snn, p))
    if args.draw:
        from .draw import draw

        outputs.stage("--draw", lambda p: draw(model, snn, p, title=args.model.name))
    if args.profile:
        from .profile import profile

        if batches is None:
            if snn.input_shape is None:
                raise CliError("--profile needs --calibrate data or --input-shape")
            print("profiling on random inputs (no --calibrate data): rates are only indicative")
            batches = [torch.randn(8, *snn.input_shape, generator=torch.Generator().manual_seed(0))]
        print(profile(snn, batches))


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or any(s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``ann2snn`` console script and ``tools/convert.py``."""
    args = build_parser().parse_args(argv)
    try:
        return run_convert(args)
    except (CliError, ConversionError) as error:
        print(f"error: {error}", file=sys.stderr)
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"error: out of memory with --T {max(args.T)} and --batch-size {args.batch_size}: lower them ({_first_line(error)})", file=sys.stderr)
    return EXIT_ERROR
