"""Turn result rows into the CSV file, markdown tables and PNG plots of an experiment."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any, Iterable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ann2snn.atomic import atomic_path  # noqa: E402
from zoo.harness.run_folder import RunFolderError, read_json, read_rows  # noqa: E402


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    """``fig.savefig(path)`` all or nothing (a failure midway leaves the previous file), then close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        plt.close(fig)


#: Values of fields that rows written before the field existed stand for.
_IMPLIED = {"encoder": "direct"}


def _select(rows: Iterable[dict], **match: Any) -> list[dict]:
    return [r for r in rows if all(r.get(k, _IMPLIED.get(k)) == v for k, v in match.items())]


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(rows: list[dict], key: str = "top1", digits: int = 1) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    mean, spread = mean_spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def merge_runs(folders: list[Path]) -> tuple[list[dict], dict]:
    """The result rows and training histories of several experiment folders; a cell measured in
    more than one folder keeps the first folder's row."""
    rows: dict[str, dict] = {}
    histories: dict[str, list] = {}
    for folder in folders:
        results = folder / "results.jsonl"
        if not results.is_file():
            raise RunFolderError(f"{results}: no results to merge (is {folder} an experiment folder?)")
        device = (read_json(folder / "config.json") or {}).get("device", "auto")
        for row in read_rows(results, repair=False):  # the folders merged are inputs: read, never rewritten
            row.setdefault("device", "cpu" if device == "auto" and "cuda" not in str(row.get("device")) else device)
            rows.setdefault(row["cell"], row)
        for name, epochs in (read_json(folder / "histories.json") or {}).items():
            histories.setdefault(name, epochs)
    return list(rows.values()), histories


def scratch_rows(rows: list[dict], T: int) -> list[dict]:
    """From-scratch rows at ``T``: those trained with batch norm kept (``init="bn"``, the harness's
    recipe since issue 10) where there are any, else the old recipe's."""
    scratch = _select(rows, kind="scratch", T=T)
    return [r for r in scratch if r.get("init") == "bn"] or scratch


def write_csv(rows: list[dict], path: Path) -> None:
    """One line per result row; list and dict fields are written as JSON."""
    keys = sorted({k for r in rows for k in r})
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})


