"""The ``ann2snn`` command: ``ann2snn convert model.pt -o snn.pt [--calibrate DATA] ...``.

Reads a trained CNN (a ``torch.export`` program, an ONNX file, a pickled module with
``--trust-pickle``, or what a plugin reads, like the audio zoo's checkpoints), converts it with
the library's defaults (``ann2snn.ConversionConfig``) unless told otherwise, prints the conversion report,
optionally measures CNN and SNN on labelled data (``--evaluate``, at one T or a table over
several), and writes the SNN (loadable with ``ann2snn.load``) and optionally a markdown report,
a NIR graph, a drawing and a profile. User errors print one ``error: ...`` line on stderr and
exit with status 2; no output file is written unless every requested output was produced.

The command knows no application: models and data sets of one (the audio zoo) come from a
``CliPlugin`` passed to ``main`` or installed under the entry-point group ``ann2snn.cli_plugins``,
which may also add subcommands of its own (``CliPlugin.commands``: the zoo's ``ann2snn train``
and ``ann2snn experiment``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import itertools
import os
import pickle
import re
import shutil
import sys
import traceback
import warnings
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

import torch
from torch import nn

from . import passes
from .config import ConversionConfig
from .convert import convert, recalibrate
from .errors import ConversionError, ConversionWarning
from .export_archive import UnsafeArchive, refuse_unpickling, unsafe_entries
from .exported import EXPORTED_OPS_NOTE, ExportedModel, example_input_shape, lift_exported
from .io import FORMAT, holds_pickled_objects, save
from .timeloop import SpikingNetwork

EXIT_ERROR = 2
#: Largest --T accepted: far beyond any useful simulation, small enough to fail fast rather than exhaust memory.
MAX_STEPS = 100_000


class CliError(Exception):
    """A problem with the command's inputs; printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``,
    without the usage block (``--help`` still prints it)."""

    def error(self, message: str) -> NoReturn:
        """Print the one-line error and exit with status 2."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def build_parser(plugins: Sequence[CliPlugin] = (), failed: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command's parser, with the options of ``plugins`` (``failed``: plugins that did not load, said in the help)."""

    def also(what: str) -> str:
        extra = [text for text in (getattr(plugin, what) for plugin in plugins) if text]
        return "".join(f", or {text}" for text in extra)

    parser = OneLineParser(prog="ann2snn", description="Convert trained CNNs into spiking neural networks.")
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser(
        "convert",
        help="convert a trained CNN into an SNN",
        description="Convert a trained CNN into a spiking network and save it (load it back with ann2snn.load); with --evaluate, measure what the conversion cost.",
        epilog="installed plugins that failed to load: " + "; ".join(failed) if failed else None,
    )
    c.add_argument("model", type=Path, help=f"a torch.export program (.pt2), an ONNX model (.onnx; pip install 'ann2snn[onnx]'), or a pickled nn.Module (with --trust-pickle){also('model_help')}")
    c.add_argument(
        "-o", "--output", type=Path,
        help="where to write the SNN (default: MODEL with suffix .snn.pt); an SNN that ann2snn.save wrote there is replaced, any other file (a training checkpoint, say) only with --overwrite",
    )  # fmt: skip
    c.add_argument(
        "--overwrite", action="store_true",
        help="replace existing output files (-o, --report, --nir, --draw) even if ann2snn did not write them; an input, or a file in an input data folder, is never replaced",
    )  # fmt: skip
    c.add_argument("--calibrate", metavar="DATA", help=f"calibration data: a .pt file of input batches (a tensor [N, ...] or a list of tensors){also('data_help')}")
    c.add_argument("--calibration-size", type=_positive_int, default=512, help="examples taken from a named data set's training split for calibration (default: %(default)s)")
    c.add_argument(
        "--evaluate",
        metavar="DATA",
        help=f"measure CNN accuracy, SNN accuracy and their agreement at each --T: a .pt file holding a pair (inputs [N, ...], targets [N] of class indices){also('data_help').replace(', or ', ', or the test split of ', 1)}",
    )
    c.add_argument(
        "--evaluate-size", type=_positive_int, metavar="N",
        help="evaluate on N examples only, as many of each class as the data allow, drawn with a fixed seed (the same on every run; default: all)",
    )  # fmt: skip
    c.add_argument("--batch-size", type=_positive_int, default=64, help="batch size for calibration, evaluation and profiling (default: %(default)s)")
    c.add_argument("--input-shape", type=_shape, help="per-example input shape without batch, like 1,8000 (default: the model file's, where it says)")
    c.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow loading a whole pickled nn.Module, or a torch.export program with pickled entries: unpickling runs arbitrary code from the file, so only use it for files you trust",
    )
    add_config_arguments(c)
    c.add_argument("--report", type=Path, help="write the conversion report as markdown")
    c.add_argument("--nir", type=Path, help="write the SNN as a NIR graph (needs --maxpool avg if the net max-pools; checked before calibration)")
    c.add_argument("--draw", type=Path, help="write a drawing of the network before and after conversion (.png, .pdf or .svg, by the suffix)")
    c.add_argument("--profile", action="store_true", help="print firing rates, synaptic operations and an energy estimate")
    for plugin in plugins:
        plugin.add_arguments(c)
        for name, (text, _) in _commands(plugin).items():
            commands.add_parser(name, help=text, add_help=False)  # listed in --help; main hands it its arguments
    return parser


