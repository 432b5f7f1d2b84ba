"""The audio zoo's part of the ``ann2snn`` command: for ``ann2snn convert``, zoo checkpoints and
state dicts (``--model``, ``--model-config``) and zoo data sets for ``--calibrate`` /
``--evaluate`` (``fsdd:PATH``, ``synthetic``, ... and ``--data-dir``); and the training
harness's commands ``ann2snn train`` (``tools/train.py``) and ``ann2snn experiment``
(``tools/experiment.py``). The compiler's command (``ann2snn.cli``) knows nothing
of the zoo; it takes this plugin from ``main`` below (``tools/convert.py``), or, for the installed
``ann2snn`` console script, from the entry point ``ann2snn.cli_plugins: zoo`` in pyproject.toml
(``ann2snn_zoo.cli_plugins:ZooPlugin``: the folder ``zoo/`` is installed as ``ann2snn_zoo``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import torch
from torch import nn

import ann2snn_zoo as zoo
from ann2snn import cli
from ann2snn.cli import CliError


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--model-config is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--model-config must be a JSON object, like '{\"n_classes\": 10}'")
    return value


def checkpoint_weights(payload: dict) -> tuple[dict, str]:
    """The weights to convert from a zoo checkpoint and which they are, for the output: early
    stopping's best (``best_state_dict``, what ``ann2snn train`` reports and keeps) where the
    checkpoint has them, else its last (``state_dict``); "" for a checkpoint that records no epochs."""
    epochs = payload.get("epoch")
    if not isinstance(epochs, int):
        return payload["state_dict"], ""
    last = f"of {epochs + 1} trained"  # the checkpoint counts epochs from 0, ann2snn train from 1
    best, epoch, loss = payload.get("best_state_dict"), payload.get("best_epoch"), payload.get("best_loss")
    if isinstance(best, dict) and isinstance(epoch, int) and epoch >= 0:
        lowest = f" ({loss:.4g})" if isinstance(loss, float) else ""
        return best, f"weights of epoch {epoch + 1} {last}, the best validation loss{lowest}"
    return payload["state_dict"], f"weights of epoch {epochs + 1} {last}, the last (the checkpoint records no best weights)"


class ZooPlugin(cli.CliPlugin):
    """Zoo models from checkpoints ``{'model', 'config', 'state_dict'}`` or plain state dicts,
    and zoo data sets through the front end that makes the model's input."""

    name = "zoo"
    model_help = "a zoo checkpoint {'model', 'config', 'state_dict'} or a zoo state dict (with --model)"

    @property
    def data_help(self) -> str:
        return f"a zoo data set ({', '.join(zoo.data.NAMES)}, as NAME:PATH or NAME with --data-dir; e.g. fsdd:data/fsdd)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("audio model zoo")
        group.add_argument("--model", dest="model_name", metavar="NAME", help=f"zoo model name, for a plain state dict ({', '.join(zoo.names('all'))})")
        group.add_argument("--model-config", type=_json_object, default={}, metavar="JSON", help="options for zoo.create, e.g. '{\"n_classes\": 10}' (default: those in the checkpoint)")
        group.add_argument("--data-dir", metavar="PATH", help="the folder of a zoo data set named without ':PATH' in --calibrate or --evaluate")

    def commands(self) -> dict:
        return {
            "train": ("train a zoo CNN on an audio data set (and fine-tune its SNN)", _train),
            "experiment": ("run the study: train, convert, measure, retrain; tables and plots", _experiment),
        }

    # -- models --------------------------------------------------------------------------------
    def model_from_dict(self, payload: dict, args: argparse.Namespace, origin: str) -> Optional[tuple[nn.Module, Optional[tuple[int, ...]]]]:
        if payload.get("kind") == "snn" and "state_dict" in payload:
            raise CliError(
                f"{origin} is the training checkpoint of an SNN fine-tuned by ann2snn train --snn-T, not a CNN: the network "
                "itself is NAME.finetuned.snn.pt beside it (ann2snn.load reads it); to convert again, give the CNN's checkpoint NAME.pt"
            )
        if "state_dict" in payload and isinstance(payload.get("model"), str):
            if args.model_name and args.model_name != payload["model"]:
                raise CliError(f"{origin} is a checkpoint of zoo model {payload['model']!r}, but --model says {args.model_name!r}")
            config = {**(payload.get("config") or {}), **args.model_config}
            weights, which = checkpoint_weights(payload)
            model = self._model(payload["model"], config, weights, origin)
            if which:
                print(f"{origin}: zoo model {payload['model']}, {which}")
        elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            if not args.model_name:
                raise CliError(f"{origin} is a plain state dict: name its architecture with --model NAME (one of {', '.join(zoo.names('all'))}) and --model-config JSON if needed")
            model = self._model(args.model_name, args.model_config, payload, origin)
        else:
            return None
        return model, tuple(model.input_spec.shape)

    @staticmethod
    def _model(name: str, config: dict, state_dict: dict, origin: str) -> nn.Module:
        if name not in zoo.names("all"):
            raise CliError(f"{origin}: unknown zoo model {name!r}; the zoo has {', '.join(zoo.names('all'))}")
        try:
            model = zoo.create(name, **config)
        except Exception as error:  # the zoo's constructors raise whatever torch raises for a bad size
            raise CliError(f"{origin}: cannot build zoo model {name!r} with config {config}: {_first_line(error)}") from error
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:
            first = str(error).strip().splitlines()
            raise CliError(f"{origin}: the weights do not fit zoo model {name!r} with config {config}: {' '.join(first[:3])}") from error
        return model

    # -- data sets -----------------------------------------------------------------------------
    def data_set_names(self) -> tuple[str, ...]:
        return tuple(zoo.data.NAMES)

    def examples(
        self,
        option: str,
        source: str,
        split: str,
        limit: Optional[int],
        args: argparse.Namespace,
        model: nn.Module,
        shape: Optional[tuple[Optional[int], ...]],
    ) -> Optional[list[tuple[torch.Tensor, int]]]:
        """The first ``limit`` (input, label) items of ``split`` of the zoo data set ``source``
        ('NAME:PATH', or 'NAME' with --data-dir), through the front end that makes this model's input."""
        name, _, data_dir = source.partition(":")
        if name not in zoo.data.NAMES:
            return None
        data_dir = data_dir or args.data_dir
        try:
            splits = zoo.data.load_splits(name, data_dir=data_dir or None, front_end=self._front_end(option, name, model, shape), cached=False)
            items = splits[split]
            count = len(items) if limit is None else min(len(items), limit)
            return [items[i] for i in range(count)]
        except (zoo.DataError, OSError, ValueError) as error:
            hint = ""
            if not data_dir and name != "synthetic":
                hint = f" (give its folder: {option} {name}:PATH, or --data-dir PATH"
                hint += "; to download FSDD: python -c \"import ann2snn_zoo; ann2snn_zoo.data.download_fsdd('data/fsdd')\")" if name == "fsdd" else ")"
            raise CliError(f"{option} {source}: {error}{hint}") from error

    @staticmethod
    def _front_end(option: str, data_set: str, model: nn.Module, shape: Optional[tuple[Optional[int], ...]]) -> zoo.FrontEnd:
        """The zoo front end that turns clips of ``data_set`` into this model's input: waveform for
        [1, samples], log-mel for [1, n_mels, frames] (10 ms hop), at the data set's sample rate."""
        spec = getattr(model, "input_spec", None)
        shape = tuple(spec.shape) if spec is not None else shape
        if shape is None or len(shape) not in (2, 3) or None in shape:
            given = f" (the model file gives {list(shape)}, with free sizes)" if shape is not None and None in shape else ""
            raise CliError(f"{option} from a zoo data set needs the model's input shape, [1, samples] or [1, n_mels, frames]{given}: pass --input-shape")
        rate = zoo.data.splits.SAMPLE_RATES.get(data_set, 8000)
        if len(shape) == 2:
            front_end = zoo.FrontEnd(kind="waveform", sample_rate=rate, length_s=shape[1] / rate)
        else:
            front_end = zoo.FrontEnd(kind="logmel", sample_rate=rate, n_mels=shape[1], length_s=(shape[2] - 1) / 100)
        if front_end.output_shape != shape:
            raise CliError(f"no zoo front end makes inputs of shape {shape} from {data_set}; give {option} a .pt file instead")
        return front_end


def _train(argv: list[str]) -> int:
    from ann2snn_zoo.harness.train_cli import main as train_main  # imported when run: the harness is heavier than the plugin

    return train_main(argv, prog="ann2snn train")


def _experiment(argv: list[str]) -> int:
    try:
        from ann2snn_zoo.harness.experiment_cli import main as experiment_main
    except ModuleNotFoundError as error:  # the study's tables come with plots: matplotlib, the plot extra
        if error.name != "matplotlib":
            raise
        print(f"error: ann2snn experiment needs matplotlib ({error}): pip install 'ann2snn[audio,plot]'", file=sys.stderr)
        return cli.EXIT_ERROR

    return experiment_main(argv, prog="ann2snn experiment")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``ann2snn`` with the zoo's plugin (``tools/convert.py``)."""
    return cli.main(argv, plugins=[ZooPlugin()])
