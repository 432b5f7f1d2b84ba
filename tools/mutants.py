"""Planted-bug (mutation) check: does the test suite catch the bugs of issue 16?

Each mutant is one small, plausible bug: (file, original snippet, mutated snippet, tests). For
each, the script copies the working tree (tracked files and untracked, not ignored ones) into a
temporary folder once, writes the mutation into the copy, runs the mutant's tests there with
pytest, and restores the file. A mutant is caught when those tests fail. The working tree is never
written to. Before the mutants, the unmutated copy must pass every selected test, and the copy
must import its own ``ann2snn`` and ``zoo`` (not the editable install's), or the score means nothing.

    OMP_NUM_THREADS=1 .venv/bin/python tools/mutants.py            # all mutants
    OMP_NUM_THREADS=1 .venv/bin/python tools/mutants.py resume     # those whose name contains "resume"
    .venv/bin/python tools/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]  # pytest arguments: node ids, files, -k expressions


CAL = "tests/test_calibration_values.py"
RESUME = "tests/harness/test_resume.py"
TRAIN_STATE = "tests/harness/test_train_state.py"
DDP = "tests/harness/test_ddp.py"
ROWS = "tests/harness/test_result_rows.py"
ATOMIC = "tests/test_atomic_writes.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- calibration values (ann2snn/calibrate.py) ---------------------------------------------
    Mutant("calibrate: zeros included in the percentile", "ann2snn/calibrate.py", "        positive = values[values > 0]\n", "        positive = values.flatten()\n", (CAL,)),
    Mutant("calibrate: percentile ignored, maximum used", "ann2snn/calibrate.py", "    return torch.quantile(values, percentile / 100.0)\n", "    return values.max()\n", (CAL,)),
    Mutant(
        "calibrate: auto picks the worst candidate", "ann2snn/calibrate.py", "    chosen, corrected = min(errors, key=errors.get)\n", "    chosen, corrected = max(errors, key=errors.get)\n", (CAL,)
    ),
    Mutant(
        "calibrate: per-channel gives every channel the layer's threshold",
        "ann2snn/calibrate.py",
        "            out[c] = _threshold(row, percentile, steps) if row.numel() else layer\n",
        "            out[c] = layer\n",
        (CAL,),
    ),
    # -- graph passes, time loop, convert --------------------------------------------------------
    Mutant("fold_bn: folded even when the conv output has other readers", "ann2snn/passes/fold_bn.py", "    if len(producer.users) != 1:\n", "    if False:\n", (CAL,)),
    Mutant("timeloop: step() never advances its time index", "ann2snn/timeloop.py", "        self._t += 1\n", "        self._t += 0\n", (CAL,)),
    Mutant("convert: shallow copy of the user's model", "ann2snn/convert.py", "trace(copy.deepcopy(model).eval()", "trace(copy.copy(model).eval()", (CAL,)),
    # -- resume (zoo/harness/train.py, zoo/harness/train_state.py) ---------------------------------
    Mutant("resume: optimizer state not restored", "zoo/harness/train.py", "        optimiser.load_state_dict(state.optimizer)\n", "", (RESUME,)),
    Mutant("resume: RNG state not restored", "zoo/harness/train.py", "        torch.set_rng_state(state.rng.cpu())", "        pass", (RESUME,)),
    Mutant("resume: early-stopping counter restarts at 0", "zoo/harness/train.py", "        stale = state.epoch - best_epoch if best_epoch >= 0 else 0\n", "        stale = 0\n", (RESUME,)),
    Mutant(
        "resume: early stop not restored for a finished run",
        "zoo/harness/train_state.py",
        'History(payload["history"], payload["best_epoch"], payload.get("stopped_early", False))',
        'History(payload["history"], payload["best_epoch"])',
        (RESUME,),
    ),
    Mutant("resume: best weights not kept in the checkpoint", "zoo/harness/train.py", "best_state_dict=stopping.best_state,", "best_state_dict=model.state_dict(),", (RESUME,)),
    Mutant("train state: another version read as version 1", "zoo/harness/train_state.py", "        if version != cls.VERSION:\n", "        if False:\n", (TRAIN_STATE,)),
    # -- DDP (zoo/harness/train.py) ---------------------------------------------------------------
    Mutant("ddp: no DistributedSampler", "zoo/harness/train.py", "    if dist.is_initialized():\n        sampler = DistributedSampler", "    if False:\n        sampler = DistributedSampler", (DDP,)),
    Mutant("ddp: no optimizer step", "zoo/harness/train.py", "        optimiser.step()\n", "", (DDP,)),
    Mutant("ddp: model not wrapped in DistributedDataParallel", "zoo/harness/train.py", "train_model = nn.parallel.DistributedDataParallel(model) if", "train_model = model if", (DDP,)),
    Mutant("ddp: buffers not broadcast from rank 0", "zoo/harness/train.py", "            dist.broadcast(buffer, 0)\n", "            pass\n", (DDP,)),
    # -- result rows (zoo/harness/experiment.py) -------------------------------------------------
    Mutant(
        "rows: zero-shot rows evaluate the CNN instead of the SNN",
        "zoo/harness/experiment.py",
        "                    metrics = evaluate(snn, test, device=self.device)",
        "                    metrics = evaluate(cnn, test, device=self.device)",
        (ROWS,),
    ),
    Mutant(
        "rows: zero-shot SNN converted at the fine-tuning T",
        "zoo/harness/experiment.py",
        "snn = self._convert(cnn, model, T, learn_tau=False, tau=tau, encoder=encoder)",
        "snn = self._convert(cnn, model, config.finetune_T, learn_tau=False, tau=tau, encoder=encoder)",
        (ROWS,),
    ),
    # -- all-or-nothing writes ------------------------------------------------------------------
    Mutant("atomic: writes go straight to the target", "ann2snn/atomic.py", "        yield tmp\n        os.replace(tmp, path)\n", "        yield path\n", (ATOMIC,)),
    Mutant("atomic: partial file not removed after a failure", "ann2snn/atomic.py", "    finally:\n        tmp.unlink(missing_ok=True)\n", "    finally:\n        pass\n", (ATOMIC,)),
    Mutant(
        "summary: CSV written straight to the target",
        "zoo/harness/summary.py",
        '    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:',
        '    with path.open("w", newline="") as f:',
        (ATOMIC,),
    ),
    Mutant(
        "summary: markdown written straight to the target",
        "zoo/harness/summary.py",
        '    with atomic_path(paths["markdown"]) as tmp:\n        tmp.write_text(',
        '    if True:\n        paths["markdown"].write_text(',
        (ATOMIC,),
    ),
    Mutant(
        "summary: plots saved straight to the target",
        "zoo/harness/summary.py",
        "        with atomic_path(path) as tmp:\n            fig.savefig(tmp, dpi=dpi)\n",
        "        fig.savefig(path, dpi=dpi)\n",
        (ATOMIC,),
    ),
    Mutant(
        "cli: -o written to the target before the other outputs are ready",
        "ann2snn/cli.py",
        'outputs.stage("-o", lambda p: notes.extend(save_network(snn, p, outputs.paths["-o"])))',
        'outputs.stage("-o", lambda p: notes.extend(save_network(snn, p, outputs.paths["-o"])) or save_network(snn, outputs.paths["-o"], outputs.paths["-o"]))',
        (ATOMIC,),
    ),
)


def copy_tree(destination: Path) -> None:
    """The working tree's tracked and untracked, not ignored, files (as they are now) into ``destination``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is skipped
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def copy_environment(copy: Path) -> dict[str, str]:
    """The environment that makes Python in ``copy`` import the copy's ``ann2snn`` and its zoo:
    the copy on the path, and beside it a folder where ``ann2snn_zoo`` links to the copy's
    ``zoo/`` (found before the editable install's finder, which points at the working tree)."""
    links = copy / ".mutant-packages"
    if not links.exists():
        links.mkdir()
        (links / "ann2snn_zoo").symlink_to(copy / "zoo", target_is_directory=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(links)]), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONDONTWRITEBYTECODE": "1"}


