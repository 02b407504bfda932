"""Draws the figure of tools/results.py: bars with ± the seed std as error bars, accuracy against shots as lines
with a seed band; one legend for the whole figure; written as PNG and PDF.

Panels are plain data (``BarPanel``, ``LinePanel``), built by tools/results.py from its tables, so what is drawn
can be tested without reading pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

Y_LABEL = "top-1 accuracy (%)"
VECTOR_SUFFIX = ".pdf"
PUBLISHED_HATCH = "//"
PUBLISHED_LABEL = "published (hatched; no seeds, no error bar)"


@dataclass
class BarSeries:
    """One colour of bars: a value and a seed std per x position (None = no bar / no spread)."""

    label: str
    values: list[float | None]
    errors: list[float | None]
    hatched: list[bool] = field(default_factory=list)  # per x position: a published figure


@dataclass
class BarPanel:
    title: str
    x_labels: list[str]
    x_title: str
    series: list[BarSeries]


@dataclass
class LineSeries:
    """Accuracy against shots of one trainer/configuration: mean and seed std at each shots it has."""

    label: str
    shots: list[int]
    means: list[float]
    stds: list[float]


@dataclass
class LinePanel:
    title: str
    series: list[LineSeries]


def _error(value: float | None) -> float:
    return math.nan if value is None else value  # NaN draws no error bar (one seed: no spread)


def draw_bars(axis, panel: BarPanel, colours: dict[str, str]) -> None:
    """Grouped bars, each with its error bar; published bars hatched, without one."""
    width = 0.8 / max(1, len(panel.series))
    for index, series in enumerate(panel.series):
        offset = (index - (len(panel.series) - 1) / 2) * width
        hatched = series.hatched or [False] * len(series.values)
        drawn = [(x, v, e, h) for x, (v, e, h) in enumerate(zip(series.values, series.errors, hatched))
                 if v is not None]
        if not drawn:
            continue
        xs, heights, errors, hatches = zip(*drawn)
        bars = axis.bar([x + offset for x in xs], heights, width, color=colours[series.label], label=series.label,
                        yerr=[math.nan if h else _error(e) for e, h in zip(errors, hatches)],
                        error_kw={"capsize": 2, "elinewidth": 1, "ecolor": "black"})
        for bar, hatch in zip(bars, hatches):
            if hatch:
                bar.set_hatch(PUBLISHED_HATCH)
                bar.set_alpha(0.55)
    axis.set_xticks(range(len(panel.x_labels)))
    axis.set_xticklabels(panel.x_labels, rotation=30, ha="right", fontsize=8)
    axis.set_xlim(-0.6, len(panel.x_labels) - 0.4)
    axis.set_xlabel(panel.x_title)
    axis.set_ylim(0, 100)


def draw_lines(axis, panel: LinePanel, colours: dict[str, str]) -> None:
    """Accuracy against shots, shots evenly spaced as in CoOp's figure; the band is ± the seed std."""
    shots = sorted({k for line in panel.series for k in line.shots})
    position = {k: i for i, k in enumerate(shots)}
    for line in panel.series:
        xs = [position[k] for k in line.shots]
        colour = colours[line.label]
        if len(xs) == 1:  # e.g. zero-shot CLIP at 0 shots: a point with its spread
            axis.errorbar(xs, line.means, yerr=line.stds, fmt="*", markersize=10, capsize=3, color=colour,
                          label=line.label)
            continue
        axis.plot(xs, line.means, marker="o", color=colour, label=line.label)
        low = [m - s for m, s in zip(line.means, line.stds)]
        high = [m + s for m, s in zip(line.means, line.stds)]
        axis.fill_between(xs, low, high, color=colour, alpha=0.2, linewidth=0)
    axis.set_xticks(range(len(shots)))
    axis.set_xticklabels([str(k) for k in shots])
    axis.set_xlabel("training images per class (shots)")


def _labels(panels: list[BarPanel | LinePanel]) -> list[str]:
    return list(dict.fromkeys(s.label for p in panels for s in p.series))


def draw_figure(panels: list[BarPanel | LinePanel], columns: int = 1):
    """The figure of ``panels`` (``columns`` side by side), with one legend for all of them."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    labels = _labels(panels)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {label: cycle[i % len(cycle)] for i, label in enumerate(labels)}
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    panel_width = max([6.0] + [0.35 * len(p.x_labels) * max(1, len(p.series)) ** 0.5 + 2.0
                               for p in panels if isinstance(p, BarPanel)])
    legend_width = 0.09 * max(len(label) for label in labels + [PUBLISHED_LABEL]) + 0.8
    figure, axes = plt.subplots(rows, columns, figsize=(panel_width * columns + legend_width, 3.6 * rows),
                                squeeze=False, layout="constrained")
    for axis, panel in zip(axes.flat, panels):
        if isinstance(panel, BarPanel):
            draw_bars(axis, panel, colours)
        else:
            draw_lines(axis, panel, colours)
        axis.set_title(panel.title)
        axis.set_ylabel(Y_LABEL)
        axis.grid(axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    drawn: dict[str, object] = {}  # one handle per label, as drawn (bar colour and hatch, line or point marker)
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    legend_labels = [label for label in labels if label in drawn]
    handles = [drawn[label] for label in legend_labels]
    if any(any(s.hatched and any(s.hatched) for s in p.series) for p in panels if isinstance(p, BarPanel)):
        handles.append(Patch(facecolor="white", edgecolor="grey", hatch=PUBLISHED_HATCH))
        legend_labels.append(PUBLISHED_LABEL)
    figure.legend(handles, legend_labels, loc="outside right upper", fontsize=8)
    return figure


def save_figure(figure, path: Path) -> list[Path]:
    """``path`` (PNG) and the same figure as a vector file beside it (PDF), for papers."""
    import matplotlib.pyplot as plt

    if path.suffix.lower() in (".pdf", ".svg"):  # asked for a vector file: the PNG goes beside it
        path, vector = path.with_suffix(".png"), path
    else:
        vector = path.with_suffix(VECTOR_SUFFIX)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    figure.savefig(vector)
    plt.close(figure)
    return [path, vector]
