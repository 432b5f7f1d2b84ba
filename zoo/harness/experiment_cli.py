"""The study's command, ``ann2snn experiment`` (and ``python tools/experiment.py``): train CNNs,
convert, measure zero-shot SNNs over T, retrain, train from scratch; results and plots in --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ann2snn.cli_messages import OneLineParser
from ann2snn.encoders import ENCODERS
import ann2snn_zoo as zoo
from ann2snn_zoo.data import registry as datasets
from ann2snn_zoo.harness.experiment import ExperimentConfig, load_histories, run_experiment
from ann2snn_zoo.harness.presets import PRESETS
from ann2snn_zoo.harness.summary import check_merge_out, merge_runs, merge_settings, write_outputs
from ann2snn_zoo.harness.train_cli import LIST_FORM, USER_ERRORS, list_flag, non_negative_float, positive_float, positive_int, report, whole_number

DESCRIPTION = "Run the study: train CNNs, convert, measure zero-shot SNNs over T, retrain, train from scratch."
EPILOG = """examples:
    ann2snn experiment                              # built-in synthetic set, quick preset (< 3 min)
    ann2snn experiment --preset fsdd --data-dir data/fsdd        # README table, 3 seeds
    ann2snn experiment --preset fsdd-sweep --data-dir data/fsdd  # the full study
    ann2snn experiment --preset fsdd-loso --data-dir data/fsdd   # leave-one-speaker-out, 6 folds
    ann2snn experiment --preset fsdd-study --data-dir data/fsdd  # the study's T grid, encoders retrained
    ann2snn experiment --preset fsdd-loso-small --data-dir data/fsdd  # M5 + the study's small CNN, 6 folds

A killed run resumes: rerun the same command (finished cells are skipped, training resumes from
its last checkpoint). Results go to --out: results.jsonl/.csv/.md and PNG plots.

