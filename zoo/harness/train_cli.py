"""``tools/train.py``: train one zoo CNN (optionally convert and fine-tune it as an SNN); runs
alone or under ``torchrun --nproc_per_node N`` with DistributedDataParallel."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import DataLoader

import ann2snn
from ann2snn.atomic import atomic_path
from ann2snn.cli_messages import CliError, OneLineParser
from ann2snn.cli_outputs import check_outside_data
import ann2snn_zoo as zoo
from ann2snn_zoo.data import registry as datasets
from ann2snn_zoo.errors import DataError
from ann2snn_zoo.harness.checkpoint import CheckpointError
from ann2snn_zoo.harness.distributed import distributed
from ann2snn_zoo.harness.evaluate import evaluate
from ann2snn_zoo.harness.run_folder import RunFolderError
from ann2snn_zoo.harness.train import TrainConfig, device_problem, fit, resolve_device, seed_everything
from ann2snn_zoo.harness.train_state import model_entries
from ann2snn_zoo.registry import front_end as model_front_end

DESCRIPTION = """Train one model of the audio zoo on a data set (AdamW, a one-cycle learning-rate
schedule, early stopping on the validation loss) and print its test accuracy. The
checkpoint, written after every epoch so that --resume continues a killed run, is what
`ann2snn convert` reads. With --snn-T, also convert the trained CNN into an SNN, print
its zero-shot test accuracy, and fine-tune it; its training checkpoint goes beside the
CNN's as NAME.snn-finetuned.pt (not NAME.snn.pt: that is where `ann2snn convert NAME.pt`
writes its SNN). An existing checkpoint is never replaced silently: pass --resume to
continue its run or --overwrite to train from scratch over it. Runs alone or under
torchrun (DistributedDataParallel)."""

EPILOG = """examples:
  python tools/train.py --model m5 --dataset fsdd --data-dir data/fsdd \\
      --epochs 60 --patience 15 --augment-shift 0.1
  python tools/train.py --model vgg --dataset fsdd --data-dir data/fsdd --snn-T 25
  torchrun --nproc_per_node 2 tools/train.py --model m5 --epochs 5

FSDD: python -c "import ann2snn_zoo; ann2snn_zoo.data.download_fsdd('data/fsdd')" downloads it."""

#: The SNN training checkpoint's name beside the CNN's (``cnn.pt`` -> ``cnn.snn-finetuned.pt``):
#: not ``.snn.pt``, where ``ann2snn convert cnn.pt`` writes its SNN by default.
SNN_CHECKPOINT_SUFFIX = ".snn-finetuned.pt"
#: Fine-tuning epochs of the SNN unless --snn-epochs says otherwise.
SNN_EPOCHS = 2


class OutputPathError(Exception):
    """-o cannot be written as given (empty, a folder, an existing file); the message says why."""


class OutputExists(OutputPathError):
    """An output of this run exists and neither --resume nor --overwrite says what to do with it."""


USER_ERRORS = (DataError, CheckpointError, RunFolderError, OutputPathError)  # reported on one line, exit status 2


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0 (shared by the zoo's commands and tools/bench.py)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number above 0, got {text}")
    return value


def whole_number(text: str) -> int:
    """argparse type: a whole number (any sign; the command checks its range)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


#: How a list flag's help shows its accepted form.
LIST_FORM = "space- or comma-separated"


def comma_list(kind: Callable[[str], Any] = str, choices: Optional[Sequence[str]] = None) -> Callable[[str], list[Any]]:
    """argparse type of one word of a list flag: one value or several joined by commas
    (``8,16``; a trailing comma, as in ``--T 8, 16``, ends the word), each read by ``kind`` and,
    with ``choices``, one of them."""

    def parse(text: str) -> list[Any]:
        parts = [part.strip() for part in (text[:-1] if len(text) > 1 and text.endswith(",") else text).split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"empty value in {text!r}: separate values by spaces or single commas, e.g. 8 16 32 or 8,16,32")
        values = [_read(kind, part) for part in parts]
        for value in values:
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(map(str, choices))})")
        return values

    return parse


def _read(kind: Callable[[str], Any], text: str) -> Any:
    """``kind(text)``, a ValueError turned into argparse's error (naming the value, not the word)."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}") from None


class FlatList(argparse.Action):
    """argparse action of a list flag: the values of all its words in order (``--T 8,16 32`` -> [8, 16, 32])."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: Optional[str] = None) -> None:
        setattr(namespace, self.dest, [value for word in values for value in word])


def list_flag(kind: Callable[[str], Any] = str, choices: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """``add_argument`` keywords of a list flag that takes values separated by spaces, commas or
    both (``--T 8 16 32``, ``--T 8,16,32``, ``--T 8,16 32``), each checked by ``kind`` and ``choices``."""
    return {"nargs": "+", "type": comma_list(kind, choices), "action": FlatList}


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number, 0 or more."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number, 0 or more, got {text}")
    return value