# -- messages in the command's terms ---------------------------------------------------------------
#: Settings whose ``name=value`` in a library message is not turned into a flag: ``T=25`` reads
#: better as it is ("calibrated for T=25").
_KEPT_AS_WRITTEN = {"T"}
_SETTING = re.compile(r"\b(%s)=(float\('inf'\)|'[^']*'|\"[^\"]*\"|[\w.+-]+)" % "|".join(n for n in ConversionConfig.names() if n not in _KEPT_AS_WRITTEN))
_CONVERT_CALL = re.compile(r"convert\(\.\.\., (\w+=[^()]*(?:\([^()]*\))?)\)")
_SHAPE_ORIGIN = "(the calibration data's shape, or convert's input_shape)"
_CLI_SHAPE_ORIGIN = "(the model file's input shape, --input-shape, or the first calibration batch's)"
_FREE_SIZES = re.compile(r"free them: snn\.input_shape = .*?convert\(\.\.\., input_shape=\([^()]*\)\)")
_INPUT_SHAPE = re.compile(r"input of shape \(\d+, ([\d, ]+)\)")
_PYTHON_ONLY = re.compile(r"\b(leaf_modules|concrete_args)\b")
_PYTHON_ONLY_NOTE = (
    " (leaf_modules and concrete_args have no flag in this command: to use them, convert from Python, "
    "snn = ann2snn.convert(model, leaf_modules=[...], calibration=batches), and write it with ann2snn.save(snn, PATH))"
)


def _as_flag(match: re.Match) -> str:
    """``allow_analog=True`` -> ``--allow-analog``, ``learn_tau=False`` -> ``--no-learn-tau``,
    ``maxpool='avg'`` -> ``--maxpool avg``, ``tau=float('inf')`` -> ``--tau inf``."""
    name, value = match.group(1), match.group(2)
    flag = "--" + name.replace("_", "-")
    if value in ("True", "False"):
        return flag if value == "True" else "--no-" + flag[2:]
    return f"{flag} {'inf' if value.startswith('float') else value.strip(chr(39) + chr(34))}"


def _free_sizes_advice(message: str) -> str:
    """The advice to free input sizes (``snn.input_shape = ...``, ``convert(..., input_shape=...)``)
    as the command's: ``--input-shape`` with the sizes of the input the message names."""
    given = _INPUT_SHAPE.search(message)
    sizes = given.group(1).replace(" ", "") if given else "SIZES"
    return _FREE_SIZES.sub(f"pass --input-shape {sizes} to convert for the sizes of your data", message)