def pytest(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """("passed" | "failed" | "timeout", seconds, output tail) of the tests in ``copy``."""
    env = copy_environment(copy)
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    outcome = "passed" if done.returncode == 0 else "failed"
    lines = (done.stdout + done.stderr).strip().splitlines()
    failed = [line for line in lines if line.startswith("FAILED ")][:1]  # which test
    why = [line[1:].strip() for line in lines if line.startswith("E ")][:1]  # its first assertion line
    return outcome, time.perf_counter() - start, " | ".join(lines[-1:] + failed + why)[:400]


def check_imports(copy: Path) -> None:
    code = "import ann2snn, ann2snn_zoo, zoo; print(ann2snn.__file__); print(ann2snn_zoo.__file__); print(zoo.__file__)"
    files = subprocess.run([sys.executable, "-c", code], cwd=copy, env=copy_environment(copy), capture_output=True, text=True, check=True).stdout.split()
    outside = [f for f in files if not Path(f).resolve().is_relative_to(copy.resolve())]
    if outside:
        sys.exit(f"the copy imports {outside} instead of its own packages: mutants would not be tested")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("select", nargs="*", help="run only mutants whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per test run (a timeout counts as missed)")
    args = parser.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.select or any(word in m.name for word in args.select)]
    if args.list:
        for m in mutants:
            print(f"{m.name}  [{m.file}; {' '.join(m.tests)}]")
        return 0
    if not mutants:
        sys.exit("no mutant matches")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutants-") as folder:
        copy = Path(folder)
        copy_tree(copy)
        check_imports(copy)
        stale = [m.name for m in mutants if (copy / m.file).read_text().count(m.original) != 1]
        if stale:
            sys.exit("these mutants' original snippets are not found exactly once (the code changed; update them):\n  " + "\n  ".join(stale))
        selected = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        outcome, seconds, tail = pytest(copy, selected, args.timeout)
        print(f"baseline (no mutation) {' '.join(selected)}: {outcome} in {seconds:.0f} s  {tail}", flush=True)
        if outcome != "passed":
            sys.exit("the unmutated tests must pass first")
        caught = 0
        for m in mutants:
            path = copy / m.file
            original = path.read_text()
            path.write_text(original.replace(m.original, m.mutated))
            try:
                outcome, seconds, tail = pytest(copy, m.tests, args.timeout)
            finally:
                path.write_text(original)
            verdict = "caught" if outcome == "failed" else "MISSED"
            caught += verdict == "caught"
            print(f"{verdict:7} {m.name}  ({outcome} in {seconds:.0f} s: {tail})", flush=True)
    print(f"score: {caught}/{len(mutants)} caught ({100 * caught / len(mutants):.0f} %) in {time.perf_counter() - start:.0f} s")
    return 0 if caught == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