def device_name(text: str) -> str:
    """argparse type: auto, or a torch device this machine has (cpu, cuda, cuda:1, mps)."""
    problem = device_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def snn_checkpoint(out: Path) -> Path:
    """The SNN's training checkpoint beside the CNN's ``out`` (``SNN_CHECKPOINT_SUFFIX``)."""
    return out.with_name(out.stem + SNN_CHECKPOINT_SUFFIX)


def snn_network(out: Path) -> Path:
    """The fine-tuned SNN as a network file (``ann2snn.save``, read by ``ann2snn.load``) beside the
    CNN's ``out``: NAME.finetuned.snn.pt, clear of convert's NAME.snn.pt and of the SNN checkpoint."""
    return out.with_name(out.stem + ".finetuned.snn.pt")


def check_outputs(args: argparse.Namespace, out: Path) -> None:
    """Refuse, before any work, a run that would replace an existing checkpoint (or rank weights)
    without --resume or --overwrite, and an output path that is empty, a folder or inside the
    data folder (even with --resume or --overwrite)."""
    if not str(args.out).strip():
        raise OutputPathError("-o is empty: give a checkpoint file name, e.g. -o runs/train/checkpoint.pt")
    paths = [("-o", out)] + ([("the SNN checkpoint", snn_checkpoint(out)), ("the fine-tuned SNN", snn_network(out))] if args.snn_T else [])
    for what, path in paths:
        if path.is_dir():
            raise OutputPathError(f"{what} {path} is a folder: give a file name")
    if args.data_dir and datasets.dataset(args.dataset).local:  # a generated data set reads no folder
        try:
            check_outside_data({"--data-dir": Path(args.data_dir)}, {"-o": out})  # the SNN checkpoint and rank weights go beside it
        except CliError as error:
            raise OutputPathError(str(error)) from error
    if args.resume or args.overwrite:
        return
    existing = [(what, path) for what, path in paths if path.exists()]
    if args.save_rank_weights:
        existing += [("rank weights", path) for path in sorted(out.parent.glob(glob.escape(out.stem) + ".rank*.pt"))]
    if existing:
        what, path = existing[0]
        raise OutputExists(f"{what} {path} already exists: pass --resume to continue that run, or --overwrite to train from scratch and replace it, or choose another -o")


def model_help() -> str:
    """The models by input kind and front end, from the model registry."""
    words = {"waveform": "raw waveforms", "logmel": "log-mel spectrograms"}
    groups: dict[str, list[str]] = {}
    for name in zoo.names("all"):
        spec = zoo.input_spec(name)
        rate = dict(spec.settings).get("sample_rate")
        groups.setdefault(words.get(spec.kind, spec.kind) + (f" at {rate / 1000:g} kHz" if rate else ""), []).append(name)
    return "; ".join(f"{', '.join(models)} take{'s' * (len(models) == 1)} {kind}" for kind, models in groups.items())