def in_cli_terms(message: str) -> str:
    """A library message with its fixes in the command's terms: a setting written as a Python
    argument (``convert(..., allow_analog=True)``, ``tau_per_channel=True``) becomes the flag
    (``--allow-analog``), the advice on input shapes names ``--input-shape`` and the data, and
    arguments the command has no flag for (``leaf_modules``, ``concrete_args``) are said to need
    a conversion from Python."""
    message = _free_sizes_advice(message.replace(_SHAPE_ORIGIN, _CLI_SHAPE_ORIGIN))
    message = _CONVERT_CALL.sub(lambda m: m.group(1) if _SETTING.fullmatch(m.group(1)) else m.group(0), message)
    message = _SETTING.sub(_as_flag, message).replace("float('inf')", "--tau inf")
    return message + _PYTHON_ONLY_NOTE if _PYTHON_ONLY.search(message) else message


def _about_the_graph(error: BaseException) -> bool:
    """True when ``error`` was raised while reading the model's graph (by the tracer or a graph
    pass), not by the calibration or the checks of the data: only then can it come from the ops
    that a torch.export program leaves as ATen ops."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    origin = Path(frames[-1].filename).resolve()
    tracer = Path(importlib.import_module(f"{__package__}.trace").__file__).resolve()  # the package's `trace` is the function
    return origin == tracer or Path(passes.__file__).resolve().parent in origin.parents


# -- plugins --------------------------------------------------------------------------------------
#: Entry-point group of installed plugins (``[project.entry-points."ann2snn.cli_plugins"]``).
PLUGIN_GROUP = "ann2snn.cli_plugins"


class CliPlugin:
    """What an application adds to ``ann2snn convert``: its own options, models read from a dict
    (a checkpoint that names an architecture, a state dict) and named data sets for
    ``--calibrate`` / ``--evaluate``. Each hook answers None for what is not its own; errors are
    ``CliError``. The command takes plugins from ``main(argv, plugins=[...])``, or, for the console
    script, from the entry-point group ``ann2snn.cli_plugins`` (where the audio zoo registers its
    ``ZooPlugin``; see pyproject.toml). Without any, ``.pt2``, ``.onnx`` and pickled models and
    ``.pt`` data files still work."""

    #: the plugin's name in messages
    name = "plugin"
    #: what the plugin reads, appended to the help of the model argument
    model_help = ""
    #: the data sets the plugin names, appended to the help of --calibrate and --evaluate
    data_help = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the plugin's options to the ``convert`` command."""

    def commands(self) -> dict[str, tuple[str, Callable[[list[str]], int]]]:
        """Subcommands the plugin adds beside ``convert``: name -> (one-line help, ``main(argv)``
        returning the exit status). ``ann2snn NAME ARGS...`` calls ``main([ARGS...])``, which
        parses its own arguments (``--help`` included)."""
        return {}

    def model_from_dict(self, payload: dict, args: argparse.Namespace, origin: str) -> Optional[tuple[nn.Module, Optional[tuple[int, ...]]]]:
        """(model, per-example input shape or None) from the dict read (``weights_only``) from the model file ``origin``."""
        return None

    def input_paths(self, args: argparse.Namespace) -> dict[str, Path]:
        """Files and folders the plugin's options read, by option: no output may be one of them or
        lie in one of the folders. By default the folder of a ``--data-dir`` option, where there is one."""
        data_dir = getattr(args, "data_dir", None)
        return {"--data-dir": Path(data_dir)} if data_dir else {}

    def data_set_names(self) -> tuple[str, ...]:
        """The names ``examples`` knows, for messages."""
        return ()

    def examples(
        self,
        option: str,
        source: str,
        split: str,
        limit: Optional[int],
        args: argparse.Namespace,
        model: nn.Module,
        shape: Optional[tuple[Optional[int], ...]],
    ) -> Optional[list[tuple[torch.Tensor, int]]]:
        """The first ``limit`` (input, label) pairs of ``split`` ("train" or "test") of the data
        set named ``source`` (not a file), made for ``model`` (per-example input ``shape``)."""
        return None


def _commands(plugin: CliPlugin) -> dict[str, tuple[str, Callable[[list[str]], int]]]:
    """``plugin.commands()``, or none for plugins written before the method (duck-typed ones too)."""
    commands = getattr(plugin, "commands", None)
    return commands() if commands is not None else {}


