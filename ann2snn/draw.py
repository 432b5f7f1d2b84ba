"""Draw a CNN and its converted SNN side by side (networkx layout, matplotlib Agg backend).

``ann2snn.draw.draw(model, snn, "graph.png")``: each panel is the data-flow graph, one row per
topological generation (inputs at the top), nodes coloured by what they are: spiking neurons,
analog layers (conv, linear), pooling, ReLUs of the CNN, joins and reshapes, input/output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import networkx as nx
from torch import fx, nn

from .atomic import atomic_path
from .graph import to_networkx
from .trace import trace

#: kind -> (legend label, colour). Kinds not listed are drawn as "other".
_STYLES: dict[str, tuple[str, str]] = {
    "input": ("input / output", "#d9d9d9"),
    "output": ("input / output", "#d9d9d9"),
    "neuron": ("spiking neuron", "#e6550d"),
    "relu": ("ReLU (CNN)", "#fdae6b"),
    "conv": ("analog layer (conv, linear)", "#3182bd"),
    "linear": ("analog layer (conv, linear)", "#3182bd"),
    "batchnorm": ("batch norm", "#9ecae1"),
    "gated_pool": ("pooling", "#31a354"),
    "maxpool": ("pooling", "#31a354"),
    "avgpool": ("pooling", "#31a354"),
    "avg_pool1d": ("pooling", "#31a354"),
    "avg_pool2d": ("pooling", "#31a354"),
    "adaptive_avg_pool1d": ("pooling", "#31a354"),
    "adaptive_avg_pool2d": ("pooling", "#31a354"),
    "add": ("join (add, cat)", "#756bb1"),
    "cat": ("join (add, cat)", "#756bb1"),
    "time_broadcast": ("time broadcast", "#bcbddc"),
}
_OTHER = ("other (reshape, dropout, ...)", "#f0f0f0")
#: What a drawing's metadata (``Creator``) says, so that a later run knows it may replace the file.
DRAWN_BY = "ann2snn.draw"
#: Formats whose metadata holds ``DRAWN_BY``.
_MARKED = (".png", ".pdf", ".svg")


def is_drawing(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file ``draw`` wrote (its metadata names ``DRAWN_BY``)."""
    try:
        with open(path, "rb") as file:
            return DRAWN_BY.encode() in file.read(64 << 20)
    except OSError:
        return False


def _target(path: str | os.PathLike) -> Path:
    """The file ``draw`` writes: ``path``, or with ``.png`` when it has no suffix; an image format
    matplotlib cannot write is refused before any drawing."""
    from matplotlib.backend_bases import FigureCanvasBase

    target = Path(path).with_suffix(Path(path).suffix or ".png")
    known = FigureCanvasBase.get_supported_filetypes()
    if target.suffix[1:].lower() not in known:
        raise ValueError(f"draw: {path}: matplotlib cannot write {target.suffix} files; give a name ending in .png, .pdf or .svg")
    return target


def _layered_positions(graph: nx.DiGraph) -> dict[str, tuple[float, float]]:
    """One row per topological generation (inputs on top); within a row, nodes sit in the order
    of their predecessors' mean position, which keeps parallel branches from crossing."""
    positions: dict[str, tuple[float, float]] = {}
    for row, generation in enumerate(nx.topological_generations(graph)):

        def order(name: str) -> tuple[float, str]:
            above = [positions[p][0] for p in graph.predecessors(name) if p in positions]
            return (sum(above) / len(above) if above else 0.0, name)

        for k, name in enumerate(sorted(generation, key=order)):
            positions[name] = (k - (len(generation) - 1) / 2, -row)
    return positions


def _label(graph: nx.DiGraph, name: str) -> str:
    data = graph.nodes[name]
    what = data["module_type"] or data["kind"]
    return name if what in (name, "input", "output", "attribute") else f"{name}: {what}"


def _draw_nodes(ax, graph: nx.DiGraph, positions: dict, title: str) -> tuple[dict, set[str]]:
    """Labelled, coloured boxes; returns the text artists by node and the legend labels used."""
    boxes, used = {}, set()
    for name in graph.nodes:
        label, colour = _STYLES.get(graph.nodes[name]["kind"], _OTHER)
        used.add(label)
        boxes[name] = ax.text(
            *positions[name], _label(graph, name), ha="center", va="center", fontsize=8, zorder=3, bbox=dict(boxstyle="round,pad=0.35", facecolor=colour, edgecolor="#333333", linewidth=0.8)
        )
    xs = [x for x, _ in positions.values()] or [0]
    ys = [y for _, y in positions.values()] or [0]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.set_title(title, fontsize=11)
    ax.axis("off")
    return boxes, used


