"""The ``--evaluate`` table of the ``ann2snn convert`` command: CNN accuracy on the evaluation data,
then one row per T with the SNN's accuracy and its top-1 agreement with the CNN."""

from __future__ import annotations

import argparse
import copy
import traceback
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
from torch import fx, nn
from torch.utils._pytree import tree_leaves

from .cli_messages import CliError, _first_line, print_warnings
from .convert import recalibrate
from .timeloop import SpikingNetwork


@torch.no_grad()
def predictions(model: nn.Module, inputs: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, int]:
    """The top class of every input, computed in batches, and the number of classes."""
    model.eval()
    outputs = [model(batch) for batch in inputs.split(batch_size)]
    if not all(isinstance(y, torch.Tensor) and y.dim() == 2 for y in outputs):
        raise CliError("--evaluate needs a classifier: a model whose output is [batch, classes]")
    return torch.cat([y.argmax(1) for y in outputs]), outputs[0].shape[1]


class _NodeRecorder(fx.Interpreter):
    """Runs a graph node by node, remembering the node it runs last (the one that fails, if one does)."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.extra_traceback, self.node = False, None

    def run_node(self, n: fx.Node) -> Any:
        self.node = n
        return super().run_node(n)


def _failing_node(model: fx.GraphModule, batch: torch.Tensor) -> str:
    """``at node `name` (kind) on its input [batch, ...]`` where ``model`` fails on ``batch``
    ('' when it runs, or fails before its first node)."""
    recorder = _NodeRecorder(model)
    try:
        with torch.no_grad():
            recorder.run(batch)
        return ""
    except Exception:
        n = recorder.node
    if n is None:
        return ""
    kind = type(model.get_submodule(str(n.target))).__name__ if n.op == "call_module" else getattr(n.target, "__name__", str(n.target))
    inputs = [a for a in tree_leaves((n.args, n.kwargs)) if isinstance(a, fx.Node) and isinstance(recorder.env.get(a), torch.Tensor)]
    shape = tuple(recorder.env[inputs[0]].shape[1:]) if inputs and recorder.env[inputs[0]].dim() else None
    return f"at node `{n.name}` ({kind})" + (f" on its input [batch, {', '.join(map(str, shape))}]" if shape is not None else "")


def _failure_site(model: nn.Module, inputs: torch.Tensor, batch_size: int, error: Exception) -> str:
    """Where in ``model`` evaluating ``inputs`` fails with ``error``: for a GraphModule, whose
    generated code leaves no traceback, the node that fails; else the last line of the traceback
    outside torch and this file. '' when it cannot tell."""
    if isinstance(model, fx.GraphModule):
        return next((site for batch in inputs.split(batch_size) if (site := _failing_node(model, batch))), "")
    outside = (str(Path(torch.__file__).parent), __file__)
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith(outside)]
    return f"at {frames[-1].filename}:{frames[-1].lineno}: `{(frames[-1].line or '').strip()}`" if frames else ""


def _percent(hits: torch.Tensor) -> str:
    return f"{100 * hits.float().mean().item():.1f} %"


class Evaluation:
    """The evaluation data and the CNN's predictions, checked before conversion starts; then
    (``start``) the CNN's accuracy and one row per T: SNN accuracy and top-1 agreement with the
    CNN, printed as they are measured."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, description: str, batch_size: int) -> None:
        self.inputs, self.targets, self.batch_size, self.description = inputs, targets, batch_size, description
        try:
            self.cnn, classes = predictions(model, inputs, batch_size)
        except CliError:
            raise
        except Exception as error:
            site = _failure_site(model, inputs, batch_size, error)
            raise CliError(f"--evaluate: the model fails on the evaluation inputs of shape {tuple(inputs.shape)} ({description}){' ' + site if site else ''}: {_first_line(error)}") from error
        if int(targets.min()) < 0 or int(targets.max()) >= classes:
            raise CliError(f"--evaluate: targets must be class indices in 0..{classes - 1} (the model has {classes} outputs); found {int(targets.min())}..{int(targets.max())}")

    def start(self, note: Optional[str] = None) -> None:
        print(f"\nevaluation on {self.description}: CNN accuracy {_percent(self.cnn == self.targets)}")
        if note:
            print(note)
        print(f"{'T':>6}  {'SNN accuracy':>12}  {'agreement with CNN':>18}")

    def row(self, T: int, snn: SpikingNetwork) -> None:
        spiking, _ = predictions(snn, self.inputs, self.batch_size)
        print(f"{T:>6}  {_percent(spiking == self.targets):>12}  {_percent(spiking == self.cnn):>18}", flush=True)


def evaluate_over_T(args: argparse.Namespace, snn: SpikingNetwork, batches: Optional[list], evaluation: Evaluation, said: set[str]) -> None:
    """One row per --T: the converted SNN at the first; for the others a copy, recalibrated for
    that T when there is calibration data (thresholds and corrections are T-specific). The
    recalibrations' warnings are printed like the conversion's, those in ``said`` (already
    printed) left out."""
    evaluation.start(f"thresholds and corrections calibrated for each T; the SNN written is the one for T={args.T[0]}" if len(args.T) > 1 and batches is not None else None)
    evaluation.row(args.T[0], snn)
    for T in args.T[1:]:
        other = copy.deepcopy(snn)
        if batches is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                recalibrate(other, batches, T=T)
            print_warnings([str(w.message) for w in caught], said)
        else:
            other.T = T
        evaluation.row(T, other)
