"""Models by name: `create("m5", n_classes=10)`, `names()`, `input_spec("vgg")`."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from zoo.frontend import FrontEnd
from zoo.models import m5, piczak, resnet, vgg


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: "waveform" [1, samples] or "logmel" [1, n_mels, frames] per item."""

    kind: str
    shape: tuple[int, ...]

    def front_end(self, **settings) -> FrontEnd:
        """A FrontEnd producing this kind of input (other settings as given, or defaults)."""
        return FrontEnd(kind=self.kind, **settings)


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], str]] = {
    "m5": (m5.build, "waveform"),
    "vgg": (vgg.build, "logmel"),
    "resnet": (resnet.build, "logmel"),
    "piczak": (piczak.build, "logmel"),
}


def names() -> list[str]:
    """Names of the registered models."""
    return list(_BUILDERS)


def input_spec(name: str) -> InputSpec:
    """The input kind of model `name` and its shape under the default front end."""
    _, kind = _lookup(name)
    return InputSpec(kind, FrontEnd(kind=kind).output_shape)


def create(name: str, n_classes: int = 10, input_shape: tuple[int, ...] | None = None, **options) -> nn.Module:
    """Build model `name` for items of `input_shape` (default: `input_spec(name).shape`).

    `options` go to the model class (e.g. n_channel=64 for m5). The model's `input_spec`
    attribute records the kind and shape of input it was built for.
    """
    build, kind = _lookup(name)
    default = FrontEnd(kind=kind).output_shape
    shape = tuple(input_shape) if input_shape is not None else default
    if len(shape) != len(default):
        raise ValueError(f"{name} takes {kind} items of shape like {default}, got input_shape {shape}")
    model = build(n_classes, shape, **options)
    model.input_spec = InputSpec(kind, shape)
    _check_shape(name, model, shape)
    return model


def _lookup(name: str) -> tuple[Callable[..., nn.Module], str]:
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
