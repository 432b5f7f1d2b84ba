"""Turn result rows into the CSV file, markdown tables and PNG plots of an experiment."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Optional

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ann2snn.atomic import atomic_path  # noqa: E402
from ann2snn_zoo.harness.run_folder import RunFolderError, read_json, read_rows  # noqa: E402


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


def _merged_folders(folder: Path) -> list[tuple[Optional[str], Path]]:
    """(fold, folder) of every results folder in ``folder``: itself, or for a cross-validated run
    (config.json's ``cross_validation``) each ``fold-<speaker>`` folder, with its speaker."""
    settings = read_json(folder / "config.json") or {}
    if settings.get("cross_validation") and not (folder / "results.jsonl").is_file():
        folds = sorted(p.parent for p in folder.glob("fold-*/results.jsonl"))
        if folds:
            return [(f.name.removeprefix("fold-"), f) for f in folds]
    return [(None, folder)]


def merge_runs(folders: list[Path]) -> tuple[list[dict], dict]:
    """The result rows and training histories of several experiment folders (a cross-validated
    run's folder stands for its folds, each row tagged with its ``fold``). A cell measured in more
    than one folder keeps the LAST folder's row (as ``tools/lowt.py --merge`` does): list a rerun
    after the run it corrects."""
    rows: dict[str, dict] = {}
    histories: dict[str, list] = {}
    for given in folders:
        for fold, folder in _merged_folders(given):
            results = folder / "results.jsonl"
            if not results.is_file():
                raise RunFolderError(f"{results}: no results to merge (is {folder} an experiment folder?)")
            device = (read_json(folder / "config.json") or {}).get("device", "auto")
            for row in read_rows(results, repair=False):  # the folders merged are inputs: read, never rewritten
                row.setdefault("device", "cpu" if device == "auto" and "cuda" not in str(row.get("device")) else device)
                if fold is not None:
                    row.setdefault("fold", fold)
                rows[f"{row.get('fold')}/{row['cell']}"] = row
            prefix = f"fold-{fold}/" if fold is not None else ""
            histories.update({prefix + name: epochs for name, epochs in (read_json(folder / "histories.json") or {}).items()})
    return list(rows.values()), histories


def merge_settings(folders: list[Path]) -> dict[str, Any]:
    """The settings the results of ``folders`` were measured with (each one's config.json), for
    the merged tables (fine-tuning T, data set). RunFolderError if a folder has no experiment
    config.json, or if two folders that measured a common model record different settings that
    change results: only the settings that choose cells (``run_folder.SCOPE``: models, seeds, T
    lists, encoders), the neutral ones (device, folder) and where the data lies (``data_dir``: each
    machine has its copy) may differ. Folders of different models (each model's runs with its
    own training settings) must agree only on what the tables are made of: the data set and the
    fine-tuning T. The scope lists are the union of the folders'."""
    from ann2snn_zoo.harness.experiment import ExperimentConfig, is_experiment_config
    from ann2snn_zoo.harness.run_folder import SCOPE, changed_settings

    defaults = asdict(ExperimentConfig())
    table_settings = frozenset({"dataset", "finetune_T"})
    seen: list[tuple[Path, dict[str, Any]]] = []
    for folder in folders:
        stored = read_json(folder / "config.json")
        if not is_experiment_config(stored):
            raise RunFolderError(f"{folder} has no config.json of an experiment run (made by another tool, or not a run folder?); --merge takes folders made by experiment.py")
        stored = {**defaults, **stored}
        for other, settings in seen:
            shared = set(settings["models"]) & set(stored["models"])
            ignore = frozenset({"data_dir"}) if shared else frozenset(k for k in defaults if k not in table_settings)
            changed = changed_settings(settings, stored, defaults, ignore=ignore)  # data_dir: one copy of the data per machine
            if changed:
                raise RunFolderError(
                    f"cannot merge {other} and {folder}: their results were measured with other settings ({'; '.join(changed)}); "
                    "merge only runs whose settings differ in models, seeds, T lists or encoders (runs of different models: in their training settings too)"
                )
        seen.append((folder, stored))
    if not seen:
        raise RunFolderError("--merge needs at least one folder")
    merged = dict(seen[0][1])
    for key in SCOPE:
        values = [settings.get(key) for _, settings in seen]
        if all(isinstance(v, list) for v in values):
            merged[key] = list(dict.fromkeys(item for v in values for item in v))
    return merged


def check_merge_out(out: Path, folders: list[Path]) -> None:
    """Refuse an --out for merged tables that is a file, one of the merged folders (or inside one),
    or a run's folder (its results.md and plots would be overwritten by the merged ones)."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder; pass a new folder for the merged tables")
    for folder in folders:
        if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
            raise RunFolderError(f"--out {out} is one of the merged folders ({folder}): its own results.md and plots would be overwritten; pass a new --out")
    for name in ("results.jsonl", "config.json"):
        if (out / name).is_file():
            raise RunFolderError(f"--out {out} is a run's folder (it holds {name}): its results.md and plots would be overwritten; pass a new --out for the merged tables")


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
    header = (
        ["model", "CNN"]
        + [f"zero-shot IF T={t}" for t in zero_shot_T]
        + [
            f"retrained LIF T={T}, fixed tau",
            f"retrained LIF T={T}, learned tau",
            f"from scratch T={T}",
            f"SNN epoch / ({T} x CNN epoch), CPU",
            "SNN/CNN energy (45 nm)",
        ]
    )
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
        f"Test top-1 accuracy in %, {_spread_over(seeds, folds)}. Energy: the retrained "
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


def _spread_over(seeds: int, folds: int) -> str:
    """What the table's cells are: "mean ± standard deviation over 3 seeds (x 6 ... folds)", or
    for a single run "one seed (no spread)"."""
    runs = f"{seeds} seed{'s' * (seeds != 1)}" + (f" x {folds} leave-one-speaker-out folds" if folds > 1 else "")
    return f"mean ± standard deviation over {runs}" if seeds * max(folds, 1) > 1 else "one seed (no spread)"


def _runs(rows: list[dict]) -> str:
    return _spread_over(len({r["seed"] for r in rows}), len({r.get("fold") for r in rows}))


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
    lines += ["", f"Test top-1 accuracy in % (times in seconds of training), {_runs(rows)}."]
    return "\n".join(lines)


def markdown_report(rows: list[dict], finetune_T: int) -> str:
    """results.md: the headline table, zero-shot over T, encoders over T, the study's table."""
    text = summary_table(rows, finetune_T) + "\n\n## Zero-shot accuracy over T\n\n" + zero_shot_table(rows) + "\n"
    encoders = encoder_table(rows)
    if encoders:
        text += "\n## Input encoders: zero-shot and retrained over T\n\n" + encoders + "\n"
    steps = tuple(sorted({r["T"] for r in _select(rows, kind="zero-shot", encoder="direct", neuron="IF")}))
    return text + "\n## The study's table (issue 10)\n\n" + study_table(rows, finetune_T, steps) + "\n"


#: How the plots name the input encoders.
ENCODER_LABELS = {"direct": "direct (analog) input", "rate": "rate-coded input", "latency": "latency-coded input"}


def _dataset_title(dataset: Optional[str]) -> str:
    return {"fsdd": "FSDD", "speech_commands": "Speech Commands", "synthetic": "synthetic words"}.get(dataset or "", dataset or "")


def _errorbar_over_T(ax: Any, rows: list[dict], label: str, shift: float = 0.0, **style: Any) -> None:
    """Mean and spread of ``rows`` over T; ``shift`` moves the points by that many octaves of T, so
    that points at the same T stay apart."""
    steps = sorted({r["T"] for r in rows})
    if steps:
        stats = [mean_spread([r["top1"] for r in _select(rows, T=t)]) for t in steps]
        ax.errorbar([t * 2**shift for t in steps], [m for m, _ in stats], [s for _, s in stats], capsize=3, label=label, **style)


def plot_accuracy_vs_T(rows: list[dict], path: Path, dataset: Optional[str] = None) -> None:
    """Per model: zero-shot accuracy over T (IF with each encoder measured, LIF), the retrained
    SNNs (each encoder, fixed and learned tau), the SNN trained from scratch and the CNN."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(9.5 * max(1, len(models)), 4.8), squeeze=False)
    colours = {"direct": "tab:blue", "rate": "tab:green", "latency": "tab:purple"}
    for ax, model in zip(axes[0], models):
        mine = _select(rows, model=model)
        for encoder, colour in colours.items():
            shots = _select(mine, kind="zero-shot", neuron="IF", encoder=encoder)
            _errorbar_over_T(ax, shots, f"zero-shot IF, {ENCODER_LABELS[encoder]}", fmt="o-", color=colour, markersize=4)
        _errorbar_over_T(ax, _select(mine, kind="zero-shot", neuron="LIF", encoder="direct"), "zero-shot LIF, direct input", fmt="s--", color="tab:gray", markersize=4)
        for k, (encoder, colour) in enumerate(colours.items()):
            for flag, marker in ((False, "^"), (True, "v")):
                retrained = _select(mine, kind="retrained", encoder=encoder, learn_tau=flag)
                tau = "learned" if flag else "fixed"
                shift = 0.09 * (2 * k + flag - 2.5)  # side by side around their T
                _errorbar_over_T(ax, retrained, f"retrained LIF ({tau} tau), {encoder} input", shift, fmt=marker, color=colour, markersize=9, markeredgecolor="black")
        scratch = [r for r in _select(mine, kind="scratch") if r.get("init", "converted") == "bn"] or _select(mine, kind="scratch")
        _errorbar_over_T(ax, scratch, "SNN trained from scratch", fmt="*", color="tab:red", markersize=13, markeredgecolor="black")
        cnn = _select(mine, kind="cnn")
        if cnn:
            ax.axhline(mean_spread([r["top1"] for r in cnn])[0], color="black", linestyle=":", label="CNN")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("time steps T (log scale)")
        ax.set_ylabel("test top-1 accuracy (%)")
        lowest = min((r["top1"] for r in mine if r.get("top1") is not None), default=0.0)
        ax.set_ylim(max(0.0, 10 * math.floor((lowest - 5) / 10)), 100)
        ax.set_title(model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    name = _dataset_title(dataset)
    fig.suptitle(f"accuracy over time steps{f' on {name}' if name else ''}: converted, retrained and from-scratch SNNs")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _learned_T(rows: list[dict], model: str) -> Optional[int]:
    """The T at which ``model``'s SNN was fine-tuned with a learned time constant (the fixed-tau
    run at the same T is its comparison)."""
    learned = _select(rows, model=model, kind="retrained", learn_tau=True)
    return learned[0]["T"] if learned else None


def plot_learn_tau(rows: list[dict], path: Path) -> None:
    """Left: test accuracy of the retrained LIF SNN with a fixed and a learned membrane time
    constant (full 0-100 % axis, values written on the bars). Right: the learned time constant of
    each neuron layer (mean over its neurons and the seeds) against the fixed one."""
    models = [m for m in dict.fromkeys(r["model"] for r in rows) if _learned_T(rows, m) is not None] or list(dict.fromkeys(r["model"] for r in rows))
    fig, (ax, tau_ax) = plt.subplots(1, 2, figsize=(max(9.5, 2.2 * len(models) + 7), 4.2), gridspec_kw={"width_ratios": (max(2, len(models)), 3)})
    for k, (flag, label, colour) in enumerate(((False, "fixed tau", "tab:blue"), (True, "learned tau", "tab:cyan"))):
        stats = [mean_spread([r["top1"] for r in _select(rows, model=m, kind="retrained", encoder="direct", learn_tau=flag, T=_learned_T(rows, m))]) for m in models]
        xs = [i + 0.38 * k for i in range(len(models))]
        bars = ax.bar(xs, [0 if s[0] != s[0] else s[0] for s in stats], 0.38, yerr=[0 if s[1] != s[1] else s[1] for s in stats], capsize=3, label=label, color=colour)
        for bar, (mean, _) in zip(bars, stats):
            if mean == mean:
                ax.text(bar.get_x() + bar.get_width() / 2, mean - 2, f"{mean:.1f} %", ha="center", va="top", fontsize=9, color="white" if mean > 15 else "black")
    ax.set_xticks([i + 0.19 for i in range(len(models))], models)
    ax.set_ylim(0, 112)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_title("accuracy after retraining", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    drawn, values, labels = False, [], None
    for model in models:
        learned = [r for r in _select(rows, model=model, kind="retrained", encoder="direct", learn_tau=True) if r.get("learned_tau")]
        if not learned:
            continue
        layers = min(len(r["learned_tau"]) for r in learned)
        means = [statistics.fmean(r["learned_tau"][i] for r in learned) for i in range(layers)]
        (line,) = tau_ax.plot(range(1, layers + 1), means, "o-", label=f"{model}: learned")
        start = learned[0].get("tau")
        if start is not None and math.isfinite(start):
            tau_ax.axhline(start, color=line.get_color(), linestyle=":", label=f"{model}: fixed (initial) tau = {start:g}")
            values.append(start)
        values += means
        names = list(learned[0].get("firing_rates") or {})
        if len(names) == layers:  # the profile's neuron layers, in the same (graph) order
            labels = layer_labels(names)
        drawn = True
    if drawn:
        low, high = min(values), max(values)
        middle = (low + high) / 2
        half = max((high - low) / 2 * 1.15, 0.05 * abs(middle))  # at least 10 % of tau tall: small changes look small
        tau_ax.set_ylim(middle - half, middle + half)
        tau_ax.set_xlabel("neuron layer (input to output)")
        if labels:
            tau_ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
        else:
            tau_ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        tau_ax.set_ylabel("membrane time constant tau (steps)")
        tau_ax.legend(fontsize=8)
        tau_ax.grid(alpha=0.3)
    else:
        tau_ax.text(0.5, 0.5, "no learned time constants in the results", ha="center", va="center", transform=tau_ax.transAxes)
        tau_ax.set_axis_off()
    tau_ax.set_title("learned time constants per layer", fontsize=10)
    steps = sorted({t for t in (_learned_T(rows, m) for m in models) if t is not None})
    fig.suptitle(f"retrained LIF SNN: fixed versus learned membrane time constant{f' (T = {steps[0]})' if len(steps) == 1 else ''}")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def history_label(name: str) -> str:
    """A legend label for a history name of the harness (``zoo.harness.curves.parse_run``)."""
    from ann2snn_zoo.harness.curves import parse_run

    run = parse_run(name)
    if run is None:
        return name
    what = {
        "cnn": "CNN", "scratch": "SNN from scratch", "scratch-converted": "SNN from scratch (old recipe)",
        "retrained": f"converted SNN retrained, {'learned' if run.learn_tau else 'fixed'} tau",
    }[run.kind]  # fmt: skip
    details = [run.model, f"seed {run.seed}"] + ([f"{run.encoder} input, T={run.T}"] if run.T is not None else []) + ([run.fold] if run.fold else [])
    return f"{what} ({', '.join(details)})"


def plot_training_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Validation (solid) and training (dashed) loss of every trained network, with a marker per
    epoch so that one-epoch runs show."""
    names = [n for n in histories if histories[n] and all("val_loss" in e and "train_loss" in e for e in histories[n])]
    fig, ax = plt.subplots(figsize=(10, 4.2 + 0.22 * ((len(names) + 3) // 2)))
    markers = "osD^vP*Xh<>"
    for k, name in enumerate(names):
        epochs = [e.get("epoch", i + 1) for i, e in enumerate(histories[name])]
        marker = markers[k % len(markers)]
        (line,) = ax.plot(epochs, [e["val_loss"] for e in histories[name]], marker=marker, markersize=7 - 0.4 * (k % 3), label=history_label(name))
        ax.plot(epochs, [e["train_loss"] for e in histories[name]], linestyle="--", marker=marker, markersize=4, fillstyle="none", color=line.get_color(), alpha=0.6)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("cross-entropy")
    ax.plot([], [], "k-o", label="validation (solid, filled)")
    ax.plot([], [], "k--o", fillstyle="none", alpha=0.6, label="training (dashed, hollow)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title("training and validation loss of every network trained")
    if names:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def layer_labels(names: list[str]) -> list[str]:
    """Readable names for neuron layers given by their module names (``features_3_neuron``,
    ``relu_2_neuron``, or for a neuron fused with the pool that reads it
    ``features_3_neuron_features_4_gated.neuron``, ``stem_2_neuron_stem_3.neuron``): ``L<k> <name>`` with the ``_neuron`` suffix
    (and the fused pool's part) dropped and dots for underscores between a name and an index."""
    import re

    labels = []
    for k, name in enumerate(names, 1):
        short = re.sub(r"_neuron(_.+\.neuron)?$", "", name)
        short = re.sub(r"_(\d+)", r".\1", short)
        labels.append(f"L{k} {short}")
    return labels


#: The firing-rate series: (label, rows wanted, colour).
RATE_SERIES = (
    ("zero-shot", dict(kind="zero-shot", neuron="IF", encoder="direct"), "tab:gray"),
    ("retrained, fixed tau", dict(kind="retrained", encoder="direct", learn_tau=False), "tab:blue"),
    ("retrained, learned tau", dict(kind="retrained", encoder="direct", learn_tau=True), "tab:cyan"),
)


def plot_firing_rates(rows: list[dict], path: Path) -> None:
    """Per model: spikes per neuron per step in each neuron layer, zero-shot (where its rows carry
    firing rates) and retrained with fixed and learned tau side by side, at the fine-tuning T."""
    rated = [r for r in rows if r.get("firing_rates")]
    models = list(dict.fromkeys(r["model"] for r in rated))
    fig, axes = plt.subplots(max(1, len(models)), 1, figsize=(9, 4.2 * max(1, len(models))), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        T = _learned_T(rated, model) or next((r["T"] for r in _select(rated, model=model, kind="retrained")), None)
        series = [(label, [r for r in _select(rated, model=model, **match) if T is None or r.get("T") == T], colour) for label, match, colour in RATE_SERIES]
        series = [s for s in series if s[1]]
        names = list(series[0][1][0]["firing_rates"]) if series else []
        width = 0.8 / max(1, len(series))
        for k, (label, mine, colour) in enumerate(series):
            means = [statistics.fmean(r["firing_rates"].get(n, float("nan")) for r in mine) for n in names]
            ax.bar([i + width * (k - (len(series) - 1) / 2) for i in range(len(names))], means, width, label=label, color=colour)
        ax.set_xticks(range(len(names)), layer_labels(names), rotation=30, fontsize=9, ha="right")
        ax.set_xlabel("neuron layer (input to output)")
        ax.set_ylabel("spikes per neuron per step")
        ax.set_title(f"{model}: firing rate per layer" + (f" at T = {T}" if T else ""))
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=9)
    if not models:
        axes[0, 0].text(0.5, 0.5, "no firing rates in the results", ha="center", va="center", transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_accuracy_vs_energy(rows: list[dict], path: Path, dataset: Optional[str] = None) -> None:
    """Test accuracy against estimated energy per inference relative to the CNN (``energy_pj /
    cnn_energy_pj`` of the rows that were profiled; the CNN sits at 1), one point per retrained
    configuration (model, encoder, T, tau), averaged over seeds."""
    profiled = [r for r in rows if r.get("energy_pj") and r.get("cnn_energy_pj")]
    fig, ax = plt.subplots(figsize=(9, 5))
    models = list(dict.fromkeys(r["model"] for r in profiled))
    markers = {"direct": "o", "rate": "s", "latency": "D"}
    ratios: list[float] = []
    points: list[tuple[float, float, str]] = []
    for k, model in enumerate(models):
        colour = f"C{k}"
        groups: dict[tuple, list[dict]] = {}
        for r in _select(profiled, model=model):
            groups.setdefault((r["kind"], r.get("encoder", "direct"), r.get("T"), bool(r.get("learn_tau"))), []).append(r)
        for n, ((kind, encoder, T, learned), mine) in enumerate(groups.items()):
            ratio = statistics.fmean(r["energy_pj"] / r["cnn_energy_pj"] for r in mine)
            top1 = statistics.fmean(r["top1"] for r in mine)
            ratios.append(ratio)
            ax.scatter(ratio, top1, marker=markers.get(encoder, "o"), s=70, edgecolor=colour, facecolor="white" if learned else colour, linewidth=1.5, zorder=3)
            points.append((ratio, top1, f"{kind}, {encoder} input, T={T}{', learned tau' if learned else ''}: {top1:.1f} %, {ratio:.3g} x"))
        cnn = _select(rows, model=model, kind="cnn")
        if cnn:
            ax.scatter(1.0, mean_spread([r["top1"] for r in cnn])[0], marker="*", s=220, color=colour, edgecolor="black", zorder=4, label=f"{model}: CNN")
        ax.scatter([], [], marker="o", color=colour, label=f"{model}: SNN (hollow: learned tau)")
    if profiled:
        ax.axvline(1.0, color="black", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        low, high = min(ratios + [1.0]), max(ratios + [1.0])
        ax.set_xlim(low / 2, high * 1.5)
        # labels below their points, stacked so that none overlaps: right-aligned for points in the
        # right half of the axis, left-aligned for the others
        for n, (ratio, top1, text) in enumerate(sorted(points, key=lambda p: -p[1])):
            right = math.log(ratio) > (math.log(low / 2) + math.log(high * 1.5)) / 2
            ax.annotate(
                text, (ratio, top1), textcoords="offset points", xytext=(-10 if right else 10, -16 - 13 * n), ha="right" if right else "left",
                fontsize=8, arrowprops=dict(arrowstyle="-", color="gray", linewidth=0.5), bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.9),
            )  # fmt: skip
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** math.floor(math.log10(v)), 6) in (2, 5) else ""))
        for encoder, marker in markers.items():
            if any(r.get("encoder", "direct") == encoder for r in profiled):
                ax.scatter([], [], marker=marker, color="gray", label=f"{encoder} input")
        ax.legend(fontsize=8, loc="lower left")
    else:
        ax.text(0.5, 0.5, "no energy estimates in the results", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("estimated energy per inference, SNN / CNN (log; < 1: the SNN spends less)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which="both")
    name = _dataset_title(dataset)
    ax.set_title(f"accuracy against energy{f' on {name}' if name else ''} (45 nm estimates: 0.9 pJ per AC, 4.6 pJ per MAC)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def _rebuild(out_dir: Path, model: Optional[str] = None, seed: Optional[int] = None) -> Optional[tuple]:
    """(experiment, model, seed, CNN, retrained SNN) rebuilt on the CPU from the experiment
    folder's checkpoints: the CNN of ``model`` (default: the experiment's first) and ``seed``
    (default: its first), and its SNN retrained with a fixed tau on direct input at the
    fine-tuning T. None where the folder lacks the config or those checkpoints (results merged
    from elsewhere, a cross-validated run, a run without retraining)."""
    from ann2snn_zoo.harness.checkpoint import load_checkpoint
    from ann2snn_zoo.harness.experiment import Experiment, ExperimentConfig

    out_dir = Path(out_dir)
    settings = read_json(out_dir / "config.json")
    if not settings or settings.get("cross_validation"):
        return None
    config = ExperimentConfig(**{**settings, "device": "cpu", "out_dir": str(out_dir)})
    model = model or config.models[0]
    seed = config.seeds[0] if seed is None else seed
    cnn_file = out_dir / "checkpoints" / f"cnn-{model}-s{seed}.pt"
    snn_file = out_dir / "checkpoints" / f"snn-{model}-s{seed}-learn_tau=0.pt"
    if not (cnn_file.is_file() and snn_file.is_file()):
        return None
    experiment = Experiment(config, log=lambda _message: None)
    cnn = experiment._build(model, seed)
    payload = load_checkpoint(cnn_file)
    cnn.load_state_dict(payload.get("best_state_dict") or payload["state_dict"])
    snn = experiment._convert(cnn.eval(), model, config.finetune_T, learn_tau=False, tau=config.lif_tau, encoder="direct")
    payload = load_checkpoint(snn_file)
    snn.load_state_dict(payload.get("best_state_dict") or payload["state_dict"])
    return experiment, model, seed, cnn, snn.eval()


def zero_shot_rate_row(rebuilt: tuple) -> dict:
    """A row with the firing rates of the zero-shot IF SNN (direct input, the fine-tuning T) of the
    rebuilt CNN, profiled like the retrained rows (``run_profile``: the first test batches)."""
    from ann2snn_zoo.harness.evaluate import run_profile

    experiment, model, seed, cnn, _ = rebuilt
    T = experiment.config.finetune_T
    snn = experiment._convert(cnn, model, T, learn_tau=False, tau=math.inf, encoder="direct")
    costs = run_profile(snn, experiment.splits(model)["test"])
    return dict(model=model, seed=seed, kind="zero-shot", neuron="IF", encoder="direct", T=T, firing_rates=costs["firing_rates"])


def plot_example_raster(rebuilt: tuple, path: Path) -> Path:
    """A spike raster of the first test example through the rebuilt retrained SNN (``_rebuild``),
    drawn by ``ann2snn.recording.plot_raster``; returns ``path``."""
    import torch

    from ann2snn.recording import plot_raster, record

    experiment, model, _, _, snn = rebuilt
    x, label = experiment.splits(model)["test"][0]
    with torch.no_grad(), record(snn) as rec:
        predicted = int(snn(x.unsqueeze(0)).argmax())
    dataset = _dataset_title(experiment.config.dataset)
    title = f"{model}, retrained SNN at T = {experiment.config.finetune_T}: one {dataset} test example (class {label}, predicted {predicted})"
    plot_raster(rec, path, title=title)
    return Path(path)


def write_outputs(rows: list[dict], out_dir: Path, finetune_T: int, histories: Optional[dict] = None, dataset: Optional[str] = None) -> dict[str, Path]:
    """Write results.csv, results.md and the plots; returns their paths by name. Where ``out_dir``
    holds the experiment's checkpoints, the first model's CNN and retrained SNN are rebuilt from
    them for the zero-shot firing rates and the spike raster (``spike_raster.png``). ``dataset``
    (for the plots' titles; default: out_dir's config.json's)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = dataset or (read_json(out_dir / "config.json") or {}).get("dataset")
    paths = {
        "csv": out_dir / "results.csv", "markdown": out_dir / "results.md",
        "accuracy_vs_T": out_dir / "accuracy_vs_T.png", "learn_tau": out_dir / "learn_tau.png",
        "training_curves": out_dir / "training_curves.png", "firing_rates": out_dir / "firing_rates.png",
        "accuracy_vs_energy": out_dir / "accuracy_vs_energy.png",
    }  # fmt: skip
    write_csv(rows, paths["csv"])
    with atomic_path(paths["markdown"]) as tmp:
        tmp.write_text(markdown_report(rows, finetune_T))
    plot_accuracy_vs_T(rows, paths["accuracy_vs_T"], dataset)
    plot_learn_tau(rows, paths["learn_tau"])
    plot_training_curves(histories or {}, paths["training_curves"])
    from ann2snn_zoo.errors import DataError
    from ann2snn_zoo.harness.checkpoint import CheckpointError

    try:
        rebuilt = _rebuild(out_dir)
        zero_shot = [zero_shot_rate_row(rebuilt)] if rebuilt is not None else []
    except (DataError, CheckpointError, RunFolderError, OSError) as error:  # the data or checkpoints moved since: plots from the rows only
        print(f"warning: no zero-shot firing rates or spike raster: cannot rebuild the networks from {out_dir} ({error})")
        rebuilt, zero_shot = None, []
    plot_firing_rates(rows + zero_shot, paths["firing_rates"])
    plot_accuracy_vs_energy(rows, paths["accuracy_vs_energy"], dataset)
    if rebuilt is not None:
        paths["spike_raster"] = plot_example_raster(rebuilt, out_dir / "spike_raster.png")
    from ann2snn_zoo.harness.curves import plot_all_curves  # curves imports save_figure from here

    paths.update({f"curves-{model}": path for model, path in plot_all_curves(histories or {}, out_dir).items()})
    return paths