def _draw_edges(ax, graph: nx.DiGraph, positions: dict, boxes: dict, renderer) -> None:
    """Arrows between boxes. An edge that skips rows (a residual connection) runs in a lane to
    the right of every box it passes, so it never hides behind the chain."""
    to_data = ax.transData.inverted()
    right = {name: to_data.transform(box.get_bbox_patch().get_window_extent(renderer))[1][0] for name, box in boxes.items()}
    arrow = dict(arrowstyle="-|>", color="#444444", linewidth=0.9, shrinkA=1, shrinkB=1)
    lanes: list[tuple[float, float, float]] = []  # (top y, bottom y, x) of lanes in use
    for source, target in sorted(graph.edges, key=lambda e: positions[e[0]][1] - positions[e[1]][1]):
        (xs, ys), (xt, yt) = positions[source], positions[target]
        if ys - yt <= 1:
            ax.annotate("", xy=(xt, yt), xytext=(xs, ys), zorder=2, arrowprops=dict(arrow, patchA=boxes[source].get_bbox_patch(), patchB=boxes[target].get_bbox_patch()))
            continue
        passed = [right[n] for n, (_, y) in positions.items() if yt <= y <= ys]
        x = max(passed) + 0.12
        while any(top >= yt and bottom <= ys and abs(lane - x) < 0.1 for top, bottom, lane in lanes):
            x += 0.12
        lanes.append((ys, yt, x))
        ax.plot([right[source], x, x], [ys, ys, yt], color="#444444", linewidth=0.9, zorder=2, clip_on=False)
        ax.annotate("", xy=(right[target], yt), xytext=(x, yt), zorder=2, annotation_clip=False, arrowprops=dict(arrow, shrinkA=0))


def draw(model: nn.Module | fx.GraphModule, snn, path: str | os.PathLike, *, title: Optional[str] = None) -> None:
    """Write a drawing of ``model`` (before conversion) beside ``snn.network`` (after) to ``path``
    (its suffix picks the format: ``.png``, the default, ``.pdf``, ``.svg``...).

    ``model`` may be the CNN (traced with ``ann2snn.trace``) or an already traced GraphModule.
    The file is written atomically. Needs matplotlib (``pip install 'ann2snn[plot]'``).
    """
    try:
        import matplotlib
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"draw() needs matplotlib, which is not installed ({error}): pip install 'ann2snn[plot]'", name=error.name) from error

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    target = _target(path)

    before = to_networkx(model if isinstance(model, fx.GraphModule) else trace(model.eval()))
    after = to_networkx(snn.network)
    rows = max(len(list(nx.topological_generations(g))) for g in (before, after))
    columns = max(max(len(gen) for gen in nx.topological_generations(g)) for g in (before, after))
    widest = max(len(_label(g, n)) for g in (before, after) for n in g.nodes)
    column_inches = 0.075 * widest + 0.5  # 8-point labels are about 0.075 inch per character
    height = max(5.0, 0.42 * rows + 1.6)
    figure, axes = plt.subplots(1, 2, figsize=(max(9.0, 2 * (columns + 0.6) * column_inches), height))
    panels = [(ax, graph, _layered_positions(graph)) for ax, graph in zip(axes, (before, after))]
    drawn = [_draw_nodes(ax, graph, positions, title) for (ax, graph, positions), title in zip(panels, ("CNN (before)", "SNN (after conversion)"))]
    used = drawn[0][1] | drawn[1][1]
    legend = {label: colour for label, colour in list(_STYLES.values()) + [_OTHER] if label in used}
    top = 1 - 0.9 / height  # room for the title and the legend, in figure fractions
    figure.legend(
        handles=[Patch(facecolor=c, edgecolor="#333333", label=name) for name, c in legend.items()],
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.35 / height),
        ncol=min(4, len(legend)),
        fontsize=9,
        frameon=False,
    )
    if title:
        figure.suptitle(title, y=1 - 0.05 / height, va="top", fontsize=12, fontweight="bold")
    figure.tight_layout(rect=(0, 0, 1, top))
    figure.canvas.draw()  # places the boxes, so that their extents are known
    renderer = figure.canvas.get_renderer()
    for (ax, graph, positions), (boxes, _) in zip(panels, drawn):
        _draw_edges(ax, graph, positions, boxes, renderer)
    try:
        metadata = {"Creator": DRAWN_BY} if target.suffix.lower() in _MARKED else None
        with atomic_path(target) as tmp:
            figure.savefig(tmp, dpi=110, metadata=metadata)  # the suffix picks the format
    finally:
        plt.close(figure)
