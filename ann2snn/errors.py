"""Exceptions raised by the compiler."""


class ConversionError(Exception):
    """The compiler refuses the model or an argument; the message names the culprit and the fix."""


class InputShapeError(ConversionError, ValueError):
    """A converted network was called with an input of the wrong shape."""