def installed_plugins() -> tuple[list[CliPlugin], list[str]]:
    """The plugins installed under ``PLUGIN_GROUP``, and ``name (error)`` of those that failed to load."""
    plugins, failed = [], []
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            plugins.append(entry.load()())
        except Exception as error:  # an optional application: its missing extra must not break the compiler's command
            failed.append(f"{entry.name} ({_first_line(error)})")
    return plugins, failed


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


def _is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


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
    if _is_exported_program(path):
        program = load_exported_program(path, args.trust_pickle)
        return lift_exported(program), example_input_shape(program)
    payload = _load_file(path, args.trust_pickle, args)
    if isinstance(payload, nn.Module):
        return payload, None
    if isinstance(payload, dict):
        return _from_dict(payload, args)
    raise CliError(f"{path} holds a {type(payload).__name__}, not a model")


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message``, or the type alone for an empty message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


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
        if not blocked and not holds_pickled_objects(path, error):
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


# -- evaluation ---------------------------------------------------------------------------------
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
    place only when all are ready: all of them, or (on a failure) none, with any file they
    replaced put back."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths  # option -> path
        self.staged: list[tuple[Path, Path]] = []
        self.kept: set[Path] = set()  # staging folders holding a replaced file that could not be put back

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
        """Rename every staged file into place, after checking that each can be; on a failure,
        undo the renames already made (restoring the files they replaced) and raise CliError."""
        for folder, path in self.staged:
            if not (folder / path.name).is_file():
                raise CliError(f"{path} was not written (nothing was put in place)")
            if path.is_dir():
                raise CliError(f"{path} is now a folder: give a file name (nothing was put in place)")
        placed: list[tuple[Path, Optional[Path], bool]] = []  # (path, where the file it replaced went, renamed in)
        try:
            for folder, path in self.staged:
                backup = folder / ".replaced" if path.exists() or path.is_symlink() else None
                if backup is not None:
                    self._place(path, backup)
                placed.append((path, backup, False))
                self._place(folder / path.name, path)
                placed[-1] = (path, backup, True)
        except OSError as error:
            raise CliError(f"cannot put the outputs in place ({_first_line(error)}): {self._roll_back(placed)}") from error
        return [path for _, path in self.staged]

    @staticmethod
    def _place(source: Path, target: Path) -> None:
        os.replace(source, target)

    def _roll_back(self, placed: list[tuple[Path, Optional[Path], bool]]) -> str:
        """Remove what this run renamed in and put back what it replaced; say what could not be undone."""
        left = []
        for path, backup, renamed in reversed(placed):
            try:
                if renamed:
                    path.unlink()
                if backup is not None:
                    os.replace(backup, path)
            except OSError:
                left.append(f"{path} (its previous content is in {backup})" if backup is not None else str(path))
                if backup is not None:
                    self.kept.add(backup.parent)
        return "nothing was changed" if not left else "could not undo " + ", ".join(left)

    def discard(self) -> None:
        for folder, _ in self.staged:
            if folder not in self.kept:
                shutil.rmtree(folder, ignore_errors=True)


#: What ``ann2snn.save`` warns after the path when it has to pickle a network; the reason follows.
_PICKLED = "saved as a pickle, which ann2snn.load reads only with trust_pickle=True: "


