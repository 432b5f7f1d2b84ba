"""Zero-shot accuracy at low T: the CNN, the compiler's old defaults, per-channel "auto"
thresholds, output-space correction (today's defaults), a conversion-aware (QCFS) CNN and its
conversion, and the other neuron models (reset to zero; Norse's LIF cell, nearly IF at tau 1000)
with today's defaults, per model, seed and T; a table, a time-to-accuracy table and a plot. With ``peers``,
the same ReLU CNNs are also converted by SpikingJelly and sinabs (``zoo.harness.peers``) on the
same calibration batches and T, and measured the same way.

    python tools/lowt.py --data-dir ../shared/data/fsdd          # m5, vgg, resnet x 3 seeds

CNNs are trained by the study's harness (``zoo.harness.experiment``) with its per-model recipe,
in ``OUT/relu`` and ``OUT/qcfs``; a rerun reuses them and skips the cells already measured. So one
run at a time holds the folder (``zoo.harness.run_folder``'s lock), and ``OUT/config.json`` records
the settings that change results (``result_settings``): a rerun with others is refused, as is a
folder written by another tool (tools/experiment.py writes results.jsonl too).
"""

from __future__ import annotations

import json
import math
import textwrap
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import ann2snn
import ann2snn_zoo as zoo
from ann2snn_zoo.harness.evaluate import evaluate
from ann2snn_zoo.harness.experiment import Experiment, ExperimentConfig, Results, check_seeds
from ann2snn_zoo.harness import peers
from ann2snn_zoo.harness.run_folder import RunFolderError, check_data_dir, check_path_given, folder_lock, read_json, read_rows, write_json
from ann2snn_zoo.harness.summary import mean_spread, save_figure
from ann2snn_zoo.harness.train import device_problem

#: Conversion settings per method, and whether it converts the QCFS-trained CNN.
METHODS: dict[str, tuple[dict[str, Any], bool]] = {
    "old defaults (per layer, 99.9)": (dict(per_channel=False, percentile=99.9, correction="none"), False),
    "per-channel auto": (dict(per_channel=True, percentile="auto", correction="none"), False),
    "bias correction (default)": (dict(), False),
    "QCFS CNN, converted": (dict(correction="none"), True),
    "QCFS CNN + bias correction": (dict(), True),
    "reset-to-zero neurons": (dict(neuron="reset-to-zero"), False),
    "Norse LIF cell (tau 1000)": (dict(neuron="norse", tau=1000.0), False),
    # correction="auto": bias, initial potential or both, whichever reproduces the CNN best on
    # held-out calibration examples; "potential+bias": a potential pass, then the bias passes
    "auto correction": (dict(correction="auto"), False),
    "QCFS CNN + auto correction": (dict(correction="auto"), True),
    "potential+bias correction": (dict(correction="potential+bias"), False),
    "QCFS CNN + potential+bias correction": (dict(correction="potential+bias"), True),
}


@dataclass(frozen=True)
class LowTConfig:
    dataset: str = "fsdd"
    data_dir: Optional[str] = None
    models: tuple[str, ...] = ("m5", "vgg", "resnet")
    seeds: tuple[int, ...] = (0, 1, 2)
    T: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
    levels: int = 8
    out_dir: str = "runs/lowt"
    device: str = "auto"
    cnn_epochs: int = 20
    max_batches: Optional[int] = None
    cnn_training: dict[str, dict[str, Any]] = field(default_factory=lambda: {"m5": {"epochs": 60, "patience": 15}})
    augment: dict[str, dict[str, Any]] = field(default_factory=lambda: {"m5": {"shift_s": 0.1}})
    progress: bool = False
    peers: bool = False  # also convert the ReLU CNNs with SpikingJelly and sinabs (those installed)
    only_peers: bool = False  # measure the CNNs and the peers only, not METHODS
    methods: Optional[tuple[str, ...]] = None  # a subset of METHODS (None: all)

    def experiment(self, activation: str) -> ExperimentConfig:
        """The harness configuration that trains this study's ReLU or QCFS CNNs."""
        options = {m: {"activation": "qcfs", "levels": self.levels} for m in self.models} if activation == "qcfs" else {}
        return ExperimentConfig(
            dataset=self.dataset, data_dir=self.data_dir, models=self.models, seeds=self.seeds,
            out_dir=str(Path(self.out_dir) / activation), device=self.device, cnn_epochs=self.cnn_epochs,
            max_batches=self.max_batches, cnn_training=self.cnn_training, augment=self.augment,
            model_options=options, progress=self.progress,
        )  # fmt: skip


