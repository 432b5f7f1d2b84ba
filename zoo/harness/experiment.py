"""The study: train CNNs, convert them, measure zero-shot SNN accuracy over T (IF and LIF,
three encoders), fine-tune with learn_tau off and on, train the same SNN from scratch
(``zoo.harness.scratch``: batch norm kept during training, thresholds calibrated on the
untrained net, folded afterwards).

Every result is one row in ``results.jsonl`` (appended as soon as it exists); a rerun skips the
cells already there, and model training resumes from its checkpoint, so a killed sweep goes on
where it stopped. One run at a time holds a folder, and a rerun must keep the settings that
change results (see ``zoo.harness.run_folder``).
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.data import DataLoader

import ann2snn
import ann2snn_zoo as zoo
from ann2snn_zoo.harness.evaluate import evaluate, run_profile
from ann2snn_zoo.harness.run_folder import SettingsError, check_data_dir, check_out_folder, check_path_given, check_settings, folder_lock, read_json, read_rows, write_json
from ann2snn_zoo.harness.scratch import fold_scratch_snn, scratch_snn
from ann2snn_zoo.harness.train import TrainConfig, device_problem, fit, resolve_device, seed_everything
from ann2snn_zoo.harness.train_state import model_entries
from ann2snn_zoo.registry import front_end as model_front_end


@dataclass
class ExperimentConfig:
    dataset: str = "synthetic"
    data_dir: Optional[str] = None
    models: tuple[str, ...] = ("m5",)
    seeds: tuple[int, ...] = (0,)
    out_dir: str = "runs/experiment"
    device: str = "auto"
    batch_size: int = 64
    cnn_epochs: int = 30
    cnn_lr: float = 3e-3
    snn_epochs: int = 2
    snn_lr: float = 3e-4
    scratch_epochs: Optional[int] = 2  # None: the CNN's recipe (epochs, patience, learning rate, schedule)
    scratch_init: str = "bn"  # "bn": zoo.harness.scratch (batch norm kept, folded after); "converted": the untrained CNN converted as is (stays at chance)
    patience: int = 8
    zero_shot_T: tuple[int, ...] = (1, 2, 4, 8, 16, 25, 32, 64, 128)
    lif_zero_shot_T: Optional[tuple[int, ...]] = None  # LIF zero-shot steps (None: zero_shot_T)
    finetune_T: int = 25
    lif_tau: float = ann2snn.DEFAULT_LEARNABLE_TAU
    encoders: tuple[str, ...] = ("direct", "rate", "latency")  # zero-shot (other than direct: at each retrain_T)
    retrain_encoders: tuple[str, ...] = ("direct",)  # fine-tuned after conversion, each at every retrain_T (fixed tau)
    retrain_T: Optional[tuple[int, ...]] = None  # None: (finetune_T,); direct at finetune_T also trains with learned tau
    from_scratch: bool = True
    calibration_batches: int = 8
    percentile: float | str = "auto"  # chosen per T: see ann2snn.calibrate.AUTO_CANDIDATES
    per_channel: bool = True
    test_speaker: Optional[str] = None
    cross_validation: Optional[str] = None  # "speaker": leave-one-speaker-out, one run per speaker in out_dir/fold-<speaker>
    max_batches: Optional[int] = None
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    front_end: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: zoo.FrontEnd settings over the model's own (e.g. sample_rate)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    augment: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: zoo.Augment options for training
    tau_lr_scale: float = 1.0  # fine-tuning: learning rate of the time constants over snn_lr
    cnn_training: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model: TrainConfig fields for its CNN (epochs, patience, lr)
    progress: bool = True

    def train_config(self, epochs: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(
            epochs=epochs, lr=lr, batch_size=self.batch_size, patience=self.patience, seed=seed,
            device=self.device, max_batches=self.max_batches, progress=self.progress,
        )  # fmt: skip

    def conversion(self, T: int, **settings: Any) -> ann2snn.ConversionConfig:
        """This experiment's conversion settings at ``T`` (its percentile and per-channel choice;
        ``settings`` override any ``ann2snn.ConversionConfig`` field, checked there)."""
        return ann2snn.ConversionConfig(T=T, percentile=self.percentile, per_channel=self.per_channel).replace(**settings)

    def retrain_steps(self) -> tuple[int, ...]:
        return tuple(self.retrain_T or (self.finetune_T,))

    def retrain_cells(self) -> list[tuple[str, int, bool]]:
        """(encoder, T, learn_tau) of every fine-tuning run: direct input at ``finetune_T`` with
        fixed and learned tau, then every ``retrain_encoders`` x ``retrain_T`` with fixed tau."""
        cells = [("direct", self.finetune_T, False), ("direct", self.finetune_T, True)]
        cells += [(e, T, False) for e in self.retrain_encoders for T in self.retrain_steps() if (e, T, False) not in cells]
        return cells

    def cnn_recipe(self, model: str) -> dict[str, Any]:
        """Epochs, learning rate and patience the CNN of ``model`` trains with."""
        return {"epochs": self.cnn_epochs, "lr": self.cnn_lr, "patience": self.patience, **self.cnn_training.get(model, {})}

    def data_options(self) -> dict[str, Any]:
        """The data set class's options (``zoo.data.load_splits``'s ``options``)."""
        speaker = {"test_speaker": self.test_speaker} if self.test_speaker else {}
        return {**self.dataset_options, **speaker}


#: Seed of the draw of calibration examples from the training split (the same for every run).
CALIBRATION_SEED = 0


class Results:
    """The rows of ``results.jsonl``, keyed by cell, appended to the file as they arrive."""

    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        self.device = device
        self.rows: dict[str, dict[str, Any]] = {row["cell"]: row for row in read_rows(path)}

    def __contains__(self, cell: str) -> bool:
        return cell in self.rows

    def add(self, row: dict[str, Any]) -> None:
        row.setdefault("device", self.device)
        self.rows[row["cell"]] = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def epoch_speed(snn_epoch_s: float, cnn_epoch_s: float, T: int) -> str:
    """The log's words for an SNN epoch's time: seconds, over a CNN epoch, and over T CNN epochs
    (per time step: the results table's "SNN epoch / (T x CNN epoch)")."""
    ratio = snn_epoch_s / cnn_epoch_s
    return f"{snn_epoch_s:.1f} s/epoch, {ratio:.2f} x a CNN epoch, {ratio / T:.2f} x per time step"


def cell_id(model: str, seed: int, kind: str, neuron: str = "-", T: int | None = None, encoder: str = "direct", learn_tau: bool | None = None) -> str:
    return f"{model}/s{seed}/{kind}/{neuron}/T{T}/{encoder}/learn_tau={learn_tau}"


def _row(cell: str, model: str, seed: int, kind: str, metrics, **extra: Any) -> dict[str, Any]:
    return dict(cell=cell, model=model, seed=seed, kind=kind, top1=metrics.top1, top5=metrics.top5, loss=metrics.loss, eval_s=metrics.seconds, **extra)


def _timing(history) -> dict[str, Any]:
    """Epochs run, the best (lowest validation loss) epoch, training seconds in all and up to the best."""
    seconds = [e["seconds"] for e in history.epochs]
    best = history.best_epoch + 1
    return dict(epochs=len(seconds), best_epoch=best, train_s=sum(seconds), seconds_to_best=sum(seconds[:best]))


class Experiment:
    """Runs the cells of one ExperimentConfig; see ``run_experiment``."""

    def __init__(self, config: ExperimentConfig, log: Callable[[str], None] = print) -> None:
        self.config = config
        self.log = log
        self.out = Path(config.out_dir)
        (self.out / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(config.device)
        self.results = Results(self.out / "results.jsonl", self.device.type)
        self._splits: dict[str, zoo.data.Splits] = {}
        self._calibration: dict[str, list[torch.Tensor]] = {}
        self.histories = load_histories(self.out)

    # -- data --------------------------------------------------------------------------------
    def splits(self, model: str) -> zoo.data.Splits:
        augment = self.config.augment.get(model)
        front_end = self.front_end(model)
        key = f"{front_end.kind} at {front_end.sample_rate} Hz" + (f", augmented {sorted(augment.items())}" if augment else "")
        key += f" {json.dumps(front_end.settings(), sort_keys=True)}" if front_end.settings() != zoo.FrontEnd(kind=front_end.kind, sample_rate=front_end.sample_rate).settings() else ""
        if key not in self._splits:
            options = self.config.data_options()
            start = time.perf_counter()
            self._splits[key] = zoo.data.load_splits(
                self.config.dataset, self.config.data_dir, front_end=front_end, seed=0,
                augment=zoo.Augment(**augment) if augment else None, cache_dir=self.out / "feature-cache", **options,
            )  # fmt: skip
            sizes = {k: len(v) for k, v in self._splits[key].items()}
            self.log(f"{self.config.dataset} ({key}): {sizes}, features ready in {time.perf_counter() - start:.1f} s")
        return self._splits[key]

    def front_end(self, model: str) -> zoo.FrontEnd:
        """The model's front end: the data set's sample rate, then the model's own settings (the
        study's models run at 4 kHz), then ``config.front_end[model]``."""
        return model_front_end(model, self.config.dataset, **self.config.front_end.get(model, {}))

    def calibration(self, model: str) -> list[torch.Tensor]:
        """``calibration_batches`` batches of training examples drawn at random with a fixed seed
        (the training split is stored class by class: its first batches hold two digits only),
        gathered once per model under a fixed RNG state, so augmentation draws the same shifts
        whatever ran before; every conversion reuses them."""
        if model not in self._calibration:
            with torch.random.fork_rng():
                torch.manual_seed(CALIBRATION_SEED)
                order = torch.Generator().manual_seed(CALIBRATION_SEED)
                loader = DataLoader(self.splits(model)["train"], batch_size=self.config.batch_size, shuffle=True, generator=order)
                self._calibration[model] = [x for (x, _), _ in zip(loader, range(self.config.calibration_batches))]
        return self._calibration[model]

    # -- cells -------------------------------------------------------------------------------
    def _build(self, model: str, seed: int) -> torch.nn.Module:
        seed_everything(seed)
        splits = self.splits(model)
        shape = tuple(splits["train"][0][0].shape)
        return zoo.create(model, n_classes=splits.n_classes, input_shape=shape, **self.config.model_options.get(model, {}))

    def _fit(self, net: torch.nn.Module, model: str, name: str, epochs: int, lr: float, seed: int, extra: dict, overrides: Optional[dict] = None) -> Any:
        splits = self.splits(model)
        history = fit(
            net, splits["train"], splits["val"], replace(self.config.train_config(epochs, lr, seed), **(overrides or {})),
            checkpoint=self.out / "checkpoints" / f"{name}.pt", resume=True, checkpoint_extra=extra,
            desc=name, log=self.log,
        )  # fmt: skip
        self.histories[name] = history.epochs
        write_json(self.out / "histories.json", self.histories)
        return history

    def train_cnn(self, model: str, seed: int) -> tuple[torch.nn.Module, float]:
        cnn = self._build(model, seed)
        extra = model_entries(model, {"n_classes": self.splits(model).n_classes, "input_shape": list(cnn.input_spec.shape), **self.config.model_options.get(model, {})})
        history = self._fit(cnn, model, f"cnn-{model}-s{seed}", self.config.cnn_epochs, self.config.cnn_lr, seed, extra, self.config.cnn_training.get(model, {}))
        cell = cell_id(model, seed, "cnn")
        if cell not in self.results:
            metrics = evaluate(cnn, self.splits(model)["test"], device=self.device)
            self.results.add(_row(cell, model, seed, "cnn", metrics, epoch_s=history.seconds_per_epoch, **_timing(history)))
        return cnn.eval(), self.results.rows[cell]["epoch_s"]

    def zero_shot(self, cnn: torch.nn.Module, model: str, seed: int) -> None:
        config, test = self.config, self.splits(model)["test"]
        for neuron, tau in (("IF", math.inf), ("LIF", config.lif_tau)):
            encoders = config.encoders if neuron == "IF" else ("direct",)
            for encoder in encoders:
                steps = (config.lif_zero_shot_T or config.zero_shot_T) if neuron == "LIF" else config.zero_shot_T
                steps = steps if encoder == "direct" else config.retrain_steps()
                for T in steps:
                    cell = cell_id(model, seed, "zero-shot", neuron, T, encoder)
                    if cell in self.results:
                        continue
                    torch.manual_seed(seed)  # rate coding draws random spikes
                    snn = self._convert(cnn, model, T, learn_tau=False, tau=tau, encoder=encoder)  # thresholds for this T
                    metrics = evaluate(snn, test, device=self.device)
                    chosen = snn.report.settings.get("percentile_chosen", config.percentile)
                    self.results.add(_row(cell, model, seed, "zero-shot", metrics, neuron=neuron, T=T, encoder=encoder, tau=tau, percentile=chosen))
                    self.log(f"{model} seed {seed} zero-shot {neuron} {encoder} T={T}: {metrics.top1:.1f} %")

    def _convert(self, cnn: torch.nn.Module, model: str, T: int, **options: Any) -> ann2snn.SpikingNetwork:
        return ann2snn.convert(cnn, config=self.config.conversion(T, **options), calibration=self.calibration(model)).to(self.device)

    def retrain(self, cnn: torch.nn.Module, model: str, seed: int, cnn_epoch_s: float) -> None:
        """Convert and fine-tune (LIF, surrogate gradients) every ``config.retrain_cells()``."""
        config = self.config
        for encoder, T, learn_tau in config.retrain_cells():
            cell = cell_id(model, seed, "retrained", "LIF", T, encoder, learn_tau=learn_tau)
            if cell in self.results:
                continue
            seed_everything(seed)
            snn = self._convert(cnn, model, T, learn_tau=learn_tau, tau=config.lif_tau, encoder=encoder)
            name = f"snn-{model}-s{seed}-learn_tau={int(learn_tau)}"
            if (encoder, T) != ("direct", config.finetune_T):
                name = f"snn-{model}-s{seed}-{encoder}-T{T}-learn_tau={int(learn_tau)}"
            history = self._fit(snn, model, name, config.snn_epochs, config.snn_lr, seed, model_entries(model, kind="snn"), {"tau_lr_scale": config.tau_lr_scale})
            torch.manual_seed(seed)  # rate coding draws random spikes
            metrics = evaluate(snn, self.splits(model)["test"], device=self.device)
            taus = [float(m.tau.mean()) for m in snn.network.modules() if isinstance(m, ann2snn.SpikingNeuron)]
            costs = run_profile(snn, self.splits(model)["test"], device=self.device)
            self.results.add(_row(
                cell, model, seed, "retrained", metrics, neuron="LIF", T=T, encoder=encoder, learn_tau=learn_tau, tau=config.lif_tau,
                epoch_s=history.seconds_per_epoch, snn_cnn_epoch_ratio=history.seconds_per_epoch / cnn_epoch_s,
                learned_tau=taus, run=name, **_timing(history), **costs,
            ))  # fmt: skip
            self.log(f"{model} seed {seed} retrained LIF {encoder} T={T} learn_tau={learn_tau}: {metrics.top1:.1f} % ({epoch_speed(history.seconds_per_epoch, cnn_epoch_s, T)})")

    def from_scratch(self, model: str, seed: int, cnn_epoch_s: float) -> None:
        """The SNN twin trained from random weights at ``finetune_T`` (LIF, fixed tau), with the
        CNN's optimiser and schedule for ``scratch_epochs`` epochs (None: the CNN's whole recipe).
        ``scratch_init="bn"`` (default) keeps batch norm during training and folds it afterwards
        (``zoo.harness.scratch``); the test accuracy is the folded network's."""
        config, T = self.config, self.config.finetune_T
        init = config.scratch_init
        if init not in ("bn", "converted"):
            raise ValueError(f"scratch_init={init!r} is not one of 'bn', 'converted'")
        cell = cell_id(model, seed, "scratch", "LIF", T) + ("" if init == "converted" else f"/init={init}")
        if cell in self.results:
            return
        recipe = config.cnn_recipe(model)
        epochs = recipe["epochs"] if config.scratch_epochs is None else config.scratch_epochs
        overrides = {"patience": recipe["patience"]} if config.scratch_epochs is None else {}
        fresh = self._build(model, seed + 1000).eval()
        if init == "converted":  # the old recipe, kept to show what goes wrong
            snn = self._convert(fresh, model, T, learn_tau=False, tau=config.lif_tau)
            name = f"scratch-{model}-s{seed}"
        else:
            snn = scratch_snn(copy.deepcopy(fresh), T, self.calibration(model), tau=config.lif_tau).to(self.device)
            name = f"scratch-{init}-{model}-s{seed}"
        history = self._fit(snn, model, name, epochs, recipe["lr"], seed, model_entries(model, kind="snn"), overrides)
        if init == "bn":
            snn = fold_scratch_snn(snn, fresh)
        metrics = evaluate(snn, self.splits(model)["test"], device=self.device)
        self.results.add(_row(
            cell, model, seed, "scratch", metrics, neuron="LIF", T=T, tau=config.lif_tau, epoch_s=history.seconds_per_epoch,
            snn_cnn_epoch_ratio=history.seconds_per_epoch / cnn_epoch_s, init=init, run=name, **_timing(history),
        ))  # fmt: skip
        self.log(f"{model} seed {seed} SNN from scratch T={T} ({init}): {metrics.top1:.1f} % after {len(history.epochs)} epochs")

    def run(self) -> list[dict[str, Any]]:
        write_json(self.out / "config.json", asdict(self.config))
        for seed in self.config.seeds:  # all models of one seed first: a cut-short run covers every model
            for model in self.config.models:
                cnn, cnn_epoch_s = self.train_cnn(model, seed)
                self.zero_shot(cnn, model, seed)
                self.retrain(cnn, model, seed, cnn_epoch_s)
                if self.config.from_scratch:
                    self.from_scratch(model, seed, cnn_epoch_s)
        return list(self.results.rows.values())


def load_histories(out_dir: str | Path) -> dict[str, list[dict[str, float]]]:
    """The per-epoch training records of every model trained in an experiment folder; for a
    cross-validated experiment, of every fold's folder, keyed ``fold-<speaker>/<name>``."""
    out = Path(out_dir)
    histories = read_json(out / "histories.json") or {}
    for fold in sorted(out.glob("fold-*/histories.json")):
        histories.update({f"{fold.parent.name}/{name}": epochs for name, epochs in (read_json(fold) or {}).items()})
    return histories


def fold_configs(config: ExperimentConfig) -> list[ExperimentConfig]:
    """The runs of a cross-validated experiment: with ``cross_validation="speaker"`` one per
    speaker (``zoo.data.splits.speaker_folds``), each in ``out_dir/fold-<speaker>``; otherwise
    ``[config]``."""
    if config.cross_validation is None:
        return [config]
    if config.cross_validation != "speaker":
        raise ValueError(f"cross_validation={config.cross_validation!r} is not None or 'speaker'")
    if config.test_speaker is not None:
        raise ValueError("cross_validation='speaker' chooses the test speaker of each fold: leave test_speaker unset")
    return [
        replace(config, cross_validation=None, out_dir=str(Path(config.out_dir) / f"fold-{fold['test_speaker']}"), **fold) for fold in zoo.data.splits.speaker_folds(config.dataset, config.data_dir)
    ]


#: Seeds numpy takes (0 .. 2**32 - 1), less the offset of the from-scratch SNN's seed.
MAX_SEED = 2**32 - 1 - 1000


def check_seeds(seeds: tuple[int, ...]) -> None:
    """SettingsError, on one line, unless every seed lies in 0 .. MAX_SEED."""
    bad = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
    if bad:
        raise SettingsError(f"--seeds {' '.join(map(str, bad))}: a seed must be a whole number from 0 to {MAX_SEED} (2**32 - 1001: the harness adds up to 1000 to a seed); e.g. --seeds 0 1 2")


def is_experiment_config(stored: Any) -> bool:
    """Whether ``stored`` (a config.json's content) is an ExperimentConfig's settings."""
    fields = set(asdict(ExperimentConfig()))
    return isinstance(stored, dict) and "finetune_T" in stored and set(stored) <= fields


def check_device(device: str) -> None:
    """SettingsError unless ``device`` is auto, cpu, or a cuda / mps device this machine has."""
    problem = device_problem(device)
    if problem:
        raise SettingsError(f"--device {problem}")


def check_config(config: ExperimentConfig) -> None:
    """Refuse (SettingsError, RunFolderError), before anything is written, settings that would
    fail midway: an unusable device, a seed numpy refuses, an empty --out or one that is a file,
    lies inside the data set, or holds another tool's files (``run_folder.check_out_folder``), a
    --data-dir that is empty or a file."""
    check_seeds(config.seeds)
    check_device(config.device)
    check_path_given(config.out_dir, "--out", "a folder for the results")
    check_data_dir(config.data_dir)
    check_out_folder(Path(config.out_dir), config.data_dir, is_experiment_config)


def run_experiment(config: ExperimentConfig, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or resume) every cell of the experiment; returns all result rows.

    The data source is checked before anything is created (DataError); the folder is locked for
    the run, and a folder measured with other settings is refused (RunFolderError). With
    ``cross_validation="speaker"`` each fold runs (and resumes) in its own folder, one after the
    other, and every row carries its ``fold`` (the test speaker). Settings that cannot run (a
    device, a seed, the folder: ``check_config``) are refused before anything is written."""
    check_config(config)
    if config.cross_validation is not None:
        folds = fold_configs(config)
        for fold in folds:
            check_config(fold)
        Path(config.out_dir).mkdir(parents=True, exist_ok=True)
        check_settings(Path(config.out_dir), asdict(config), asdict(ExperimentConfig()))
        write_json(Path(config.out_dir) / "config.json", asdict(config))
        rows = []
        for k, fold in enumerate(folds, 1):
            log(f"fold {k}/{len(folds)}: test speaker {fold.test_speaker}")
            rows += [dict(row, fold=fold.test_speaker) for row in run_experiment(fold, log)]
        return rows
    zoo.data.splits.check_source(config.dataset, config.data_dir, **config.data_options())
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):
        check_settings(out, asdict(config), asdict(ExperimentConfig()))
        return Experiment(config, log).run()