def save_network(snn: SpikingNetwork, staged: Path, final: Path) -> list[str]:
    """Write ``snn`` to ``staged`` (renamed to ``final`` later) with ``ann2snn.save``, and return its
    warnings as the command's lines about ``final``: a network saved as a pickle says why and how
    to load it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save(snn, staged)
    notes = []
    for warning in caught:
        text = str(warning.message).replace(str(staged), str(final))
        _, pickled, reason = text.partition(_PICKLED)
        notes.append(
            f"{final} is saved as a pickle, because the safe format cannot describe the network ({reason}); "
            f"loading it runs code from the file, so it needs ann2snn.load({str(final)!r}, trust_pickle=True)"
            if pickled
            else text
        )
    return notes


def _same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file: the same path after symlinks, or hard links."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_distinct(inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse an output that is the same file as an input or another output (it would destroy it)."""
    pairs = [(a, b) for a in inputs.items() for b in outputs.items()] + list(itertools.combinations(outputs.items(), 2))
    for (a, path_a), (b, path_b) in pairs:
        if _same_file(path_a, path_b):
            raise CliError(f"{b} {path_b} is the same file as {a} {path_a}: give every output its own path")


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path``, symlinks resolved, lies in ``folder`` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def data_inputs(args: argparse.Namespace) -> tuple[dict[str, Path], dict[str, Path]]:
    """The data files and data folders the command reads, by option: ``--calibrate`` and
    ``--evaluate`` (a file, a folder, or the PATH of ``NAME:PATH``) and what plugins name."""
    files: dict[str, Path] = {}
    folders: dict[str, Path] = {}
    for option, value in (("--calibrate", args.calibrate), ("--evaluate", args.evaluate)):
        if not value:
            continue
        for candidate in (Path(value), Path(value.partition(":")[2])) if ":" in value else (Path(value),):
            if candidate.is_file():
                files.setdefault(option, candidate)
            elif str(candidate) != "." and candidate.is_dir():
                folders.setdefault(option, candidate)
    for plugin in getattr(args, "plugins", ()):
        for option, path in _input_paths(plugin, args).items():
            (folders if path.is_dir() else files).setdefault(option, path)
    return files, folders


def _input_paths(plugin: CliPlugin, args: argparse.Namespace) -> dict[str, Path]:
    """``plugin.input_paths(args)``, or the base class's answer for duck-typed plugins."""
    method = getattr(plugin, "input_paths", None)
    return method(args) if method is not None else CliPlugin.input_paths(plugin, args)


def check_outside_data(folders: dict[str, Path], outputs: dict[str, Path]) -> None:
    """Refuse an output inside a data folder the command reads (it would change the data set)."""
    for (option, path), (data_option, folder) in itertools.product(outputs.items(), folders.items()):
        if _inside(path, folder):
            raise CliError(f"{option} {path} is inside the data folder {folder} of {data_option}: outputs never go into input data; write it elsewhere")


def is_saved_network(path: Path) -> bool:
    """True when ``path`` is a file ``ann2snn.save`` wrote (its pickle, read as bytes and not
    unpickled, names the format); False for anything else, a training checkpoint say."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            return name is not None and FORMAT.encode() in archive.read(name)
    except (OSError, zipfile.BadZipFile, RuntimeError, ValueError):
        return False


#: The first line of ``ConversionReport.to_markdown``: what a report the command wrote starts with.
_REPORT_HEADER = b"| node | before | after | threshold | source |\n"


def is_written_report(path: Path) -> bool:
    """True when ``path`` is a markdown report the command wrote (it starts with the report's table header)."""
    try:
        with path.open("rb") as file:
            return file.read(len(_REPORT_HEADER)) == _REPORT_HEADER
    except OSError:
        return False


def is_written_nir(path: Path) -> bool:
    """True when ``path`` is a NIR graph ``ann2snn.export_nir`` wrote (graph metadata ``producer = ann2snn``)."""
    try:
        import h5py

        with h5py.File(path, "r") as file:
            producer = file["node/metadata/producer"][()]
        return producer in (b"ann2snn", "ann2snn")
    except Exception:  # not HDF5, no such entry, h5py missing: not ours
        return False


def is_written_drawing(path: Path) -> bool:
    """True when ``path`` is a drawing ``ann2snn.draw`` wrote (its metadata names it)."""
    from .draw import is_drawing

    return is_drawing(path)


#: option -> (what it writes, the test that an existing file is one that ann2snn wrote).
_OWN_FILES: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "-o": ("a network written by ann2snn.save (a training checkpoint, or another file)", is_saved_network),
    "--report": ("a report written by ann2snn", is_written_report),
    "--nir": ("a NIR graph written by ann2snn", is_written_nir),
    "--draw": ("a drawing written by ann2snn", is_written_drawing),
}