#: What config.json's "tool" says in a folder of this measurement.
TOOL = "lowt"
#: LowTConfig fields that change no result (where the folder is, the device, progress bars) or
#: only choose which cells run (a cell's id names its model, seed, method and T): a rerun may change
#: them. Every other field (data, QCFS levels, the CNNs' training) changes results.
RERUNNABLE = frozenset({"out_dir", "device", "progress", "models", "seeds", "T", "peers", "only_peers", "methods"})


#: The zoo models with an ``activation="qcfs"`` option (zoo.models.activation): the QCFS methods need one.
QCFS_MODELS = ("m5", "vgg", "resnet", "m5_4k")


class LowTError(Exception):
    """The measurement cannot run as asked; the message names the problem and the way out."""


def result_settings(config: LowTConfig) -> dict[str, Any]:
    """The settings of ``config`` that change results (the data folder as an absolute path)."""
    settings = {k: v for k, v in asdict(config).items() if k not in RERUNNABLE}
    settings["data_dir"] = str(Path(config.data_dir).resolve()) if config.data_dir else None
    return settings


def check_config(config: LowTConfig) -> None:
    """Raise LowTError, RunFolderError or DataError (zoo.errors) if ``config`` cannot run: an
    unknown model or method, a model without a QCFS variant when a QCFS method is asked for, a
    seed numpy refuses, a device torch does not know or has not got, an output path that is empty
    or a file, a data folder that is empty, a file or missing.
    Creates nothing."""
    known = zoo.names("all")
    for model in config.models:
        if model not in known:
            raise LowTError(f"unknown model {model!r}; pass --models from {', '.join(known)}")
    unknown = [m for m in config.methods or () if m not in METHODS]
    if unknown:
        raise LowTError(f"unknown method {unknown[0]!r}; pass --methods from {', '.join(map(repr, METHODS))}")
    if any(METHODS[m][1] for m in _wanted(config)):
        for model in config.models:
            if model not in QCFS_MODELS:
                raise LowTError(f"model {model} has no QCFS variant; pass --methods without the QCFS ones, or --models from {', '.join(QCFS_MODELS)}")
    check_seeds(config.seeds)
    problem = device_problem(config.device)
    if problem:
        raise LowTError(f"--device {problem}")
    check_path_given(config.out_dir, "--out", "a folder for the results")
    check_data_dir(config.data_dir)
    out = Path(config.out_dir)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"{path} is a file, not a folder; pass an --out folder path")
    if config.data_dir and Path(config.data_dir).resolve() in (out.resolve(), *out.resolve().parents):
        raise RunFolderError(f"--out {out} is inside the data folder {config.data_dir}; pass an --out outside it")
    zoo.data.splits.check_source(config.dataset, config.data_dir)


def check_folder(out: Path, settings: dict[str, Any] | None = None, way_out: str = "pass another --out") -> None:
    """Raise RunFolderError unless ``out`` is new or a folder of this measurement: written by
    another tool (its config.json says so), holding results without a config.json (recorded by no
    one), or (with ``settings``, from ``result_settings``) measured with other settings."""
    stored = read_json(out / "config.json")
    if stored is None:
        if settings is not None and any((out / name).exists() for name in ("results.jsonl", "relu", "qcfs")):
            raise RunFolderError(
                f"{out} holds results but no config.json recording the settings they were measured with (an older lowt.py, or another tool); pass a new --out (lowt.py --merge still shows its results)"
            )
        return
    if stored.get("tool") != TOOL:
        tool = stored.get("tool") or ("tools/experiment.py" if "zero_shot_T" in stored else "another tool")
        raise RunFolderError(f"{out} is an output folder of {tool}, not of lowt.py; {way_out}")
    if settings is not None:
        changed = _changed(stored, settings)
        if changed:
            raise RunFolderError(f"{out} holds results measured with other settings ({'; '.join(changed)}); rerun with the folder's settings to resume it, or pass a new --out to run these settings")


