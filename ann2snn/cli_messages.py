"""How the ``ann2snn`` command speaks: its one-line user error (``CliError``), errors said in one
line, and library messages rewritten in the command's terms (flags instead of Python arguments)."""

from __future__ import annotations

import re

from .config import ConversionConfig


class CliError(Exception):
    """A problem with the command's inputs; printed as one line, exit status 2."""


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message``, or the type alone for an empty message."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# -- messages in the command's terms ---------------------------------------------------------------
#: Settings whose ``name=value`` in a library message is not turned into a flag: ``T=25`` reads
#: better as it is ("calibrated for T=25").
_KEPT_AS_WRITTEN = {"T"}
_SETTING = re.compile(r"\b(%s)=(float\('inf'\)|'[^']*'|\"[^\"]*\"|[\w.+-]+)" % "|".join(n for n in ConversionConfig.names() if n not in _KEPT_AS_WRITTEN))
_CONVERT_CALL = re.compile(r"convert\(\.\.\., (\w+=[^()]*(?:\([^()]*\))?)\)")
_SHAPE_ORIGIN = "(the calibration data's shape, or convert's input_shape)"
_CLI_SHAPE_ORIGIN = "(the model file's input shape, --input-shape, or the first calibration batch's)"
_FREE_SIZES = re.compile(r"free them: snn\.input_shape = .*?convert\(\.\.\., input_shape=\([^()]*\)\)")
_INPUT_SHAPE = re.compile(r"input of shape \(\d+, ([\d, ]+)\)")
_PYTHON_ONLY = re.compile(r"\b(leaf_modules|concrete_args)\b")
_PYTHON_ONLY_NOTE = (
    " (leaf_modules and concrete_args have no flag in this command: to use them, convert from Python, "
    "snn = ann2snn.convert(model, leaf_modules=[...], calibration=batches), and write it with ann2snn.save(snn, PATH))"
)


def _as_flag(match: re.Match) -> str:
    """``allow_analog=True`` -> ``--allow-analog``, ``learn_tau=False`` -> ``--no-learn-tau``,
    ``maxpool='avg'`` -> ``--maxpool avg``, ``tau=float('inf')`` -> ``--tau inf``."""
    name, value = match.group(1), match.group(2)
    flag = "--" + name.replace("_", "-")
    if value in ("True", "False"):
        return flag if value == "True" else "--no-" + flag[2:]
    return f"{flag} {'inf' if value.startswith('float') else value.strip(chr(39) + chr(34))}"


def _free_sizes_advice(message: str) -> str:
    """The advice to free input sizes (``snn.input_shape = ...``, ``convert(..., input_shape=...)``)
    as the command's: ``--input-shape`` with the sizes of the input the message names."""
    given = _INPUT_SHAPE.search(message)
    sizes = given.group(1).replace(" ", "") if given else "SIZES"
    return _FREE_SIZES.sub(f"pass --input-shape {sizes} to convert for the sizes of your data", message)


def in_cli_terms(message: str) -> str:
    """A library message with its fixes in the command's terms: a setting written as a Python
    argument (``convert(..., allow_analog=True)``, ``tau_per_channel=True``) becomes the flag
    (``--allow-analog``), the advice on input shapes names ``--input-shape`` and the data, and
    arguments the command has no flag for (``leaf_modules``, ``concrete_args``) are said to need
    a conversion from Python."""
    message = _free_sizes_advice(message.replace(_SHAPE_ORIGIN, _CLI_SHAPE_ORIGIN))
    message = _CONVERT_CALL.sub(lambda m: m.group(1) if _SETTING.fullmatch(m.group(1)) else m.group(0), message)
    message = _SETTING.sub(_as_flag, message).replace("float('inf')", "--tau inf")
    return message + _PYTHON_ONLY_NOTE if _PYTHON_ONLY.search(message) else message
