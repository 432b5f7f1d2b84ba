"""How the ``ann2snn`` command speaks: its one-line user error (``CliError``), argument errors in
one line (``OneLineParser``, also the audio zoo's tools'), errors said in one line, and library
messages rewritten in the command's terms (flags instead of Python arguments)."""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import Any, Callable, Iterable, Iterator, NoReturn, Optional, TextIO

from .config import ConversionConfig

#: Exit status of a user error (a bad argument, an unreadable input).
EXIT_ERROR = 2


class CliError(Exception):
    """A problem with the command's inputs; printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``PROG: error: MESSAGE (see PROG --help)``,
    without the usage block (``--help`` still prints it)."""

    def error(self, message: str) -> NoReturn:
        """Print the one-line error and exit with status 2."""
        self.exit(EXIT_ERROR, f"{self.prog}: error: {self.advice(message)} (see {self.prog} --help)\n")

    def advice(self, message: str) -> str:
        """``message`` with the way out this command knows for it, if any (none here)."""
        return message


def print_warnings(messages: Iterable[str], said: set[str]) -> None:
    """Print each of ``messages`` not yet in ``said`` as one ``warning:`` line on stderr, in the
    command's terms, and add it to ``said``: a warning is said once per run, however often the
    library gives it (the settings check, the calibration, each recalibration for another T)."""
    for message in messages:
        if message not in said:
            said.add(message)
            print(f"warning: {in_cli_terms(message)}", file=sys.stderr)


#: The words by which torch.fx introduces the excerpt of a GraphModule's generated code that it
#: prints to stderr (traceback, code lines, a ``<--- HERE`` marker) when the generated forward raises.
_FX_EXCERPT = "of the traced Module's generated forward function:"


class _WithoutFxExcerpts:
    """A text stream that writes everything to ``stream`` but torch.fx's excerpts of generated code:
    the error that follows one is usually the command's one-line message, which says what failed.
    The excerpts of the latest error in generated code are kept, for ``restore``."""

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._after_excerpt = stream, False
        self._error: Optional[BaseException] = None
        self._excerpts: list[str] = []

    def write(self, text: str) -> int:
        """Write ``text``, unless it is an excerpt or the newline that ``print`` writes after one."""
        excerpt = _FX_EXCERPT in text
        if excerpt:  # fx prints it while handling the error, which it raises again next
            error = sys.exc_info()[1]
            self._excerpts = (self._excerpts if error is self._error else []) + [text]
            self._error = error
        dropped = excerpt or (self._after_excerpt and text == "\n")
        self._after_excerpt = excerpt
        return len(text) if dropped else self._stream.write(text)

    def restore(self, error: BaseException) -> None:
        """Write to ``stream`` the excerpts kept for ``error`` (or an error it was raised from), as fx would have."""
        seen: set[int] = set()
        while error is not None and id(error) not in seen:
            if error is self._error:
                self._stream.write("".join(f"{excerpt}\n" for excerpt in self._excerpts))
                return
            seen.add(id(error))
            error = error.__cause__ or error.__context__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def without_fx_excerpts(said_in_one_line: Callable[[BaseException], bool]) -> Iterator[None]:
    """While active, torch.fx prints no excerpt of generated code to stderr; all else is written as
    usual. An error leaving it that ``said_in_one_line`` rejects (no one-line message will say what
    failed; its traceback, cut short by fx, is all the user gets) has its excerpts written back."""
    stream = _WithoutFxExcerpts(sys.stderr)
    try:
        with contextlib.redirect_stderr(stream):
            yield
    except BaseException as error:
        if not said_in_one_line(error):
            stream.restore(error)
        raise


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
