"""Exceptions raised by the compiler."""


class ConversionError(Exception):
    """The compiler refuses the model or an argument; the message names the culprit and the fix."""


class InputShapeError(ConversionError, ValueError):
    """A converted network was called with an input of the wrong shape."""


class NeuronCompileError(Exception):
    """``snn.compiled_neurons`` is on but ``torch.compile`` cannot compile the neuron steps here
    (no C++ compiler on CPU, no Triton on GPU): the message says so and how to train without it."""


class ConversionWarning(UserWarning):
    """Something in a conversion that works but probably not as the user meant."""


class StaleCalibrationWarning(ConversionWarning):
    """A network runs at a ``T`` other than the one its thresholds and corrections were tuned for."""
