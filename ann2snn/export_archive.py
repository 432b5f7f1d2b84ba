"""Checks that a ``torch.export`` archive (.pt2) can be loaded without running code from it.

``torch.export.load`` unpickles the archive's sample inputs (falling back to
``weights_only=False``), weights and constants marked ``use_pickle``, legacy ``.pt`` entries and
custom objects; it loads AOTInductor shared libraries; it parses the symbolic shape expressions
with ``sympy.sympify`` (which evaluates Python, and computes powers such as ``9**9**9**9``
exactly, which never ends) and compiles the guard code it finds. An archive passes
``unsafe_entries`` only when it has none of these beyond plain tensors, weights-only sample inputs
and short arithmetic shape expressions whose powers have small whole exponents (``s0**2``, up to
``MAX_EXPONENT``), none nested, and whose numbers have at most ``MAX_DIGITS`` digits.
``costly_expressions`` is the part of that check that trusting the file does not waive: code runs
only from a file one trusts, but a trusted file's expression can still keep sympy busy forever.
``refuse_unpickling`` is the second line: while it is active, ``torch.load`` refuses
``weights_only=False`` and custom objects are refused.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch

#: Entries of a plain exported program, relative to the archive's root folder.
SAFE_ENTRIES = re.compile(
    r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/\w+\.json"
    r"|data/weights/(weight_\d+|\w+_weights_config\.json)|data/constants/(tensor_\d+|\w+_constants_config\.json)"
    r"|data/sample_inputs/\w+\.pt|extra/[\w.-]+"
)
_TOKEN = re.compile(r"\s*(?:([A-Za-z_]\w*)|(\d+(?:\.\d*)?(?:e[+-]?\d+)?)|('[A-Za-z_]\w*')|(\*\*|//|==|!=|<=|>=|[-+*/%(),<>=]))")
_SYMBOL = re.compile(r"[a-z]+\d+")
#: Bounds that keep a shape expression cheap for sympy to evaluate (see ``_costly``).
MAX_EXPRESSION_LENGTH = 2000
MAX_DIGITS = 12
_NUMBER = re.compile(r"(?<![\w.])\d[\w.]*")  # a number literal, its exponent or suffix included
_SMALL_NUMBER = re.compile(rf"\d{{1,{MAX_DIGITS}}}(\.\d{{0,{MAX_DIGITS}}})?")
#: Largest exponent (or shift) a power may have: ``s0**2`` for a square input's area is harmless,
#: ``9**99999`` is not.
MAX_EXPONENT = 16
#: Calls that sympy (or Python, or torch's deserializer) evaluates as a power or a shift.
_POWER_CALLS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift", "pow"})
#: Operators that are a power or a shift in ``sympify``, which reads ``^`` as ``**``.
_POWER_OPERATORS = (ast.Pow, ast.BitXor, ast.LShift, ast.RShift)
#: Names a symbolic shape expression may use besides symbols like ``s0``: sympy's constructors,
#: its assumptions and the functions torch's deserializer passes to ``sympify``.
SYMPY_NAMES = frozenset(
    "Symbol Integer Rational Float Add Mul Pow Mod Max Min Abs Eq Ne Lt Le Gt Ge And Or Not True False oo zoo nan "
    "positive negative nonnegative nonpositive integer real finite FloorDiv ModularIndexing Where PythonMod "
    "CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift IntTrueDiv FloatTrueDiv ToFloat TruncToInt OpaqueUnaryFn_sqrt "
    "RoundToInt RoundDecimal Identity".split()
)


class UnsafeArchive(Exception):
    """The archive holds something that loading it would unpickle or execute."""


def is_export_archive(path: Any) -> bool:
    """Whether the file at ``path`` is a ``torch.export`` archive (a zip with an ``archive_format`` entry)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/archive_format") for name in archive.namelist())


def unsafe_entries(path: Any) -> list[str]:
    """What in the archive at ``path`` would run code when ``torch.export.load`` reads it (empty if nothing)."""
    problems: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            entry = info.filename.partition("/")[2]
            if info.is_dir():
                continue
            if not SAFE_ENTRIES.fullmatch(entry):
                problems.append(f"entry {info.filename} (not part of a plain exported program)")
            elif entry.endswith("_config.json"):
                problems += _pickled_payloads(archive, info.filename)
            elif entry.startswith("data/sample_inputs/"):
                problems += _pickled_inputs(archive, info.filename)
            elif entry.startswith("models/"):
                problems += _unsafe_expressions(archive, info.filename)
    return problems


def costly_expressions(path: Any) -> list[str]:
    """The shape expressions in the archive at ``path`` that sympy could take practically forever to
    evaluate when ``torch.export.load`` reads them (empty if none); see ``_costly``."""
    problems: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            entry = info.filename.partition("/")[2]
            if not info.is_dir() and entry.startswith("models/") and entry.endswith(".json"):  # what torch.export.load parses
                program = json.loads(archive.read(info.filename))
                problems += [f"{info.filename}: shape expression {_excerpt(text)} ({_costly(text)})" for text in _expressions(program) if _costly(text)]
    return problems


def _pickled_payloads(archive: zipfile.ZipFile, name: str) -> list[str]:
    config = json.loads(archive.read(name)).get("config", {})
    return [f"{name}: {key} is pickled" for key, meta in config.items() if meta.get("use_pickle")]