def summary_table(rows: list[dict], T: int, zero_shot_T: tuple[int, ...] = (8, 25, 64)) -> str:
    """The headline table: CNN, zero-shot IF SNN at a few T, retrained LIF (learn_tau off / on),
    from-scratch SNN, SNN epoch time over T CNN epochs, energy; mean ± spread over seeds (top-1 %).
    Zero-shot columns missing from the rows are replaced by the fine-tuning T."""
    measured = {r["T"] for r in _select(rows, kind="zero-shot")}
    zero_shot_T = tuple(sorted({t if t in measured else T for t in zero_shot_T}))
    models = list(dict.fromkeys(r["model"] for r in rows))
    seeds = len({r["seed"] for r in rows})
    folds = len({r.get("fold") for r in rows})
    header = ["model", "CNN"] + [f"zero-shot IF T={t}" for t in zero_shot_T] + [
        f"retrained LIF T={T}, fixed tau", f"retrained LIF T={T}, learned tau", f"from scratch T={T}", f"SNN epoch / ({T} x CNN epoch), CPU", "SNN/CNN energy (45 nm)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in models:
        mine = _select(rows, model=model)
        cells = [model, _cell(_select(mine, kind="cnn"))]
        cells += [_cell(_select(mine, kind="zero-shot", neuron="IF", T=t, encoder="direct")) for t in zero_shot_T]
        cells += [_cell(_select(mine, kind="retrained", T=T, encoder="direct", learn_tau=flag)) for flag in (False, True)]
        cells.append(_cell(scratch_rows(mine, T)))
        timed = [dict(r, per_step=r["snn_cnn_epoch_ratio"] / T) for r in _select(mine, kind="retrained", T=T, encoder="direct") if r.get("snn_cnn_epoch_ratio")]
        on_cpu = [r for r in timed if r.get("device", "cpu") == "cpu"]
        cells.append(_cell(on_cpu or timed, "per_step", digits=2) + " x" + ("" if on_cpu or not timed else " (GPU)") if timed else "-")
        energy = [dict(r, energy_ratio=r["energy_pj"] / r["cnn_energy_pj"]) for r in _select(mine, kind="retrained", T=T, encoder="direct") if r.get("energy_pj")]
        cells.append(_cell(energy, "energy_ratio", digits=2) + " x" if energy else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Test top-1 accuracy in %, mean ± standard deviation over {seeds} seed(s)"
        + (f" x {folds} leave-one-speaker-out folds" if folds > 1 else "") + ". Energy: the retrained "
        "SNN's estimate per example (0.9 pJ per accumulate, 4.6 pJ per multiply-accumulate) over one CNN forward pass. "
        f"Time: a fine-tuning epoch of the SNN (layer mode, T={T}, fixed and learned tau) over T CNN training epochs."
    )
    return "\n".join(lines)


def zero_shot_table(rows: list[dict]) -> str:
    """Zero-shot accuracy for every T, neuron and encoder measured."""
    shots = _select(rows, kind="zero-shot")
    steps = sorted({r["T"] for r in shots})
    combos = list(dict.fromkeys((r["model"], r["neuron"], r["encoder"]) for r in shots))
    lines = ["| model | neuron | encoder | " + " | ".join(f"T={t}" for t in steps) + " |", "|" + "---|" * (3 + len(steps))]
    for model, neuron, encoder in combos:
        mine = _select(shots, model=model, neuron=neuron, encoder=encoder)
        lines.append(f"| {model} | {neuron} | {encoder} | " + " | ".join(_cell(_select(mine, T=t)) for t in steps) + " |")
    return "\n".join(lines)


def encoder_table(rows: list[dict]) -> str:
    """Per model and input encoder, over the T values fine-tuned at: zero-shot (IF) and retrained
    (LIF, fixed tau) test accuracy side by side ("" when nothing was retrained)."""
    retrained = _select(rows, kind="retrained", learn_tau=False)
    if not retrained:
        return ""
    steps = sorted({r["T"] for r in retrained})
    combos = list(dict.fromkeys((r["model"], r.get("encoder", "direct")) for r in retrained))
    lines = ["| model | encoder | | " + " | ".join(f"T={t}" for t in steps) + " |", "|" + "---|" * (3 + len(steps))]
    for model, encoder in combos:
        shots = _select(rows, kind="zero-shot", model=model, encoder=encoder, neuron="IF")
        tuned = _select(retrained, model=model, encoder=encoder)
        lines.append(f"| {model} | {encoder} | zero-shot IF | " + " | ".join(_cell(_select(shots, T=t)) for t in steps) + " |")
        lines.append(f"| {model} | {encoder} | retrained LIF | " + " | ".join(_cell(_select(tuned, T=t)) for t in steps) + " |")
    return "\n".join(lines)


def _runs(rows: list[dict]) -> str:
    seeds, folds = len({r["seed"] for r in rows}), len({r.get("fold") for r in rows})
    return f"{seeds} seed(s)" + (f" x {folds} leave-one-speaker-out folds" if folds > 1 else "")


def study_table(rows: list[dict], T: int = 15, zero_shot_T: tuple[int, ...] = (5, 15, 30)) -> str:
    """Issue 10's table: CNN; zero-shot IF at ``zero_shot_T``; retrained at ``T`` with direct,
    rate and latency input (fixed tau) and direct with learned tau; from scratch at ``T`` with
    its best epoch and training time to it, beside the CNN's. Mean ± sd over seeds (and folds)."""
    header = ["model", "CNN"] + [f"zero-shot T={t}" for t in zero_shot_T] + [
        f"retrained direct T={T}", f"retrained direct T={T}, learned tau", f"retrained rate T={T}", f"retrained latency T={T}",
        f"from scratch T={T}", "from scratch: best epoch", "from scratch: s to best", "CNN: best epoch", "CNN: s to best",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = _select(rows, model=model)
        cnn, scratch = _select(mine, kind="cnn"), scratch_rows(mine, T)
        cells = [model, _cell(cnn)] + [_cell(_select(mine, kind="zero-shot", neuron="IF", encoder="direct", T=t)) for t in zero_shot_T]
        cells += [_cell(_select(mine, kind="retrained", T=T, encoder="direct", learn_tau=flag)) for flag in (False, True)]
        cells += [_cell(_select(mine, kind="retrained", T=T, encoder=e, learn_tau=False)) for e in ("rate", "latency")]
        cells += [_cell(scratch), _cell(scratch, "best_epoch", 0), _cell(scratch, "seconds_to_best", 0)]
        cells += [_cell(cnn, "best_epoch", 0), _cell(cnn, "seconds_to_best", 0)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Test top-1 accuracy in % (times in seconds of training), mean ± standard deviation over {_runs(rows)}."]
    return "\n".join(lines)


def markdown_report(rows: list[dict], finetune_T: int) -> str:
    """results.md: the headline table, zero-shot over T, encoders over T, the study's table."""
    text = summary_table(rows, finetune_T) + "\n\n## Zero-shot accuracy over T\n\n" + zero_shot_table(rows) + "\n"
    encoders = encoder_table(rows)
    if encoders:
        text += "\n## Input encoders: zero-shot and retrained over T\n\n" + encoders + "\n"
    steps = tuple(sorted({r["T"] for r in _select(rows, kind="zero-shot", encoder="direct", neuron="IF")}))
    return text + "\n## The study's table (issue 10)\n\n" + study_table(rows, finetune_T, steps) + "\n"


def plot_accuracy_vs_T(rows: list[dict], path: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = _select(rows, model=model)
        for neuron, style in (("IF", "o-"), ("LIF", "s--")):
            shots = _select(mine, kind="zero-shot", neuron=neuron, encoder="direct")
            steps = sorted({r["T"] for r in shots})
            if steps:
                stats = [mean_spread([r["top1"] for r in _select(shots, T=t)]) for t in steps]
                ax.errorbar(steps, [m for m, _ in stats], [s for _, s in stats], fmt=style, capsize=3, label=f"zero-shot {neuron}")
        for flag, marker in ((False, "^"), (True, "v")):
            retrained = _select(mine, kind="retrained", encoder="direct", learn_tau=flag)
            steps = sorted({r["T"] for r in retrained})
            if steps:
                stats = [mean_spread([r["top1"] for r in _select(retrained, T=t)]) for t in steps]
                ax.errorbar(steps, [m for m, _ in stats], [s for _, s in stats], fmt=marker, markersize=9, capsize=3, label=f"retrained LIF, {'learned' if flag else 'fixed'} tau")
        cnn = _select(mine, kind="cnn")
        if cnn:
            ax.axhline(mean_spread([r["top1"] for r in cnn])[0], color="black", linestyle=":", label="CNN")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("time steps T")
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _learned_T(rows: list[dict], model: str) -> Optional[int]:
    """The T at which ``model``'s SNN was fine-tuned with a learned time constant (the fixed-tau
    run at the same T is its comparison)."""
    learned = _select(rows, model=model, kind="retrained", learn_tau=True)
    return learned[0]["T"] if learned else None


def plot_learn_tau(rows: list[dict], path: Path) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, ax = plt.subplots(figsize=(1.8 * len(models) + 2, 3.5))
    for k, (flag, label) in enumerate(((False, "fixed tau"), (True, "learned tau"))):
        stats = [mean_spread([r["top1"] for r in _select(rows, model=m, kind="retrained", encoder="direct", learn_tau=flag, T=_learned_T(rows, m))]) for m in models]
        ax.bar([i + 0.38 * k for i in range(len(models))], [s[0] for s in stats], 0.38, yerr=[s[1] for s in stats], capsize=3, label=label)
    ax.set_xticks([i + 0.19 for i in range(len(models))], models)
    lows = [r["top1"] for r in _select(rows, kind="retrained")]
    if lows:
        ax.set_ylim(max(0, min(lows) - 5), 100)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("retrained LIF SNN: fixed versus learned membrane time constant")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    names = [n for n in histories if histories[n]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in names:
        epochs = [e["epoch"] for e in histories[name]]
        line, = ax.plot(epochs, [e["val_loss"] for e in histories[name]], label=f"{name} (val)")
        ax.plot(epochs, [e["train_loss"] for e in histories[name]], linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (dashed: training)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_firing_rates(rows: list[dict], path: Path) -> None:
    retrained = [r for r in _select(rows, kind="retrained", encoder="direct", learn_tau=False) if r.get("firing_rates")]
    models = list(dict.fromkeys(r["model"] for r in retrained))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5 * max(1, len(models)), 3.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rates = _select(retrained, model=model)[0]["firing_rates"]
        ax.bar(range(len(rates)), list(rates.values()))
        ax.set_xticks(range(len(rates)), [n.replace("_neuron", "") for n in rates], rotation=60, fontsize=6, ha="right")
        ax.set_ylabel("spikes per neuron per step")
        ax.set_title(f"{model}: firing rate per layer (retrained)")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_outputs(rows: list[dict], out_dir: Path, finetune_T: int, histories: Optional[dict] = None) -> dict[str, Path]:
    """Write results.csv, results.md and the plots; returns their paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "csv": out_dir / "results.csv", "markdown": out_dir / "results.md",
        "accuracy_vs_T": out_dir / "accuracy_vs_T.png", "learn_tau": out_dir / "learn_tau.png",
        "training_curves": out_dir / "training_curves.png", "firing_rates": out_dir / "firing_rates.png",
    }  # fmt: skip
    write_csv(rows, paths["csv"])
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_report(rows, finetune_T))
    plot_accuracy_vs_T(rows, paths["accuracy_vs_T"])
    plot_learn_tau(rows, paths["learn_tau"])
    plot_training_curves(histories or {}, paths["training_curves"])
    plot_firing_rates(rows, paths["firing_rates"])
    from zoo.harness.curves import plot_all_curves  # curves imports save_figure from here

    paths.update({f"curves-{model}": path for model, path in plot_all_curves(histories or {}, out_dir).items()})
    return paths
