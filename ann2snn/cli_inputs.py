"""Reading the ``ann2snn convert`` command's inputs: the model file (a torch.export program, an
ONNX model, a pickled module with ``--trust-pickle``, or a dict a plugin reads), with a plain
message for files that are no model (text, truncated, holding code, a bare state dict), and the
data files or named data sets of ``--calibrate`` and ``--evaluate``."""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .cli_messages import CliError, _first_line
from .export_archive import UnsafeArchive, costly_expressions, is_export_archive, refuse_unpickling, unsafe_entries
from .exported import example_input_shape, lift_exported
from .io import holds_pickled_objects


def _plugin_note(args: argparse.Namespace) -> str:
    failed = getattr(args, "failed_plugins", [])
    return f"; installed plugins that failed to load: {'; '.join(failed)}" if failed else ""


# -- loading the model ------------------------------------------------------------------------------
#: The way out for a state dict of a model no plugin knows: a file that holds the architecture too.
_EXPORT_HINT = (
    "if it is your own model's, export the model with its weights, torch.export.save(torch.export.export(model, (example,)), "
    "'model.pt2') or torch.onnx.export(model, (example,), 'model.onnx'), and convert that file"
)


def _is_state_dict(payload: dict) -> bool:
    return bool(payload) and all(isinstance(v, torch.Tensor) for v in payload.values())


def _from_dict(payload: dict, args: argparse.Namespace) -> tuple[nn.Module, Optional[tuple[int, ...]]]:
    origin = str(args.model)
    for plugin in args.plugins:
        try:
            found = plugin.model_from_dict(payload, args, origin)
        except CliError as error:
            if _is_state_dict(payload) and "torch.export" not in str(error):
                raise CliError(f"{error}; {_EXPORT_HINT}") from error
            raise
        if found is not None:
            return found
    if _is_state_dict(payload):
        raise CliError(f"{origin} holds a plain state dict: weights without the architecture, and no plugin of the command reads it; {_EXPORT_HINT}{_plugin_note(args)}")
    raise CliError(
        f"{origin} holds a dict, not a model, and no plugin of the command reads it. Convert a torch.export program (.pt2) "
        f"or an ONNX file of the model, or use the application's command that knows its models{_plugin_note(args)}"
    )


def load_model(args: argparse.Namespace) -> tuple[nn.Module, Optional[tuple[Optional[int], ...]]]:
    """The CNN to convert and, where the file says, its per-example input shape (None in a size: free)."""
    path: Path = args.model
    if path.is_dir():
        raise CliError(f"{path} is a directory: give the model file in it")
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CliError(f"{path} is empty (0 bytes): not a model file")
    if path.suffix.lower() == ".onnx":
        from .onnx_frontend import load_onnx

        module = load_onnx(path)
        return module, module.meta.get("onnx_input_shape")
    if is_export_archive(path):
        program = load_exported_program(path, args.trust_pickle)
        return lift_exported(program), example_input_shape(program)
    payload = _load_file(path, args.trust_pickle, args)
    if isinstance(payload, nn.Module):
        return payload, None
    if isinstance(payload, dict):
        return _from_dict(payload, args)
    raise CliError(f"{path} holds a {type(payload).__name__}, not a model")


def _unpickling_failed(path: Path, error: Exception) -> CliError:
    """The error for a pickle that cannot be read; a class that cannot be imported gets the way out."""
    hint = ""
    if isinstance(error, (ModuleNotFoundError, AttributeError)):
        module = f"module {error.name!r}" if isinstance(error, ModuleNotFoundError) and error.name else "the module"
        hint = (
            f": the model's class must be importable: add the folder that holds {module} (the file that defines "
            "the class) to PYTHONPATH, e.g. PYTHONPATH=path/to/that/folder; better, save a torch.export program"
        )
    return CliError(f"{path} cannot be unpickled: {_first_line(error)}{hint}")


#: A global that ``weights_only`` refused because it runs code (``posix.system``), named in torch's message.
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked", re.IGNORECASE)


def _model_kinds(args: Optional[argparse.Namespace]) -> str:
    """The kinds of model file the command reads, for messages."""
    kinds = "a torch.export program (.pt2), an ONNX model (.onnx), a pickled nn.Module (with --trust-pickle)"
    return kinds + "".join(f", {plugin.model_help}" for plugin in getattr(args, "plugins", ()) if plugin.model_help)