--merge DIR... --out NEW measures nothing: it writes the tables and plots of finished runs into a
new folder, with the settings the runs recorded (their config.json: fine-tuning T, data set; the
preset and other options are ignored). The runs must share every setting that changes results;
only models, seeds, T lists and encoders may differ. A cell in more than one folder keeps the
LAST folder's row (as lowt.py --merge): list a rerun after the run it corrects.
"""


def build_parser(prog: str = "experiment.py") -> argparse.ArgumentParser:
    """The parser of ``ann2snn experiment`` / ``tools/experiment.py``."""
    parser = OneLineParser(prog=prog, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="named settings (zoo/harness/presets.py) that the options below override (default: %(default)s)")
    parser.add_argument("--dataset", choices=datasets.names(), help=f"{datasets.describe()} (default: the preset's)")
    parser.add_argument("--data-dir", metavar="PATH", help="the data set's local folder (FSDD: the folder holding recordings/, or recordings/ itself); needed by local data sets (default: none)")
    parser.add_argument(
        "--models", **list_flag(choices=zoo.names("all")), metavar="MODEL",
        help=f"zoo models, {LIST_FORM}: {', '.join(zoo.names('all'))} (study_m5, study_piczak, study_hjh: the study's; m5_4k: M5 at 4 kHz) (default: the preset's)",
    )  # fmt: skip
    parser.add_argument("--seeds", **list_flag(whole_number), metavar="SEED", help=f"training seeds, {LIST_FORM}, e.g. 0 1 2 or 0,1,2 (default: the preset's)")
    parser.add_argument("--out", metavar="FOLDER", help="results folder; rerun the same command to resume it (default: the preset's, runs/PRESET)")
    parser.add_argument("--device", help="auto (CUDA when available), cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--cnn-epochs", type=positive_int, help="maximum CNN training epochs, for every model (default: the preset's, per model)")
    parser.add_argument("--patience", type=positive_int, help="epochs without a better validation loss before stopping, for every model (default: the preset's, per model; else 8)")
    parser.add_argument("--augment-shift", type=non_negative_float, metavar="SECONDS", help="train with random time shifts of up to this many seconds, every model; 0: none (default: the preset's)")
    parser.add_argument("--snn-epochs", type=positive_int, help="fine-tuning epochs of each converted SNN (default: the preset's)")
    parser.add_argument("--tau-lr-scale", type=positive_float, help="fine-tuning: learning rate of the time constants over the weights' (default: 1)")
    parser.add_argument("--scratch-epochs", type=positive_int, help="training epochs of the SNN trained from scratch (default: the preset's)")
    parser.add_argument("--finetune-T", type=positive_int, metavar="T", help="time steps of fine-tuning and of the SNN trained from scratch (default: the preset's)")
    parser.add_argument("--T", **list_flag(positive_int), dest="zero_shot_T", metavar="T", help=f"zero-shot time steps, {LIST_FORM}, e.g. 8 16 32 or 8,16,32 (default: the preset's)")
    parser.add_argument("--lif-T", **list_flag(positive_int), dest="lif_zero_shot_T", metavar="T", help=f"zero-shot time steps of the LIF network, {LIST_FORM} (default: the preset's)")
    parser.add_argument("--encoders", **list_flag(choices=ENCODERS), metavar="ENCODER", help=f"input encoders measured zero-shot, {LIST_FORM}: {', '.join(ENCODERS)} (default: the preset's)")
    parser.add_argument(
        "--retrain-encoders", **list_flag(choices=ENCODERS), metavar="ENCODER",
        help=f"input encoders fine-tuned after conversion (fixed tau), {LIST_FORM}: {', '.join(ENCODERS)} (default: the preset's)",
    )  # fmt: skip
    parser.add_argument("--retrain-T", **list_flag(positive_int), metavar="T", help=f"time steps the --retrain-encoders are fine-tuned at, {LIST_FORM} (default: the preset's, else --finetune-T)")
    parser.add_argument("--test-speaker", help="FSDD: hold this speaker out as the test set (default: the official split)")
    parser.add_argument("--cross-validation", choices=("speaker",), help="FSDD: leave-one-speaker-out, one run per speaker in OUT/fold-<speaker> (default: the preset's)")
    parser.add_argument("--skip-bad", action="store_true", help="drop unreadable WAV files with a warning instead of stopping")
    parser.add_argument("--max-batches", type=positive_int, help="batches per epoch, for quick checks (default: all)")
    parser.add_argument("--no-scratch", action="store_true", help="skip training the SNN from scratch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="measure nothing: combine the results of finished runs (e.g. one per machine) into a new --out, with their recorded settings; later folders win on a repeated cell",
    )
    return parser


def parse_args(argv: list[str] | None, prog: str = "experiment.py") -> argparse.Namespace:
    return build_parser(prog).parse_args(argv)


def config_from(args: argparse.Namespace) -> ExperimentConfig:
    settings = dict(PRESETS[args.preset])
    overrides = {
        "dataset": args.dataset, "data_dir": args.data_dir, "models": args.models and tuple(args.models),
        "seeds": args.seeds and tuple(args.seeds), "out_dir": args.out, "device": args.device,
        "cnn_epochs": args.cnn_epochs, "snn_epochs": args.snn_epochs, "tau_lr_scale": args.tau_lr_scale, "scratch_epochs": args.scratch_epochs,
        "finetune_T": args.finetune_T, "zero_shot_T": args.zero_shot_T and tuple(args.zero_shot_T),
        "lif_zero_shot_T": args.lif_zero_shot_T and tuple(args.lif_zero_shot_T), "encoders": args.encoders and tuple(args.encoders),
        "test_speaker": args.test_speaker, "max_batches": args.max_batches, "patience": args.patience,
        "cross_validation": args.cross_validation, "retrain_encoders": args.retrain_encoders and tuple(args.retrain_encoders),
        "retrain_T": args.retrain_T and tuple(args.retrain_T),
    }  # fmt: skip
    settings.update({k: v for k, v in overrides.items() if v is not None})
    given = {"epochs": args.cnn_epochs, "patience": args.patience}
    settings["cnn_training"] = {  # the command line's --cnn-epochs / --patience apply to every model
        model: {k: v for k, v in fields.items() if given.get(k) is None} for model, fields in settings.get("cnn_training", {}).items()
    }
    if args.augment_shift is not None:
        settings["augment"] = {model: {"shift_s": args.augment_shift} for model in settings["models"] if args.augment_shift > 0}
    if args.skip_bad:
        settings["dataset_options"] = {**settings.get("dataset_options", {}), "skip_bad": True}
    if args.no_scratch:
        settings["from_scratch"] = False
    if args.no_progress:
        settings["progress"] = False
    return ExperimentConfig(**settings)


def _needs_data_dir(config: ExperimentConfig) -> bool:
    return config.data_dir is None and datasets.dataset(config.dataset).local


def main(argv: list[str] | None = None, prog: str = "experiment.py") -> int:
    args = parse_args(argv, prog)
    config = config_from(args)
    start = time.perf_counter()
    try:
        if args.merge:
            if not args.out:
                return report(ValueError("--merge needs --out: a new folder for the merged tables and plots"))
            folders = [Path(d) for d in args.merge]
            out = Path(args.out)
            check_merge_out(out, folders)
            settings = merge_settings(folders)
            rows, histories = merge_runs(folders)
            finetune_T, dataset = settings["finetune_T"], settings["dataset"]
        else:
            if _needs_data_dir(config):
                source = f"--preset {args.preset}" if args.dataset is None else f"--dataset {config.dataset}"
                return report(ValueError(f"{config.dataset} ({source}) needs --data-dir: the local folder holding the data set (e.g. --data-dir data/{config.dataset})"))
            out = Path(config.out_dir)
            rows, histories = run_experiment(config), load_histories(config.out_dir)
            finetune_T, dataset = config.finetune_T, None
    except USER_ERRORS as error:
        return report(error)
    paths = write_outputs(rows, out, finetune_T, histories, dataset)
    print()
    print(paths["markdown"].read_text())
    print(f"finished in {time.perf_counter() - start:.0f} s; results and plots in {out}/:")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0