def check_replaceable(option: str, path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing ``path`` that ann2snn did not write as that option's output
    (the fine-tuned SNN checkpoint of a training run, another program's file) unless ``overwrite``."""
    what, ours = _OWN_FILES[option]
    if overwrite or not (path.exists() or path.is_symlink()) or ours(path):
        return
    raise CliError(f"{option} {path} exists and is not {what}: it was left untouched; pass another {option}, or --overwrite to replace it")


#: Drawing formats: the suffix of ``--draw`` picks one.
DRAW_FORMATS = (".png", ".pdf", ".svg")


def check_draw_path(path: Path) -> None:
    """Refuse a ``--draw`` name whose suffix is not a format the drawing is written in, and a missing matplotlib."""
    if path.suffix.lower() not in DRAW_FORMATS:
        said = "has no suffix" if not path.suffix else f"has the suffix {path.suffix}, not an image format"
        raise CliError(f"--draw {path} {said}: give a name ending in {', '.join(DRAW_FORMATS[:-1])} or {DRAW_FORMATS[-1]} (the suffix picks the format)")
    if importlib.util.find_spec("matplotlib") is None:
        raise CliError(f"--draw {path} needs matplotlib, which is not installed: pip install 'ann2snn[plot]'")


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The requested output files by option (``-o`` defaults to MODEL with suffix .snn.pt)."""
    paths = {"-o": args.output or args.model.with_suffix(".snn.pt")}
    paths.update({f"--{name}": getattr(args, name) for name in ("report", "nir", "draw") if getattr(args, name)})
    return paths


def check_outputs(args: argparse.Namespace, outputs: Outputs) -> None:
    """Every check of the outputs before any work: no output that is an input or lies in a data
    folder (even with --overwrite), a drawing format, writable folders, and no file replaced that
    ann2snn did not write unless --overwrite."""
    files, folders = data_inputs(args)
    check_distinct({"the input": args.model, **files}, outputs.paths)
    check_outside_data(folders, outputs.paths)
    if args.draw:
        check_draw_path(args.draw)
    outputs.check()
    for option, path in outputs.paths.items():
        check_replaceable(option, path, args.overwrite)


# -- the command ----------------------------------------------------------------------------------
def _check_model_shape(model: nn.Module, shape: tuple[int, ...]) -> None:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, *shape))
    except Exception as error:
        raise CliError(f"the model does not take inputs of shape [batch, {', '.join(map(str, shape))}]: {str(error).splitlines()[0]}") from error


def _concrete(shape: Optional[tuple[Optional[int], ...]]) -> Optional[tuple[int, ...]]:
    """``shape`` when every size is known; None when it is unknown or has free (None) sizes."""
    return tuple(shape) if shape is not None and all(isinstance(size, int) for size in shape) else None


def _needs_shape(option: str, shape: Optional[tuple[Optional[int], ...]]) -> CliError:
    said = "the model file does not say it" if shape is None else f"the model's is [batch, {', '.join(map(str, shape))}], with free (None) sizes"
    return CliError(f"{option} needs a concrete input shape and {said}: pass --input-shape (like 1,8000) or --calibrate data")


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
        if isinstance(model, ExportedModel) and _about_the_graph(error):
            raise CliError(f"{error} [{args.model} is a torch.export program: {EXPORTED_OPS_NOTE}]") from error
        if "onnx_nodes" in getattr(model, "meta", {}):
            from .onnx_frontend import in_onnx_terms

            raise ConversionError(in_onnx_terms(str(error), model)) from error
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
    with warnings.catch_warnings():  # its warnings come again, and are printed, with the conversion
        warnings.simplefilter("ignore", ConversionWarning)
        config_from(args)  # a bad setting fails before any work
    outputs = Outputs(output_paths(args))
    check_outputs(args, outputs)
    model, file_shape = load_model(args)
    shape = args.input_shape or file_shape  # may hold None sizes (free, e.g. an ONNX dynamic axis)
    if args.input_shape:
        _check_model_shape(model, args.input_shape)
    known = _concrete(shape)  # what NIR and profiling on random inputs need
    for option, wanted in (("--nir", args.nir), ("--profile", args.profile)):
        if wanted and known is None and not args.calibrate:
            raise _needs_shape(option, shape)
    if args.nir and known is not None:
        check_nir_exportable(args, model, known)
    batches = calibration_batches(args, model, shape) if args.calibrate else None
    if known is None and batches:
        first = batches[0][0] if isinstance(batches[0], (list, tuple)) else batches[0]
        known = tuple(first.shape[1:])
        if args.nir:
            check_nir_exportable(args, model, known)
    evaluation = Evaluation(model, *evaluation_data(args, model, shape), args.batch_size) if args.evaluate else None
    with warnings.catch_warnings(record=True) as caught:  # printed below, once each, as the command's own lines
        warnings.simplefilter("always")
        snn = _convert(args, model, args.T[0], batches, shape)
    print(snn.report.to_text(warnings=False))  # the warnings go to stderr, below
    for warning in snn.report.warnings + [str(w.message) for w in caught if str(w.message) not in snn.report.warnings]:
        if batches is not None or not warning.startswith("no calibration data"):  # said below, in CLI terms
            print(f"warning: {in_cli_terms(warning)}", file=sys.stderr)
    if batches is None:
        print("warning: no --calibrate data: thresholds are not balanced (all 1.0), so the SNN will be inaccurate", file=sys.stderr)
    if evaluation is not None:
        evaluate_over_T(args, snn, batches, evaluation)
    notes: list[str] = []
    try:
        outputs.stage("-o", lambda p: notes.extend(save_network(snn, p, outputs.paths["-o"])))
        _extras(args, model, snn, batches, known, outputs)
        written = outputs.commit()
    finally:
        outputs.discard()
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
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


def _extras(args: argparse.Namespace, model: nn.Module, snn: SpikingNetwork, batches: Optional[list[torch.Tensor]], shape: Optional[tuple[int, ...]], outputs: Outputs) -> None:
    """The optional outputs: markdown report, NIR graph, drawing, profile (``shape``: a concrete
    per-example input shape, where known)."""
    if args.report:
        outputs.stage("--report", lambda p: p.write_text(snn.report.to_markdown() + "\n"))
    if args.nir:
        from .nir_export import export_nir

        nir_shape = shape if shape is not None or not batches else tuple(batches[0].shape[1:])  # free sizes: the calibration clips'
        outputs.stage("--nir", lambda p: export_nir(snn, p, input_shape=nir_shape))
    if args.draw:
        from .draw import draw

        outputs.stage("--draw", lambda p: draw(model, snn, p, title=args.model.name))
    if args.profile:
        from .profile import profile

        if batches is None:
            if shape is None:
                raise _needs_shape("--profile", snn.input_shape)
            print("profiling on random inputs (no --calibrate data): rates are only indicative")
            batches = [torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))]
        print(profile(snn, batches))


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or any(s in text for s in ("can't allocate memory", "out of memory", "Cannot allocate memory"))


def main(argv: Optional[Sequence[str]] = None, plugins: Optional[Sequence[CliPlugin]] = None) -> int:
    """Entry point of the ``ann2snn`` console script and ``tools/convert.py``: ``plugins`` add an
    application's models and data sets (default: those installed under ``PLUGIN_GROUP``)."""
    failed: list[str] = []
    if plugins is None:
        plugins, failed = installed_plugins()
    argv = list(sys.argv[1:] if argv is None else argv)
    for plugin in plugins:
        command = _commands(plugin).get(argv[0]) if argv else None
        if command is not None:
            return command[1](argv[1:])
    if failed and argv and not argv[0].startswith("-") and argv[0] != "convert":
        print(f"error: no command {argv[0]!r}: installed plugins that failed to load, which may add it: {'; '.join(failed)}", file=sys.stderr)
        return EXIT_ERROR
    args = build_parser(plugins, failed).parse_args(argv)
    args.plugins, args.failed_plugins = tuple(plugins), failed
    try:
        return run_convert(args)
    except (CliError, ConversionError) as error:
        print(f"error: {in_cli_terms(str(error))}", file=sys.stderr)
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"error: out of memory with --T {max(args.T)} and --batch-size {args.batch_size}: lower them ({_first_line(error)})", file=sys.stderr)
    return EXIT_ERROR