def parse_args(argv: list[str] | None, prog: str = "train.py") -> argparse.Namespace:
    """The options of ``argv``; an argument error (exit status 2) for flags that need another."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.snn_T:  # the SNN's options mean nothing without one
        given = [flag for flag, value in (("--compiled-neurons", args.compiled_neurons), ("--learn-tau", args.learn_tau), ("--snn-epochs", args.snn_epochs)) if value]
        if given:
            parser.error(f"{' and '.join(given)} {'set' if len(given) > 1 else 'sets'} up the SNN's fine-tuning: give --snn-T too")
    args.snn_epochs = args.snn_epochs or SNN_EPOCHS
    return args


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    """The parser of ``tools/train.py`` and ``ann2snn train`` (``prog``)."""
    parser = OneLineParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("model and data")
    data.add_argument("--model", default="m5", choices=zoo.names("all"), help=f"zoo model: {model_help()} (default: %(default)s)")
    data.add_argument("--dataset", default="synthetic", choices=datasets.names(), help=f"{datasets.describe()} (default: %(default)s)")
    data.add_argument("--data-dir", metavar="PATH", help="the data set's local folder (FSDD: the folder holding recordings/, or recordings/ itself)")
    data.add_argument("--test-speaker", metavar="NAME", help="FSDD: hold this speaker's clips out as the test set instead of the official split (e.g. theo)")
    data.add_argument("--skip-bad", action="store_true", help="drop unreadable WAV files with a warning instead of stopping")
    data.add_argument("--augment-shift", type=non_negative_float, metavar="SECONDS", help="train with random time shifts of up to this many seconds (default: none)")
    training = parser.add_argument_group("training")
    training.add_argument("--epochs", type=positive_int, default=20, help="maximum number of epochs (default: %(default)s)")
    training.add_argument("--patience", type=positive_int, default=8, help="stop after this many epochs without a better validation loss (default: %(default)s)")
    training.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate of the one-cycle schedule (default: %(default)s; the SNN fine-tunes at a tenth of it)")
    training.add_argument("--batch-size", type=positive_int, default=64, help="examples per batch (default: %(default)s)")
    training.add_argument("--seed", type=int, default=0, help="seed of the weights, the data order and augmentation (default: %(default)s)")
    training.add_argument("--device", type=device_name, default="auto", help="cpu, cuda, cuda:1, ... or auto: CUDA when available (default: %(default)s)")
    training.add_argument("--max-batches", type=positive_int, metavar="N", help="batches per epoch, for quick checks (default: all)")
    snn = parser.add_argument_group("spiking network (optional)")
    snn.add_argument(
        "--snn-T",
        type=positive_int,
        metavar="T",
        help="after training, convert the CNN into an SNN of T time steps (calibrated on 8 random training batches), print its zero-shot accuracy and fine-tune it (default: no SNN)",
    )
    snn.add_argument("--snn-epochs", type=positive_int, help=f"fine-tuning epochs of the SNN (default: {SNN_EPOCHS})")
    snn.add_argument(
        "--learn-tau", action="store_true", help="convert with trainable membrane time constants (leaky neurons starting at 100 steps) instead of integrate-and-fire neurons (default: off)"
    )
    snn.add_argument(
        "--compiled-neurons",
        action="store_true",
        help="fine-tune with snn.compiled_neurons: each neuron step one torch.compile kernel (faster steps on CPU after tens of seconds of compiling; equal up to rounding; default: off)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "-o", "--out", default="runs/train/checkpoint.pt", metavar="PATH",
        help=f"checkpoint path; the SNN's training checkpoint goes beside it with the suffix {SNN_CHECKPOINT_SUFFIX} "
        "(NAME.snn.pt is left to `ann2snn convert`); a missing folder is created. If it exists, pass --resume or --overwrite (default: %(default)s)",
    )  # fmt: skip
    again = output.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the checkpoint's last finished epoch (a finished run is not trained again)")
    again.add_argument("--overwrite", action="store_true", help="train from scratch and replace existing checkpoints (-o, the SNN's) after the first epoch")
    output.add_argument("--save-rank-weights", action="store_true", help="also write each rank's final weights beside the checkpoint (to check that DDP ranks agree)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return parser


def report(error: Exception) -> int:
    """Print a user error as one ``error: ...`` line on stderr; returns the exit status, 2."""
    print("error: " + " ".join(str(error).split()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    args = parse_args(argv, prog)
    try:
        return train(args)
    except USER_ERRORS as error:
        return report(error)


def train(args: argparse.Namespace) -> int:
    """Train (and optionally convert and fine-tune) as ``args`` say."""
    device = resolve_device(args.device)
    out = Path(args.out)
    check_outputs(args, out)
    with distributed(device) as rank:
        log = print if rank == 0 else (lambda _: None)
        seed_everything(args.seed)
        front_end = model_front_end(args.model, args.dataset)  # the data set's rate under the model's own settings
        options = {"skip_bad": args.skip_bad}
        if args.test_speaker:
            options["test_speaker"] = args.test_speaker
        augment = zoo.Augment(shift_s=args.augment_shift) if args.augment_shift else None
        splits = zoo.data.load_splits(args.dataset, args.data_dir, front_end=front_end, augment=augment, **options)
        shape = tuple(splits["train"][0][0].shape)
        model = zoo.create(args.model, n_classes=splits.n_classes, input_shape=shape)
        config = TrainConfig(
            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, device=args.device, patience=args.patience,
            max_batches=args.max_batches, progress=not args.no_progress,
        )  # fmt: skip
        extra = model_entries(args.model, {"n_classes": splits.n_classes, "input_shape": list(shape)})
        fit(model, splits["train"], splits["val"], config, out, args.resume, extra, desc=f"{args.model} CNN", log=log)
        log(f"CNN test top-1: {evaluate(model, splits['test'], device=device).top1:.1f} %  (checkpoint: {out})")
        final = model
        if args.snn_T:
            # a seeded random draw: the training split is stored class by class, so its first batches hold few classes
            with torch.random.fork_rng():  # the augmentation's shifts too, whatever ran before
                torch.manual_seed(args.seed)
                order = torch.Generator().manual_seed(args.seed)
                loader = DataLoader(splits["train"], batch_size=args.batch_size, shuffle=True, generator=order)
                calibration = [x for (x, _), _ in zip(loader, range(8))]
            snn = ann2snn.convert(model.eval(), T=args.snn_T, learn_tau=args.learn_tau, calibration=calibration)
            log(f"zero-shot SNN test top-1 at T={args.snn_T}: {evaluate(snn, splits['test'], device=device).top1:.1f} %")
            snn.compiled_neurons = args.compiled_neurons
            snn_config = dataclasses.replace(config, epochs=args.snn_epochs, lr=args.lr / 10)
            fit(snn, splits["train"], splits["val"], snn_config, snn_checkpoint(out), args.resume, model_entries(args.model, kind="snn"), desc="SNN", log=log)
            log(f"retrained SNN test top-1: {evaluate(snn, splits['test'], device=device).top1:.1f} %")
            if rank == 0:
                ann2snn.save(snn, snn_network(out))
                log(f"fine-tuned SNN: {snn_network(out)} (ann2snn.load reads it)")
            final = snn
        if args.save_rank_weights:
            with atomic_path(out.with_name(f"{out.stem}.rank{rank}.pt")) as tmp:
                torch.save(final.state_dict(), tmp)
    return 0
