"""Zero-shot accuracy at low T on FSDD: old defaults, per-channel auto thresholds, output-space
bias correction (the defaults), conversion-aware QCFS training, and the other neuron models
(reset to zero, Norse's LIF cell), for m5, vgg and resnet over 3 seeds and T in {2, 4, 8, 16, 32,
64}. Prints and writes OUT/lowt.md and OUT/lowt.png.

    python tools/lowt.py --data-dir ../shared/data/fsdd
    python tools/lowt.py --data-dir ../shared/data/fsdd --models m5 --seeds 0      # one cell row
    python tools/lowt.py --data-dir ../shared/data/fsdd --peers    # + SpikingJelly and sinabs rows
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ann2snn_zoo as zoo  # noqa: E402
from ann2snn_zoo.harness import peers  # noqa: E402
from ann2snn.atomic import atomic_path  # noqa: E402
from ann2snn.cli_messages import OneLineParser  # noqa: E402
from ann2snn_zoo.harness.lowt import METHODS, LowTConfig, LowTError, check_folder, lowt_tables, merge_rows, plot_lowt, run_lowt  # noqa: E402
from ann2snn_zoo.harness.run_folder import RunFolderError, check_path_given, folder_lock  # noqa: E402
from ann2snn_zoo.harness.train_cli import LIST_FORM, USER_ERRORS, list_flag, positive_int, report, whole_number  # noqa: E402

#: Reported as one ``error:`` line, exit status 2: a missing data folder, an unusable output folder
#: (a file, in use, measured with other settings, another tool's), an unknown model or device.
ERRORS = (*USER_ERRORS, LowTError)


def _seed_counts(rows: list[dict]) -> str:
    """'3 seeds', or per model where the counts differ: 'm5: 3 seeds, vgg: 1 seed'."""
    seeds = {}
    for row in rows:
        seeds.setdefault(row["model"], set()).add(row["seed"])
    counts = {model: len(s) for model, s in seeds.items()}
    word = lambda n: f"{n} seed{'s' * (n > 1)}"  # noqa: E731
    if len(set(counts.values())) == 1:
        return word(next(iter(counts.values())))
    return ", ".join(f"{model}: {word(n)}" for model, n in counts.items())


def main(argv: list[str] | None = None) -> int:
    defaults = LowTConfig()
    parser = OneLineParser(prog="lowt.py", description=__doc__.split("\n\n")[0])
    words = lambda values: " ".join(map(str, values))  # noqa: E731  a list default as the user types it
    parser.add_argument("--data-dir", metavar="PATH", help="the FSDD folder (recordings/*.wav); needed unless --merge")
    parser.add_argument(
        "--merge", nargs="+", metavar="FOLDER", help="measure nothing: write the tables and plot of the result rows of these output folders (later folders win on a repeated cell) into --out"
    )
    parser.add_argument(
        "--models", **list_flag(choices=zoo.names("all")), default=list(defaults.models), metavar="MODEL",
        help=f"zoo models, {LIST_FORM}: {', '.join(zoo.names('all'))} (the QCFS methods: m5, vgg, resnet; default: {words(defaults.models)})",
    )  # fmt: skip
    parser.add_argument("--seeds", **list_flag(whole_number), default=list(defaults.seeds), metavar="SEED", help=f"training seeds, {LIST_FORM}, e.g. 0 1 2 or 0,1,2 (default: {words(defaults.seeds)})")
    parser.add_argument("--T", **list_flag(positive_int), default=list(defaults.T), metavar="T", help=f"time steps to measure, {LIST_FORM}, e.g. 8 16 32 or 8,16,32 (default: {words(defaults.T)})")
    parser.add_argument("--levels", type=positive_int, default=defaults.levels, help="QCFS quantization levels (default: %(default)s)")
    parser.add_argument("--out", metavar="FOLDER", default=defaults.out_dir, help="output folder (reruns resume from it; default: %(default)s)")
    parser.add_argument("--device", default=defaults.device, help="auto (CUDA when available), cpu, cuda, cuda:N or mps (default: %(default)s)")
    parser.add_argument("--peers", action="store_true", help="also convert the same ReLU CNNs with SpikingJelly and sinabs (pip install 'ann2snn[peers]'; a missing one is skipped with a note)")
    parser.add_argument(  # not comma-separated: method names hold commas
        "--methods", nargs="+", choices=list(METHODS), metavar="METHOD", help=f"measure only these of our methods (default: all), one quoted name each: {', '.join(repr(m) for m in METHODS)}"
    )
    parser.add_argument("--only-peers", action="store_true", help="measure the CNNs and the peers only (implies --peers)")
    args = parser.parse_args(argv)
    if args.merge:
        try:
            check_path_given(args.out, "--out", "a folder for the merged tables")
            return _merge(args.merge, Path(args.out), tuple(sorted(args.T)))
        except ERRORS as error:
            return report(error)
    if not args.data_dir:
        parser.error("--data-dir is required (the FSDD folder), unless --merge")
    config = LowTConfig(
        data_dir=args.data_dir, models=tuple(args.models), seeds=tuple(args.seeds), T=tuple(sorted(args.T)),
        levels=args.levels, out_dir=args.out, device=args.device, peers=args.peers or args.only_peers, only_peers=args.only_peers, methods=tuple(args.methods) if args.methods else None,
    )  # fmt: skip
    start = time.perf_counter()
    try:
        rows = run_lowt(config)
    except ERRORS as error:
        return report(error)
    minutes = (time.perf_counter() - start) / 60
    table = lowt_tables(rows, config.T)
    if config.peers:
        notes = [note for note in map(peers.missing, peers.PEERS) if note]
        table += "".join(f"\n{note}\n" for note in notes)
    out = Path(config.out_dir)
    _write(rows, config.T, out, table)
    print(f"wrote {out / 'lowt.md'} and {out / 'lowt.png'} ({minutes:.1f} min)")
    return 0


def _write(rows: list[dict], T: tuple[int, ...], out: Path, table: str) -> None:
    with atomic_path(out / "lowt.md") as tmp:
        tmp.write_text(table)
    seeds = _seed_counts(rows)
    points = "one seed" if seeds == "1 seed" else f"mean ± sd over the seeds it has, up to {seeds}"
    plot_lowt(rows, T, out / "lowt.png", f"FSDD official split: zero-shot SNN accuracy against T (each point: {points})")
    print(table)


def _merge(folders: list[str], out: Path, T: tuple[int, ...]) -> int:
    """Tables and plot of the result rows of several lowt.py output folders, into ``out`` (which is
    locked while written, and may not be another tool's folder)."""
    rows = merge_rows([Path(folder) for folder in folders])
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{path} is a file, not a folder; pass an --out folder path")
    check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        _write(rows, T, out, lowt_tables(rows, T))
    print(f"wrote {out / 'lowt.md'} and {out / 'lowt.png'} from {len(rows)} cells of {len(folders)} folders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
