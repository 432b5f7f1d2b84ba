"""Training curves side by side: per model, the CNN, the SNN trained from scratch and the converted
SNN being retrained, by epoch and by wall-clock time (the study's finding 1 is about training,
finding 3 about its cost).

Histories are the harness's ``histories.json`` (``zoo.harness.experiment.load_histories``): one
list of per-epoch records (``val_top1``, ``val_loss``, ``seconds``...) per trained network, named
``cnn-<model>-s<seed>``, ``scratch[-bn]-<model>-s<seed>``, ``snn-<model>-s<seed>[-<encoder>-T<T>]-learn_tau=<0|1>``,
under ``fold-<speaker>/`` in a cross-validated experiment. Several seeds or folds are averaged
epoch by epoch (the band is their spread).
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ann2snn_zoo.harness.summary import save_figure  # noqa: E402

_NAME = re.compile(
    r"^(?:(?P<fold>fold-[^/]+)/)?(?P<kind>cnn|scratch-bn|scratch|snn)-(?P<model>.+?)-s(?P<seed>\d+)"
    r"(?:-(?P<encoder>direct|rate|latency)-T(?P<T>\d+))?(?:-learn_tau=(?P<learn_tau>[01]))?$"
)


@dataclass(frozen=True)
class Run:
    """What a history name says about the network it trained."""

    kind: str  # "cnn", "scratch" (batch norm kept, the harness's recipe), "scratch-converted" (the old recipe), "retrained"
    model: str
    seed: int
    fold: Optional[str] = None
    encoder: str = "direct"
    T: Optional[int] = None  # None: the experiment's fine-tuning T
    learn_tau: bool = False


def parse_run(name: str) -> Optional[Run]:
    """The Run a history name describes, or None for names of another shape."""
    match = _NAME.match(name)
    if not match:
        return None
    kind = {"cnn": "cnn", "scratch-bn": "scratch", "scratch": "scratch-converted", "snn": "retrained"}[match["kind"]]
    return Run(
        kind, match["model"], int(match["seed"]), match["fold"], match["encoder"] or "direct",
        int(match["T"]) if match["T"] else None, match["learn_tau"] == "1",
    )  # fmt: skip


#: The curves drawn per model, in order: (label, which runs, colour, line style).
SERIES = (
    ("CNN", lambda r: r.kind == "cnn", "black", "o-"),
    ("SNN from scratch", lambda r: r.kind == "scratch", "tab:red", "o-"),
    ("SNN from scratch (old recipe)", lambda r: r.kind == "scratch-converted", "tab:orange", "o:"),
    ("converted SNN, retrained (fixed tau)", lambda r: r.kind == "retrained" and r.T is None and not r.learn_tau, "tab:blue", "s-"),
    ("converted SNN, retrained (learned tau)", lambda r: r.kind == "retrained" and r.T is None and r.learn_tau, "tab:cyan", "^--"),
)


def _mean_curve(histories: list[list[dict]], key: str) -> tuple[list[float], list[float], list[float]]:
    """Per epoch: mean of ``key`` over the runs that reached it, its spread, mean cumulative seconds."""
    longest = max(len(h) for h in histories)
    means, spreads, clock = [], [], []
    elapsed = [0.0] * len(histories)
    for epoch in range(longest):
        values, times = [], []
        for k, history in enumerate(histories):
            if epoch < len(history):
                elapsed[k] += history[epoch]["seconds"]
                values.append(history[epoch][key])
                times.append(elapsed[k])
        means.append(statistics.fmean(values))
        spreads.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        clock.append(statistics.fmean(times))
    return means, spreads, clock


#: What a history's every record needs to be drawn (older or foreign histories may lack some).
CURVE_KEYS = ("val_top1", "val_loss", "seconds")


def _drawable(history: list[dict]) -> bool:
    return bool(history) and all(key in record for record in history for key in CURVE_KEYS)


def curve_models(histories: dict[str, list[dict]]) -> list[str]:
    """The models that have at least one parsed, drawable history, in order of appearance."""
    runs = [parse_run(name) for name, history in histories.items() if _drawable(history)]
    return list(dict.fromkeys(r.model for r in runs if r is not None))


def curve_title(labels: list[str]) -> str:
    """What a figure compares, from the series it draws: "CNN vs SNN from scratch vs converted
    SNN retrained", without the ones it lacks (no from-scratch run, say)."""
    kinds = dict.fromkeys("CNN" if label.startswith("CNN") else "SNN from scratch" if "scratch" in label else "converted SNN retrained" for label in labels)
    return " vs ".join(kinds)


def plot_model_curves(histories: dict[str, list[dict]], model: str, path: Path) -> Path:
    """One figure for ``model``: validation top-1 and loss by epoch (top) and by wall-clock
    training time (bottom); the retrained SNN's clock starts when its CNN finished (it needs it).
    Legends give each network's mean seconds per epoch. Returns ``path``."""
    parsed = {name: parse_run(name) for name in histories}
    mine = {name: run for name, run in parsed.items() if run is not None and run.model == model and _drawable(histories[name])}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    cnn_time = _cnn_seconds([histories[n] for n, r in mine.items() if r.kind == "cnn"])
    drawn = []
    for label, wanted, colour, style in SERIES:
        runs = [histories[name] for name, run in mine.items() if wanted(run)]
        if not runs:
            continue
        drawn.append(label)
        per_epoch = statistics.fmean(e["seconds"] for h in runs for e in h)
        offset = cnn_time if label.startswith("converted") else 0.0
        text = f"{label}: {per_epoch:.1f} s/epoch" + (f", n={len(runs)}" if len(runs) > 1 else "")
        for column, key in enumerate(("val_top1", "val_loss")):
            mean, spread, clock = _mean_curve(runs, key)
            epochs = list(range(1, len(mean) + 1))
            clock = [offset + c for c in clock]
            for row, x in enumerate((epochs, clock)):
                ax = axes[row][column]
                size = 9 if len(mean) <= 3 else 4  # short runs (one-epoch fine-tuning) are single points: make them show
                ax.plot(x, mean, style, color=colour, markersize=size, markeredgecolor="black" if len(mean) <= 3 else colour, label=text if column == 0 else None)
                if len(runs) > 1:
                    ax.fill_between(x, [m - s for m, s in zip(mean, spread)], [m + s for m, s in zip(mean, spread)], color=colour, alpha=0.15)
    for row, xlabel in enumerate(("epoch", "wall-clock training time (s); retrained SNN after its CNN")):
        axes[row][0].set_ylabel("validation top-1 accuracy (%)")
        axes[row][1].set_ylabel("validation cross-entropy")
        axes[row][1].set_yscale("log")
        axes[row][1].yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
        axes[row][1].yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(_minor_label))
        for ax in axes[row]:
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=9, loc="lower right")
    fig.suptitle(f"{model}: training curves (validation), {curve_title(drawn)}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def _minor_label(value: float, _position: int) -> str:
    """Minor ticks of the log loss axis: label 2, 3 and 5 times a power of ten only."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:.2g}" if round(mantissa) in (2, 3, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def _cnn_seconds(runs: list[list[dict]]) -> float:
    """Mean total training time of the CNN runs (0 without any)."""
    return statistics.fmean(sum(e["seconds"] for e in h) for h in runs) if runs else 0.0


def plot_all_curves(histories: dict[str, list[dict]], out_dir: Path) -> dict[str, Path]:
    """``curves-<model>.png`` in ``out_dir`` for every model with histories; returns the paths by model."""
    return {model: plot_model_curves(histories, model, Path(out_dir) / f"curves-{model}.png") for model in curve_models(histories)}
