"""The conversion report: every rewritten node before -> after, thresholds, analog and dropped ops."""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .neurons import LEARNABLE_IF_TAU

#: Widest source excerpt in the text table; longer code is cut after a whole name, with "...".
SOURCE_WIDTH = 72
#: Shortest code excerpt kept after a long module path and file name.
MIN_CODE_WIDTH = 28
_PY_PATH = re.compile(r"(?:[A-Za-z]:)?[^\s:`,][^:`]*?\.py(?=:\d+)")


@functools.lru_cache(maxsize=512)
def short_path(filename: str) -> str:
    """``filename`` relative to the folder above its top-level package (``zoo/models/m5.py``), or
    else to the current directory; unchanged when it is neither absolute nor below either."""
    path = Path(filename)
    if not path.is_absolute():
        return filename
    top, folder = None, path.parent
    while (folder / "__init__.py").is_file() and folder.parent != folder:
        top, folder = folder, folder.parent
    base = top.parent if top is not None else Path.cwd()
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return filename


def short_source(source: str) -> str:
    """A report's source location with its file made short (``short_path``)."""
    return _PY_PATH.sub(lambda match: short_path(match.group(0)), source)


def _clip_code(source: str, width: int) -> str:
    """``source`` about ``width`` characters long by cutting the code excerpt after its last whole
    word (the module and file:line are never cut; at least ``MIN_CODE_WIDTH`` of the code stays)."""
    head, mark, code = source.partition(": `")
    if len(source) <= width or not mark:
        return source
    room = max(width - len(head) - len(mark) - 4, MIN_CODE_WIDTH)
    if room >= len(code) - 1:
        return source
    cut = code[:room]
    if room < len(code) and (code[room].isalnum() or code[room] == "_"):  # the cut falls inside a name: drop its start
        cut = re.sub(r"\w+$", "", cut) or cut  # one name longer than the room: cut it after all
    return f"{head}{mark}{cut.rstrip().rstrip('.')}...`"


def _neuron_text(tau: float, learned: bool) -> str:
    """The neuron part of the settings line: "IF", or "LIF (tau ... steps[, learned])" with the
    time constant the neurons start from (``tau=inf`` with ``learn_tau`` starts at ``LEARNABLE_IF_TAU``)."""
    if math.isinf(tau) and not learned:
        return "IF"
    if math.isinf(tau):
        return f"LIF (tau {LEARNABLE_IF_TAU:g} steps, learned, starting near IF for tau=inf)"
    return f"LIF (tau {tau:g} steps{', learned' if learned else ''})"


@dataclass
class Entry:
    """One rewrite: which node, what it was, what it became, where it came from."""

    node: str
    before: str
    after: str
    action: str  # "spiking", "pool", "folded", "dropped", "analog", "readout", "carried"
    source: str = ""
    threshold: Optional[str] = None
    module: str = ""  # the submodule the node became, where it became one


@dataclass
class ConversionReport:
    """What the compiler did to a model; ``str(report)`` renders a table."""

    entries: list[Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def add(self, node: str, before: str, after: str, action: str, source: str = "", module: str = "") -> Entry:
        entry = Entry(node, before, after, action, source, module=module)
        self.entries.append(entry)
        return entry

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def withdraw(self, prefix: str) -> None:
        """Drop the warnings that start with ``prefix`` (what they said no longer holds)."""
        self.warnings = [w for w in self.warnings if not w.startswith(prefix)]

    def by_action(self, action: str) -> list[Entry]:
        return [e for e in self.entries if e.action == action]

    def entry_for_module(self, module: str) -> Optional[Entry]:
        """The entry of the node that became submodule ``module``."""
        return next((e for e in self.entries if e.module == module), None)

    def rename_module(self, old: str, new: str) -> None:
        """Submodule ``old`` is now ``new`` (a later pass moved it): say so in its entries."""
        for entry in self.entries:
            if entry.module == old:
                entry.module = new
                entry.after = entry.after.replace(f"`{old}`", f"`{new}`")

    @property
    def neurons(self) -> list[Entry]:
        return self.by_action("spiking")

    @property
    def analog(self) -> list[Entry]:
        return self.by_action("analog")

    @property
    def dropped(self) -> list[Entry]:
        return self.by_action("dropped")

    def summary(self) -> str:
        """One line: how many nodes became neurons, stayed analog, were folded or dropped."""
        counts = {a: len(self.by_action(a)) for a in ("spiking", "pool", "folded", "analog", "dropped")}
        heads = len(self.by_action("head"))
        return (
            f"{counts['spiking']} ReLU sites -> spiking neurons, {counts['pool']} max pools rewritten, "
            f"{counts['folded']} batch norms folded, {counts['analog']} left analog, {counts['dropped']} dropped"
            + (f", {heads} output head op{'s' * (heads > 1)} applied to the output averaged over T" if heads else "")
        )

    def settings_line(self) -> str:
        """One line: the conversion settings, including the percentile "auto" chose and the T that
        T-specific calibration was tuned for."""
        s = self.settings
        if not s:
            return ""
        neuron = _neuron_text(s.get("tau", math.inf), bool(s.get("learn_tau")))
        percentile = s.get("percentile")
        if "percentile_chosen" in s:
            percentile = f"{percentile} (chose {s['percentile_chosen']})"
        correction = s.get("correction", "none")
        if correction != "none" and s.get("correction_applied") is False:
            correction += " (left off: it did not help at this T)"
        elif correction == "auto" and "correction_chosen" in s:
            chosen = s["correction_chosen"]
            correction += f" (chose {chosen})" if chosen != "none" else " (chose none: no correction helped at this T)"
        tuned = f", tuned for T={s['T']}" if correction != "none" or isinstance(s.get("percentile"), str) else ""
        where = "per channel" if s.get("per_channel") else "per layer"
        thresholds = f"thresholds {where} at percentile {percentile}" if percentile is not None else "thresholds 1.0 (no calibration)"
        if not self.neurons:  # nothing spikes: no threshold or correction to speak of
            thresholds, correction, tuned = "no spiking neurons (nothing to calibrate)", "none", ""
        return f"settings: T={s.get('T')}, {neuron}, {thresholds}, correction {correction}{tuned}, max pooling {s.get('maxpool')}, encoder {s.get('encoder')}"

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(node, before, after, threshold, source) per entry, the source's file made short (``short_path``)."""
        return [(e.node, e.before, e.after, e.threshold or "", short_source(e.source)) for e in self.entries]

    def to_markdown(self) -> str:
        """The report as a markdown table with the warnings below it."""
        lines = ["| node | before | after | threshold | source |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows()]
        lines += ["", self.summary(), "", self.settings_line()] + [f"- warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_text(self, warnings: bool = True) -> str:
        """The report as a plain-text table (names never cut; long source code cut after a whole
        word), the summary and settings lines, and (``warnings``) the warnings."""
        header = ("node", "before", "after", "threshold", "source")
        rows = [header] + [(*row[:4], _clip_code(row[4], SOURCE_WIDTH)) for row in self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        out.insert(1, "  ".join("-" * w for w in widths))
        out += [self.summary(), self.settings_line()]
        if warnings:
            out += [f"warning: {w}" for w in self.warnings]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.to_text()
