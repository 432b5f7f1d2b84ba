"""Zero-shot accuracy at low T on FSDD: old defaults, per-channel auto thresholds, output-space
bias correction (the defaults), conversion-aware QCFS training, and the other neuron models
(reset to zero, Norse's LIF cell), for m5, vgg and resnet over 3 seeds and T in {2, 4, 8, 16, 32,
64}. Prints and writes OUT/lowt.md and OUT/lowt.png.

    python tools/lowt.py --data-dir ../shared/data/fsdd
    python tools/lowt.py --data-dir ../shared/data/fsdd --models m5 --seeds 0      # one cell row
    python tools/lowt.py --data-dir ../shared/data/fsdd --peers    # + SpikingJelly and sinabs rows
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ann2snn_zoo.harness import peers  # noqa: E402
from ann2snn.atomic import atomic_path  # noqa: E402
from ann2snn_zoo.harness.lowt import METHODS, LowTConfig, lowt_tables, plot_lowt, run_lowt  # noqa: E402


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
    parser = argparse.ArgumentParser(prog="lowt.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-dir", help="the FSDD folder (recordings/*.wav); needed unless --merge")
    parser.add_argument(
        "--merge", nargs="+", metavar="FOLDER", help="measure nothing: write the tables and plot of the result rows of these output folders (later folders win on a repeated cell) into --out"
    )
    parser.add_argument("--models", nargs="+", default=list(defaults.models), help="zoo models")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(defaults.seeds), help="training seeds")
    parser.add_argument("--T", nargs="+", type=int, default=list(defaults.T), help="time steps to measure")
    parser.add_argument("--levels", type=int, default=defaults.levels, help="QCFS quantization levels")
    parser.add_argument("--out", default=defaults.out_dir, help="output folder (reruns resume from it)")
    parser.add_argument("--device", default=defaults.device, help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--peers", action="store_true", help="also convert the same ReLU CNNs with SpikingJelly and sinabs (pip install 'ann2snn[peers]'; a missing one is skipped with a note)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="METHOD", help=f"measure only these of our methods (default: all): {', '.join(repr(m) for m in METHODS)}")
    parser.add_argument("--only-peers", action="store_true", help="measure the CNNs and the peers only (implies --peers)")
    args = parser.parse_args(argv)
    if any(t <= 0 for t in args.T) or args.levels <= 0:
        parser.error("--T and --levels take positive integers")
    if args.merge:
        return _merge(args.merge, Path(args.out), tuple(sorted(args.T)))
    if not args.data_dir:
        parser.error("--data-dir is required (the FSDD folder), unless --merge")
    config = LowTConfig(
        data_dir=args.data_dir, models=tuple(args.models), seeds=tuple(args.seeds), T=tuple(sorted(args.T)),
        levels=args.levels, out_dir=args.out, device=args.device, peers=args.peers or args.only_peers, only_peers=args.only_peers, methods=tuple(args.methods) if args.methods else None,
    )  # fmt: skip
    start = time.perf_counter()
    rows = run_lowt(config)
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
    plot_lowt(rows, T, out / "lowt.png", f"FSDD official split: zero-shot SNN accuracy against T (each point: mean ± sd over the seeds it has, up to {_seed_counts(rows)})")
    print(table)


def _merge(folders: list[str], out: Path, T: tuple[int, ...]) -> int:
    """Tables and plot of the result rows of several output folders, into ``out``."""
    rows: dict[str, dict] = {}
    for folder in folders:
        path = Path(folder) / "results.jsonl"
        if not path.is_file():
            raise SystemExit(f"lowt.py: error: {path} does not exist (--merge takes output folders of earlier runs)")
        rows.update({row["cell"]: row for row in map(json.loads, path.read_text().splitlines()) if row})
    out.mkdir(parents=True, exist_ok=True)
    _write(list(rows.values()), T, out, lowt_tables(list(rows.values()), T))
    print(f"wrote {out / 'lowt.md'} and {out / 'lowt.png'} from {len(rows)} cells of {len(folders)} folders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