def _changed(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """'key: stored -> new' for every setting of ``settings`` (``result_settings``) that ``stored``
    (a config.json) records otherwise; one it lacks counts as its default."""
    defaults = json.loads(json.dumps(result_settings(LowTConfig())))
    settings = json.loads(json.dumps(settings))
    return [f"{k}: {json.dumps(stored.get(k, defaults.get(k)))} -> {json.dumps(v)}" for k, v in settings.items() if stored.get(k, defaults.get(k)) != v]


def read_lowt_rows(folder: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The recorded result settings (None for a folder of an older lowt.py) and the result rows of
    low-T output folder ``folder`` (read, never rewritten); RunFolderError for any other folder."""
    path = folder / "results.jsonl"
    if not path.is_file():
        raise RunFolderError(f"{path} does not exist; --merge takes output folders of earlier lowt.py runs")
    check_folder(folder, way_out="--merge takes output folders of lowt.py runs")
    rows = read_rows(path, repair=False)
    stored = read_json(folder / "config.json")
    if stored is None and any("kind" in row or "method" not in row for row in rows):  # experiment rows have a kind, no method
        raise RunFolderError(f"{folder} is not an output folder of lowt.py (its results.jsonl holds other rows); --merge takes output folders of lowt.py runs")
    if stored is None:
        return None, rows
    return {k: stored.get(k) for k in result_settings(LowTConfig())}, rows


def merge_rows(folders: list[Path]) -> list[dict[str, Any]]:
    """The result rows of several low-T output folders (later folders win on a repeated cell);
    RunFolderError if one is not such a folder, if their recorded settings that change results
    differ (a table would mix, say, 8- and 4-level QCFS cells), or if they hold no rows."""
    rows: dict[str, dict[str, Any]] = {}
    first: tuple[Path, dict[str, Any]] | None = None
    for folder in folders:
        settings, folder_rows = read_lowt_rows(folder)
        if settings is not None and first is None:
            first = (folder, settings)
        elif settings is not None:
            changed = _changed(first[1], settings)
            if changed:
                raise RunFolderError(f"{first[0]} and {folder} were measured with other settings ({'; '.join(changed)}); merge folders of the same settings only")
        rows.update({row["cell"]: row for row in folder_rows})
    if not rows:
        raise RunFolderError(f"{', '.join(map(str, folders))}: no results to merge")
    return list(rows.values())


def _wanted(config: LowTConfig) -> list[str]:
    """The METHODS this run measures."""
    return [m for m in METHODS if not config.only_peers and (config.methods is None or m in config.methods)]


def _forward_seconds(snn: ann2snn.SpikingNetwork, x: torch.Tensor, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of one forward pass on ``x``."""
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start = time.perf_counter()
            snn(x)
            best = min(best, time.perf_counter() - start)
    return best


def run_lowt(config: LowTConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Train (or reuse) the CNNs and measure every cell; returns all result rows.

    ``config`` is checked before anything is created (``check_config``); the output folder is
    locked for the run and refused if it was measured with other settings or by another tool
    (RunFolderError), and records the settings in config.json."""
    check_config(config)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        settings = result_settings(config)
        check_folder(out, settings)
        write_json(out / "config.json", {"tool": TOOL, **asdict(config), **settings})
        return _measure(config, out, log)


def _measure(config: LowTConfig, out: Path, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """run_lowt's measurement, in the locked and checked folder ``out``."""
    relu, qcfs = Experiment(config.experiment("relu"), log), Experiment(config.experiment("qcfs"), log)
    results = Results(out / "results.jsonl", relu.device.type)
    if config.peers or config.only_peers:
        _peer_notes(log)
    for seed in config.seeds:
        for model in config.models:
            wanted = _wanted(config)
            kinds = (False, True) if any(METHODS[m][1] for m in wanted) else (False,)  # the QCFS CNN only when needed
            cnns = {qcfs_cnn: (qcfs if qcfs_cnn else relu).train_cnn(model, seed)[0] for qcfs_cnn in kinds}
            test, calibration = relu.splits(model)["test"], relu.calibration(model)
            for qcfs_cnn in kinds:
                cell = f"{model}/s{seed}/cnn/{'qcfs' if qcfs_cnn else 'relu'}"
                if cell not in results:
                    metrics = evaluate(cnns[qcfs_cnn], test, device=relu.device)
                    results.add(dict(cell=cell, model=model, seed=seed, method="CNN (QCFS)" if qcfs_cnn else "CNN", T=None, top1=metrics.top1))
            for T in config.T:
                for method, (options, qcfs_cnn) in METHODS.items():
                    cell = f"{model}/s{seed}/{method}/T{T}"
                    if cell in results or method not in wanted:
                        continue
                    start = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", ann2snn.ConversionWarning)
                        snn = ann2snn.convert(cnns[qcfs_cnn], T=T, learn_tau=False, calibration=calibration, **options).to(relu.device)
                    convert_s = time.perf_counter() - start
                    metrics = evaluate(snn, test, device=relu.device)
                    forward_s = _forward_seconds(snn, calibration[0].to(relu.device))
                    results.add(dict(
                        cell=cell, model=model, seed=seed, method=method, T=T, top1=metrics.top1, convert_s=convert_s,
                        forward_s=forward_s, batch=len(calibration[0]), percentile=snn.report.settings.get("percentile_chosen"),
                    ))  # fmt: skip
                    log(f"{model} seed {seed} T={T} {method}: {metrics.top1:.1f} % (conversion {convert_s:.1f} s)")
                if config.peers or config.only_peers:
                    _measure_peers(results, model, seed, T, cnns[False], test, calibration, relu.device, log)
    return list(results.rows.values())


def _peer_notes(log: Callable[[str], None]) -> None:
    """Log a note for every peer whose package is not installed (its cells are skipped)."""
    for note in filter(None, map(peers.missing, peers.PEERS)):
        log(note)


def _measure_peers(results: Results, model: str, seed: int, T: int, cnn: torch.nn.Module, test, calibration: list[torch.Tensor], device: torch.device, log: Callable[[str], None]) -> None:
    """The peer cells of one model, seed and T (the ReLU CNN converted by each installed peer)."""
    for peer in peers.PEERS:
        cell = f"{model}/s{seed}/{peer}/T{T}"
        if cell in results or peers.missing(peer):
            continue
        start = time.perf_counter()
        try:
            snn = peers.convert_peer(peer, cnn, calibration, T).to(device)
        except Exception as error:  # a peer that cannot convert this net is a result to report, not a crash
            log(f"{model} seed {seed} T={T} {peer}: conversion failed ({type(error).__name__}: {error})")
            continue
        convert_s = time.perf_counter() - start
        metrics = evaluate(snn, test, device=device)
        forward_s = _forward_seconds(snn, calibration[0].to(device))
        results.add(dict(
            cell=cell, model=model, seed=seed, method=peer, T=T, top1=metrics.top1, convert_s=convert_s, forward_s=forward_s,
            batch=len(calibration[0]), peer=f"{peers.PEERS[peer]} {peers.version(peer)}", settings=_plain(snn.settings),
        ))  # fmt: skip
        log(f"{model} seed {seed} T={T} {peer}: {metrics.top1:.1f} % (conversion {convert_s:.1f} s)")


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON values (numbers rounded)."""
    return {k: _plain(v) if isinstance(v, dict) else round(v, 6) if isinstance(v, float) else v for k, v in settings.items()}


def _methods(rows: list[dict]) -> list[str]:
    """METHODS, then the peers: those with rows (a run with ``only_peers`` has none of METHODS)."""
    present = {r.get("method") for r in rows}
    return [method for method in [*METHODS, *peers.PEERS] if method in present]


def _mean(rows: list[dict], **match: Any) -> tuple[float, float, int]:
    values = [r["top1"] for r in rows if all(r.get(k) == v for k, v in match.items())]
    mean, spread = mean_spread(values)
    return mean, spread, len(values)


def _seeds(n: int) -> str:
    return f"{n} seed{'s' * (n != 1)}"


def _cell(mean: float, spread: float, k: int, n: int) -> str:
    """'mean ± sd' over all seeds (more than one), 'mean' over the only one, 'mean (k of n seeds)'
    over fewer, '-' over none."""
    if not k:
        return "-"
    if k < n:
        return f"{mean:.1f} ({k} of {n} seeds)"
    return f"{mean:.1f} ± {spread:.1f}" if k > 1 else f"{mean:.1f}"


def _cnn_on_same_seeds(rows: list[dict], model: str, method: str, T: int) -> float:
    """The ReLU CNN's mean accuracy over the seeds that have a cell for ``method`` at ``T``."""
    seeds = {r["seed"] for r in rows if r.get("model") == model and r.get("method") == method and r.get("T") == T}
    values = [r["top1"] for r in rows if r.get("model") == model and r.get("method") == "CNN" and r["seed"] in seeds]
    return sum(values) / len(values) if values else float("inf")


def _models(rows: list[dict]) -> list[str]:
    """The models with rows: the default ones in their usual order, then any others."""
    present = list(dict.fromkeys(r["model"] for r in rows))
    return [m for m in LowTConfig().models if m in present] + [m for m in present if m not in LowTConfig().models]


def lowt_tables(rows: list[dict], T: tuple[int, ...]) -> str:
    """Markdown: accuracy per model and method over T (mean ± sd over seeds), then time to accuracy."""
    models = _models(rows)
    lines = ["| model | method | " + " | ".join(f"T={t}" for t in T) + " |", "|---|---|" + "---|" * len(T)]
    speed = ["| model | method | CNN | smallest T within 1 point of the CNN (same seeds) | accuracy there | forward time there (batch 64) |", "|---|---|---|---|---|---|"]
    for model in models:
        cnn, cnn_sd, n = _mean(rows, model=model, method="CNN")
        qcnn, qcnn_sd, qn = _mean(rows, model=model, method="CNN (QCFS)")
        lines.append(f"| {model} | CNN (ReLU), {_seeds(n)} | " + " | ".join(_cell(cnn, cnn_sd, n, n) for _ in T) + " |")
        if qn:
            lines.append(f"| {model} | CNN (QCFS, trained for conversion) | " + " | ".join(_cell(qcnn, qcnn_sd, qn, n) for _ in T) + " |")
        for method in _methods(rows):
            cells = [_mean(rows, model=model, method=method, T=t) for t in T]
            if not any(k for _, _, k in cells):
                continue
            lines.append(f"| {model} | {method} | " + " | ".join(_cell(m, s, k, n) for m, s, k in cells) + " |")
            reached = [(t, m) for t, (m, _, k) in zip(T, cells) if k and m >= _cnn_on_same_seeds(rows, model, method, t) - 1.0]
            if reached:
                t, m = reached[0]
                seconds = [r["forward_s"] for r in rows if r.get("model") == model and r.get("method") == method and r.get("T") == t]
                speed.append(f"| {model} | {method} | {cnn:.1f} | {t} | {m:.1f} | {1000 * sum(seconds) / len(seconds):.0f} ms |")
            else:
                speed.append(f"| {model} | {method} | {cnn:.1f} | not within T <= {max(T)} | - | - |")
    return "\n".join(lines) + "\n\nTime to accuracy:\n\n" + "\n".join(speed) + "\n"


def plot_lowt(rows: list[dict], T: tuple[int, ...], path: Path, title: str) -> None:
    """Accuracy against T per model, one line per method, the CNN as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = _models(rows)
    methods = _methods(rows)
    colours = {method: f"C{i % 10}" for i, method in enumerate(methods)}  # one colour per method in every panel
    # Sized so that nothing is cut whatever the number of models and methods: at least 8 inches wide
    # (the legend and title of one panel fit), the legend in as many columns of its longest label
    # as fit across, the title wrapped to the width; inches per character of DejaVu Sans, generous.
    width = max(4.2 * len(models), 8.0)
    labels = ["CNN (ReLU)", "within 1 point", *methods]
    ncol = max(1, min(len(labels), int(width / (0.075 * max(map(len, labels)) + 0.6))))
    legend_in = 0.21 * math.ceil(len(labels) / ncol) + 0.15
    title = textwrap.fill(title, width=max(20, int((width - 0.4) / 0.08)))
    title_in = 0.22 * (title.count("\n") + 1) + 0.2
    height = 4.2 + legend_in + title_in
    fig, axes = plt.subplots(1, len(models), figsize=(width, height), sharey=True, squeeze=False)
    for ax, model in zip(axes[0], models):
        cnn, _, _ = _mean(rows, model=model, method="CNN")
        ax.axhline(cnn, color="black", linestyle="--", linewidth=1, label="CNN (ReLU)")
        ax.axhspan(cnn - 1, cnn, color="grey", alpha=0.15, label="within 1 point")
        for method in methods:
            points = [(t, _mean(rows, model=model, method=method, T=t)) for t in T]
            points = [(t, m, s) for t, (m, s, k) in points if k]
            if points:
                ts, ms, ss = zip(*points)
                style = dict(linestyle=":", marker="s") if method in peers.PEERS else dict(marker="o")
                ax.errorbar(ts, ms, yerr=ss, markersize=4, capsize=2, label=method, color=colours[method], **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(T), [str(t) for t in T])
        ax.set_title(model)
        ax.set_xlabel("time steps T")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1 accuracy (%)")
    axes[0][0].set_ylim(bottom=max(0, min((r["top1"] for r in rows if r.get("T")), default=5) - 5), top=101)
    entries = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())}  # every method, from any panel
    fig.legend(list(entries.values()), list(entries), loc="lower center", bbox_to_anchor=(0.5, 0.05 / height), ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))  # tight_layout makes room for the suptitle itself
    save_figure(fig, path, dpi=130)
