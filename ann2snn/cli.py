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

This module holds the arguments, the plugins and the command's flow; beside it, ``cli_inputs``
reads the model and data files, ``cli_outputs`` checks and writes the output files, ``cli_evaluate``
prints the ``--evaluate`` table, and ``cli_messages`` holds ``CliError`` and the messages in the
command's terms.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.metadata
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from . import passes
from .cli_evaluate import Evaluation, evaluate_over_T
from .cli_inputs import balanced_subset as balanced_subset  # re-exported: imported from here by tests
from .cli_inputs import calibration_batches, evaluation_data, load_model
from .cli_messages import EXIT_ERROR, CliError, OneLineParser, _first_line, in_cli_terms, print_warnings, without_fx_excerpts
from .cli_outputs import Outputs, check_distinct, check_draw_path, check_outside_data, check_replaceable, output_paths, save_network
from .config import ConversionConfig
from .convert import convert
from .errors import ConversionError, ConversionWarning
from .exported import EXPORTED_OPS_NOTE, ExportedModel
from .timeloop import SpikingNetwork

#: Largest --T accepted: far beyond any useful simulation, small enough to fail fast rather than exhaust memory.
MAX_STEPS = 100_000


class CommandParser(OneLineParser):
    """The command's parser: one-line errors, and stray numbers (``--T 8 16``) answered with the
    command's way to give several values, joined by commas."""

    def advice(self, message: str) -> str:
        """``message``, with the comma form where the only unrecognized arguments are numbers."""
        extra = message.partition("unrecognized arguments: ")[2].split()
        if extra and all(word.isdigit() for word in extra):  # --T 8 16: the convert command joins values with commas
            return message + "; give several values of one flag joined by commas, e.g. --T 8,16"
        return message


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

    parser = CommandParser(prog="ann2snn", description="Convert trained CNNs into spiking neural networks.")
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


# -- checks before any work ------------------------------------------------------------------------
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
    said: set[str] = set()  # warnings printed: each once, here or in the --evaluate table's recalibrations
    warned = snn.report.warnings + [str(w.message) for w in caught]
    print_warnings([w for w in warned if batches is not None or not w.startswith("no calibration data")], said)  # "no calibration data": below, in CLI terms
    if batches is None:
        print("warning: no --calibrate data: thresholds are not balanced (all 1.0), so the SNN will be inaccurate", file=sys.stderr)
    if evaluation is not None:
        evaluate_over_T(args, snn, batches, evaluation, said)
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


def _said_in_one_line(error: BaseException) -> bool:
    """Whether ``main`` answers ``error`` with a one-line message (else it leaves it uncaught)."""
    return isinstance(error, (CliError, ConversionError)) or (isinstance(error, (MemoryError, RuntimeError)) and _out_of_memory(error))


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
        with without_fx_excerpts(_said_in_one_line):  # fx's excerpt of generated code only for an error not said in one line below
            return run_convert(args)
    except (CliError, ConversionError) as error:
        print(f"error: {in_cli_terms(str(error))}", file=sys.stderr)
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        print(f"error: out of memory with --T {max(args.T)} and --batch-size {args.batch_size}: lower them ({_first_line(error)})", file=sys.stderr)
    return EXIT_ERROR