def _pickled_inputs(archive: zipfile.ZipFile, name: str) -> list[str]:
    try:
        torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except Exception as error:
        return [f"{name}: sample inputs that only unpickling reads ({type(error).__name__})"]
    return []


def _unsafe_expressions(archive: zipfile.ZipFile, name: str) -> list[str]:
    program = json.loads(archive.read(name))
    problems = [f"{name}: guard code {code!r:.60}" for code in program.get("guards_code") or []]
    problems += [f"{name}: range constraint on {key!r:.60}" for key in program.get("range_constraints") or {} if not _SYMBOL.fullmatch(key)]
    for text in _expressions(program):
        reason = _costly(text) or ("" if _arithmetic(text) else "code, not arithmetic")
        if reason:
            problems.append(f"{name}: shape expression {_excerpt(text)} ({reason})")
    return problems


def _expressions(value: Any) -> Iterator[Any]:
    """Every ``expr_str`` in the serialized program (sympy parses each)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr_str":
                yield item
            else:
                yield from _expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _expressions(item)


def _costly(text: Any) -> str:
    """Why sympy could take practically forever to evaluate ``text`` ('' if it cannot): an overlong
    expression, a number literal over ``MAX_DIGITS`` digits, text that is not a Python expression,
    a power (``**``, ``^``, ``Pow``, a shift) whose exponent is not a whole number within
    ``MAX_EXPONENT``, or a power of a power."""
    if not isinstance(text, str):
        return ""
    if len(text) > MAX_EXPRESSION_LENGTH:
        return f"over {MAX_EXPRESSION_LENGTH} characters long"
    number = next((m.group() for m in _NUMBER.finditer(text) if not _SMALL_NUMBER.fullmatch(m.group())), None)
    if number:
        return f"the number {number[:20]}{'...' if len(number) > 20 else ''}, not plain digits or over {MAX_DIGITS} of them"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "not a Python expression, so how long sympy takes on it cannot be checked"
    return next((reason for node in ast.walk(tree) if (reason := _costly_power(node, text))), "")


def _costly_power(node: ast.AST, text: str) -> str:
    """Why ``node`` of the expression ``text`` could keep sympy busy, when it is a power or a shift
    ('' if it cannot)."""
    operands = _power_operands(node)
    if operands is None:
        return ""
    base, exponent = operands
    if exponent is None or not _small_exponent(exponent):
        shown = "?" if exponent is None else ast.get_source_segment(text, exponent) or "?"
        return f"a power or shift by {shown[:20]}{'...' if len(shown) > 20 else ''}, not a whole number from -{MAX_EXPONENT} to {MAX_EXPONENT}, which sympy evaluates exactly however large"
    if base is None or any(_power_operands(inner) is not None for inner in ast.walk(base)):
        return "a power of a power, which sympy evaluates exactly however large"
    return ""


def _power_operands(node: ast.AST) -> Optional[tuple[Optional[ast.AST], Optional[ast.AST]]]:
    """``(base, exponent)`` when ``node`` is a power or a shift (both None when its call does not
    give them as two plain arguments); None when it is neither."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, _POWER_OPERATORS):
        return node.left, node.right
    if not isinstance(node, ast.Call) or (node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)) not in _POWER_CALLS:
        return None
    if node.keywords or len(node.args) != 2 or any(isinstance(arg, ast.Starred) for arg in node.args):
        return None, None
    return node.args[0], node.args[1]


def _small_exponent(node: ast.AST) -> bool:
    """True when ``node`` is a whole-number literal from ``-MAX_EXPONENT`` to ``MAX_EXPONENT``:
    ``2``, ``-1``, ``Integer(2)``, ``Integer(-1)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Integer" and len(node.args) == 1 and not node.keywords:
        node = node.args[0]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value <= MAX_EXPONENT


def _excerpt(text: Any) -> str:
    """``text`` for a one-line message: its repr, its middle cut when long."""
    shown = repr(text)
    return shown if len(shown) <= 120 else f"{shown[:60]}...{shown[-50:]}"


def _arithmetic(text: Any) -> bool:
    """True when ``text`` is arithmetic over shape symbols and sympy constructors, nothing else."""
    if not isinstance(text, str):
        return False
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() != position:
            return False
        name = match.group(1)
        if name is not None and name not in SYMPY_NAMES and not _SYMBOL.fullmatch(name):
            return False
        position = match.end()
    return text[position:].strip() == ""


@contextmanager
def refuse_unpickling() -> Iterator[None]:
    """While active, ``torch.load(weights_only=False)`` and custom-object loading raise UnsafeArchive."""
    load, load_object = torch.load, torch._C._pickle_load_obj

    def weights_only_load(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is False:
            raise UnsafeArchive("an entry that only unpickling reads")
        return load(*args, **{**kwargs, "weights_only": True})

    def no_objects(*args: Any, **kwargs: Any) -> Any:
        raise UnsafeArchive("a pickled custom object")

    torch.load, torch._C._pickle_load_obj = weights_only_load, no_objects
    try:
        yield
    finally:
        torch.load, torch._C._pickle_load_obj = load, load_object