def _damaged(path: Path, error: BaseException) -> bool:
    """True when ``error`` comes from a zip archive or pickle cut short or damaged (a truncated download)."""
    with path.open("rb") as file:
        head = file.read(4)
    text = str(error)
    return (head == b"PK\x03\x04" and not zipfile.is_zipfile(path)) or isinstance(error, EOFError) or "truncated" in text or "central directory" in text


def _not_a_model(path: Path, error: BaseException, args: Optional[argparse.Namespace]) -> CliError:
    """The error for a file torch cannot read: damaged, or no model file at all."""
    if _damaged(path, error):
        return CliError(f"{path} is truncated or damaged ({_first_line(error)}): copy or export the model file again")
    with path.open("rb") as file:
        head = file.read(2)
    if head != b"PK" and not (len(head) == 2 and head[0] == 0x80):  # neither a zip archive nor a pickle
        return CliError(f"{path} is not a model file; the command reads {_model_kinds(args)}")
    return CliError(f"{path} is not a model file ({_first_line(error)}); the command reads {_model_kinds(args)}")


def _load_file(path: Path, trust_pickle: bool, args: Optional[argparse.Namespace] = None) -> Any:
    """The file's content, read with ``weights_only=True``; unpickled only with --trust-pickle."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the command says what matters
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = _BLOCKED_GLOBAL.search(str(error))
        if blocked and not trust_pickle:
            raise CliError(
                f"{path} holds pickled code (it calls {blocked.group(1)} when loaded): loading it runs that code, so it is refused; pass --trust-pickle only if you trust the file's source"
            ) from error
        if not holds_pickled_objects(path, error):
            raise _not_a_model(path, error, args) from error
    except Exception as error:
        raise _not_a_model(path, error, args) from error
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
            raise _unpickling_failed(path, error) from error
    except Exception as error:
        raise _unpickling_failed(path, error) from error
    try:
        with path.open("rb") as file:
            return pickle.load(file)
    except Exception as error:
        raise _unpickling_failed(path, error) from error


def _archive_problems(path: Path, check: Callable[[Path], list[str]]) -> str:
    """What ``check`` finds in the archive at ``path``: its first problem and how many more ('' if none)."""
    try:
        problems = check(path)
    except Exception as error:
        raise CliError(f"{path} looks like a torch.export archive but cannot be read: {_first_line(error)}") from error
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return problems[0] + more if problems else ""


def load_exported_program(path: Path, trust_pickle: bool) -> torch.export.ExportedProgram:
    """``torch.export.load(path)``, refusing archives whose shape expressions sympy would never
    finish reading (trusted or not) and, unless ``trust_pickle``, those that loading would run code from."""
    costly = _archive_problems(path, costly_expressions)
    if costly:
        raise CliError(f"{path} is a torch.export archive with {costly}: sympy would never finish reading it, so it is refused, even with --trust-pickle; export the model again")
    unsafe = "" if trust_pickle else _archive_problems(path, unsafe_entries)
    if unsafe:
        raise CliError(f"{path} is a torch.export archive with {unsafe}: loading it runs code from the file, so it is refused; pass --trust-pickle only if you trust the file")
    try:
        with warnings.catch_warnings(), nullcontext() if trust_pickle else refuse_unpickling():
            warnings.filterwarnings("ignore", "The given buffer is not writable", UserWarning)  # the archive's buffers are read-only
            return torch.export.load(path)
    except UnsafeArchive as error:
        raise CliError(f"{path} is a torch.export archive with {error}: loading it runs code from the file, so it is refused; pass --trust-pickle only if you trust the file") from error
    except Exception as error:
        raise CliError(f"{path} looks like a torch.export archive but cannot be loaded: {_first_line(error)}") from error


# -- calibration data -----------------------------------------------------------------------------
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


def named_examples(
    option: str, source: str, split: str, limit: Optional[int], args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[Optional[int], ...]]
) -> list[tuple[torch.Tensor, int]]:
    """(input, label) pairs of ``split`` of the data set a plugin knows by the name ``source``."""
    for plugin in args.plugins:
        items = plugin.examples(option, source, split, limit, args, model, shape)
        if items is not None:
            return items
    names = [name for plugin in args.plugins for name in plugin.data_set_names()]
    known = f", and not a named data set ({', '.join(names)}; e.g. {names[-1]}:PATH)" if names else ""
    raise CliError(f"{option} {source}: no such file{known}{_plugin_note(args)}")


def _tensor_file(option: str, source: str) -> object:
    """The data file ``source`` read with ``weights_only=True`` (tensors and plain containers only)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CliError(f"{option} {source}: not a tensor file ({_first_line(error)})") from error


