"""Models by name: `create("m5", n_classes=10)`, `names()`, `input_spec("vgg")`.

Two groups: the zoo's own models (`names()`: m5, vgg, resnet, piczak) and the study's
(`names("study")`: the three CNNs of Eve-ning/snn_voice, reimplemented in `zoo.models.study`,
and `m5_4k`, our M5 at the study's 4 kHz); `names("all")` lists both. A model may fix front-end
settings (the study's run at 4 kHz): `input_spec(name).front_end()` applies them, and
`front_end(name, dataset)` (what the harness and `tools/train.py` build data with) puts them
over the data set's own rate.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from ann2snn_zoo.data.registry import dataset as _dataset
from ann2snn_zoo.frontend import FrontEnd
from ann2snn_zoo.models import m5, piczak, resnet, study, vgg


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: "waveform" [1, samples] or "logmel" [1, n_mels, frames] per item,
    and the front-end settings it fixes (`settings`, e.g. `(("sample_rate", 4000),)`)."""

    kind: str
    shape: tuple[int, ...]
    settings: tuple[tuple[str, Any], ...] = ()

    def front_end(self, **settings) -> FrontEnd:
        """A FrontEnd producing this kind of input: the model's own settings, overridden by
        `settings`, defaults for the rest."""
        return FrontEnd(kind=self.kind, **{**dict(self.settings), **settings})


@dataclass(frozen=True)
class _Entry:
    build: Callable[..., nn.Module]
    kind: str
    front_end: dict[str, Any] = field(default_factory=dict)
    group: str = "zoo"


_BUILDERS: dict[str, _Entry] = {
    "m5": _Entry(m5.build, "waveform"),
    "vgg": _Entry(vgg.build, "logmel"),
    "resnet": _Entry(resnet.build, "logmel"),
    "piczak": _Entry(piczak.build, "logmel"),
    # The study's models with its front end (Eve-ning/snn_voice: 4 kHz; 60 mel bands, 60 ms windows).
    "study_m5": _Entry(study.build_m5, "waveform", study.STUDY_WAVEFORM, "study"),
    "study_piczak": _Entry(study.build_piczak, "logmel", study.STUDY_FRONT_END, "study"),
    "study_hjh": _Entry(study.build_hjh, "logmel", study.STUDY_FRONT_END, "study"),
    # Our M5 at 4 kHz: stride 8 instead of 16 keeps four poolings of 4 within a 1 s clip.
    "m5_4k": _Entry(partial(m5.build, stride=8), "waveform", study.STUDY_WAVEFORM, "study"),
}
GROUPS = ("zoo", "study", "all")


def names(group: str = "zoo") -> list[str]:
    """Names of the registered models of `group`: "zoo" (the zoo's own), "study" (the study's
    models and the 4 kHz M5) or "all"."""
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    return [name for name, entry in _BUILDERS.items() if group in ("all", entry.group)]


def input_spec(name: str) -> InputSpec:
    """The input kind of model `name`, its shape under its front end, and that front end's settings."""
    entry = _lookup(name)
    return InputSpec(entry.kind, FrontEnd(kind=entry.kind, **entry.front_end).output_shape, tuple(sorted(entry.front_end.items())))


def front_end(name: str, dataset: str, **overrides) -> FrontEnd:
    """The front end that makes model `name`'s input from data set `dataset`'s clips: the data
    set's sample rate (its `zoo.data.registry` entry), then the model's own front-end settings
    (the study's models run at 4 kHz), then `overrides`."""
    spec = input_spec(name)
    return spec.front_end(**{"sample_rate": _dataset(dataset).sample_rate, **dict(spec.settings), **overrides})


def create(name: str, n_classes: int = 10, input_shape: tuple[int, ...] | None = None, **options) -> nn.Module:
    """Build model `name` for items of `input_shape` (default: `input_spec(name).shape`).

    `options` go to the model class (e.g. n_channel=64 for m5). The model's `input_spec`
    attribute records the kind and shape of input it was built for.
    """
    entry = _lookup(name)
    spec = input_spec(name)
    shape = tuple(input_shape) if input_shape is not None else spec.shape
    if len(shape) != len(spec.shape):
        raise ValueError(f"{name} takes {entry.kind} items of shape like {spec.shape}, got input_shape {shape}")
    model = entry.build(n_classes, shape, **options)
    model.input_spec = InputSpec(entry.kind, shape, spec.settings)
    _check_shape(name, model, shape)
    return model


def _lookup(name: str) -> _Entry:
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; the zoo has {', '.join(_BUILDERS)}")
    return _BUILDERS[name]


def _check_shape(name: str, model: nn.Module, shape: tuple[int, ...]) -> None:
    """Run one dummy item through the model so a too-small input fails here, with its name."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ValueError(f"{name} cannot take input of shape {shape}: {e}") from e
    finally:
        model.train(was_training)