def _is_labelled_pair(data: object) -> bool:
    """True for a pair (inputs [N, ...], integer targets [N]), as ``--evaluate`` reads: not two batches."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
        return False
    inputs, targets = data
    integer = not (targets.is_floating_point() or targets.is_complex())
    return inputs.dim() >= 2 and targets.dim() == 1 and len(inputs) == len(targets) and integer


def calibration_batches(args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[int, ...]]) -> list[torch.Tensor]:
    """Input batches from a .pt file or from the training split of a plugin's data set."""
    source = args.calibrate
    path = Path(source)
    if path.is_file():
        data = _tensor_file("--calibrate", source)
        if _is_labelled_pair(data):
            data = data[0]  # the (inputs, targets) pair that --evaluate reads: its inputs
        if isinstance(data, torch.Tensor):
            if data.dim() < 2:
                raise CliError(f"--calibrate {source}: a tensor of shape {tuple(data.shape)} is not a batch [N, ...] of inputs")
            return list(_float32(data, source).split(args.batch_size))
        if isinstance(data, (list, tuple)) and data:
            return [_float32_batch(item, source) for item in data]  # batches or (input, target) pairs, checked by the calibration
        raise CliError(f"--calibrate {source}: expected a tensor [N, ...] or a list of batches, found {type(data).__name__} {data!r:.60}")
    items = [x for x, _ in named_examples("--calibrate", source, "train", args.calibration_size, args, model, shape)]
    if not items:
        raise CliError(f"--calibrate {source}: the training split is empty")
    return list(torch.stack(items).split(args.batch_size))


# -- evaluation data ------------------------------------------------------------------------------
def evaluation_data(args: argparse.Namespace, model: nn.Module, shape: Optional[tuple[int, ...]]) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(inputs, targets, description) from a .pt file of an (inputs, targets) pair or from the
    test split of a plugin's data set; at most ``--evaluate-size`` examples."""
    source = args.evaluate
    path = Path(source)
    if path.is_file():
        data = _tensor_file("--evaluate", source)
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data)):
            found = type(data).__name__ + (f" of {len(data)}" if isinstance(data, (tuple, list, dict)) else "")
            raise CliError(f"--evaluate {source}: expected a pair (inputs, targets) of tensors, as written by torch.save((inputs, targets), PATH); found a {found}")
        inputs, targets = data
        if inputs.dim() < 2 or targets.dim() != 1 or len(inputs) != len(targets):
            raise CliError(f"--evaluate {source}: inputs must be a batch [N, ...] and targets [N] class indices; got inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise CliError(f"--evaluate {source}: targets must be integer class indices, not {str(targets.dtype).removeprefix('torch.')}")
        inputs, where = _float32(inputs, source, "--evaluate"), str(path)
    else:
        items = named_examples("--evaluate", source, "test", None, args, model, shape)  # all: a balanced subset needs every label
        if not items:
            raise CliError(f"--evaluate {source}: the test split is empty")
        inputs = torch.stack([x for x, _ in items])
        targets = torch.tensor([int(y) for _, y in items])
        where = f"the test split of {source.partition(':')[0]}"
    if len(inputs) == 0:
        raise CliError(f"--evaluate {source}: no examples")
    if args.evaluate_size is not None and args.evaluate_size < len(inputs):
        chosen = balanced_subset(targets, args.evaluate_size)
        where += f" (a class-balanced subset of {len(inputs)}, --evaluate-size)"
        inputs, targets = inputs[chosen], targets[chosen]
    return inputs, targets.long(), f"{len(inputs)} examples of {where}"


def balanced_subset(targets: torch.Tensor, size: int, seed: int = 0) -> torch.Tensor:
    """The sorted indices of ``size`` examples, as many of each class as the data allow: each
    class's examples in a seeded random order, taken in turns, one per class a turn (the classes
    in a seeded random order, so the turn that runs out does not favour low class indices)."""
    generator = torch.Generator().manual_seed(seed)
    classes, index = targets.unique(return_inverse=True)
    turn_order = torch.randperm(len(classes), generator=generator)[index]
    shuffled = torch.randperm(len(targets), generator=generator)
    rank = torch.empty_like(shuffled)  # each example's place in its class's random order
    for c in range(len(classes)):
        members = shuffled[index[shuffled] == c]
        rank[members] = torch.arange(len(members))
    key = rank * len(classes) + turn_order
    return key.argsort()[:size].sort().values
