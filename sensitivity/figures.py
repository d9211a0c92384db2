"""Figures: an image with its predicted (red) and ground-truth (green) boxes, and its sensitivity map.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas directly, so nothing touches
pyplot's global state, no GUI backend is needed and every figure is freed when the function returns.
Figure sizes are fixed (no tight bounding box), so the PNG size in pixels is predictable: see
:func:`plot_localization` and :func:`plot_example_grid`.

Boxes are (x1, y1, x2, y2) normalised to [0, 1] (see :mod:`sensitivity.boxes`), one box (4,) or
several (k, 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from numpy.typing import ArrayLike
from PIL import Image

PRED_COLOUR = "red"
TRUE_COLOUR = "lime"
MAP_CMAP = "jet"
MAP_ALPHA = 0.5
#: Height of the title and legend above an example grid.
HEADER_INCHES = 0.6

#: One grid item: (image, sensitivity map or None, predicted boxes, true boxes or None, label).
GridItem = tuple[Image.Image, ArrayLike | None, ArrayLike, ArrayLike | None, str]


def _as_boxes(boxes: ArrayLike | None, name: str) -> np.ndarray:
    if boxes is None:
        return np.empty((0, 4))
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.empty((0, 4))
    if arr.shape == (4,):
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (4,) or (k, 4), got {np.shape(boxes)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def _as_map(sensitivity_map: ArrayLike) -> np.ndarray:
    m = np.asarray(sensitivity_map, dtype=np.float64)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"sensitivity_map must be a 2-D (H, W) array, got shape {m.shape}")
    return m


def _display_map(m: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1] for display, clipping the top 0.5 % so a few spikes don't wash it out."""
    m = np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
    low = float(m.min())
    high = float(np.percentile(m, 99.5))
    if not high > low:
        high = float(m.max())
    if not high > low:
        return np.zeros_like(m)
    return np.clip((m - low) / (high - low), 0.0, 1.0)


def _draw_boxes(ax: Axes, boxes: np.ndarray, width: int, height: int, colour: str, linewidth: float) -> None:
    outline = [patheffects.withStroke(linewidth=linewidth + 1.5, foreground="black")]
    for x1, y1, x2, y2 in boxes:
        ax.add_patch(
            Rectangle(
                (x1 * width, y1 * height),
                (x2 - x1) * width,
                (y2 - y1) * height,
                fill=False,
                edgecolor=colour,
                linewidth=linewidth,
                path_effects=outline,
            )
        )


def _show(
    ax: Axes,
    image: Image.Image,
    sensitivity_map: np.ndarray | None,
    pred: np.ndarray,
    true: np.ndarray,
    linewidth: float,
) -> None:
    """Draw the image (and map overlay, resized to the image) with true boxes under predicted ones."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    extent = (0, width, height, 0)
    if sensitivity_map is None:
        ax.imshow(rgb, extent=extent, interpolation="antialiased")
    else:
        grey = np.asarray(image.convert("L"))
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="antialiased")
        ax.imshow(_display_map(sensitivity_map), cmap=MAP_CMAP, vmin=0, vmax=1, alpha=MAP_ALPHA,
                  extent=extent, interpolation="bilinear")
    _draw_boxes(ax, true, width, height, TRUE_COLOUR, linewidth)
    _draw_boxes(ax, pred, width, height, PRED_COLOUR, linewidth)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_axis_off()


def _save(fig: Figure, path: str | PathLike[str], dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    try:
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        fig.clear()
    return path


def plot_localization(
    image: Image.Image,
    sensitivity_map: ArrayLike,
    boxes_pred: ArrayLike,
    boxes_true: ArrayLike | None,
    title: str,
    path: str | PathLike[str],
    panel_width: float = 5.0,
    dpi: int = 100,
) -> Path:
    """Write a two-panel PNG: (a) the image with its boxes, (b) the sensitivity map over the image.

    The predicted box(es) are red, the ground-truth boxes (if any) green; the map (any resolution) is
    stretched over the whole image (as with ``squash`` preprocessing), drawn in a colour map over the
    grey image. Each panel is ``panel_width`` inches wide with the image's aspect ratio, plus a title
    band: the PNG is ``2 * panel_width * dpi`` pixels wide and ``figure_height(...) * dpi`` pixels high.
    Returns the path written.
    """
    pred = _as_boxes(boxes_pred, "boxes_pred")
    true = _as_boxes(boxes_true, "boxes_true")
    m = _as_map(sensitivity_map)
    width, height = image.size
    fig = Figure(figsize=(2 * panel_width, figure_height(width, height, panel_width)))
    title_share = TITLE_INCHES / fig.get_figheight()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - title_share, wspace=0.02)
    axes = fig.subplots(1, 2)
    _show(axes[0], image, None, pred, true, linewidth=2.0)
    _show(axes[1], image, m, pred, true, linewidth=2.0)
    axes[0].set_title("(a) image", fontsize=9)
    axes[1].set_title("(b) sensitivity map", fontsize=9)
    fig.suptitle(title, fontsize=10, y=1 - 0.15 * title_share)
    return _save(fig, path, dpi)


#: Height in inches reserved above the panels of :func:`plot_localization` for the titles.
TITLE_INCHES = 0.6


def figure_height(width: int, height: int, panel_width: float = 5.0) -> float:
    """Figure height in inches of :func:`plot_localization` for an image of ``width`` × ``height``.

    The aspect ratio is clamped to [1/4, 4] so extreme panoramas stay legible.
    """
    aspect = min(max(height / width, 0.25), 4.0)
    return panel_width * aspect + TITLE_INCHES


def plot_example_grid(
    items: Sequence[GridItem],
    path: str | PathLike[str],
    columns: int = 4,
    cell_inches: float = 3.0,
    dpi: int = 100,
    title: str = "",
    legend: tuple[str, str] | None = None,
) -> Path:
    """Write a grid of examples (as in the paper's Figures 3 and 4) to a PNG.

    ``items`` are ``(image, map or None, predicted boxes, true boxes or None, label)``; a map, when
    given, is overlaid on the grey image. Ground-truth boxes are green, predicted boxes red, and the
    label is the cell's title. Cells are ``cell_inches`` square (images keep their aspect ratio inside);
    the PNG is ``columns' * cell_inches * dpi`` by ``(rows * cell_inches + header) * dpi`` pixels, where
    ``columns' = min(columns, len(items))``, ``rows = ceil(len(items) / columns)`` and ``header`` is
    :data:`HEADER_INCHES` when a ``title`` or a ``legend`` (the words for the green and the red boxes) is
    drawn above the grid, else 0. Returns the path written.
    """
    if not items:
        raise ValueError("plot_example_grid needs at least one item")
    if not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    columns = min(columns, len(items))
    rows = -(-len(items) // columns)
    header = HEADER_INCHES if title or legend else 0.0
    height = rows * cell_inches + header
    fig = Figure(figsize=(columns * cell_inches, height))
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - (0.25 + header) / height,
                        wspace=0.03, hspace=0.12)
    if title:
        fig.suptitle(title, x=0.01, y=1 - 0.08 / height, ha="left", va="top", fontsize=10)
    if legend:
        handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=colour, linewidth=2)
                   for colour in (TRUE_COLOUR, PRED_COLOUR)]
        fig.legend(handles, legend, loc="upper left", bbox_to_anchor=(0.01, 1 - 0.3 / height), ncols=2,
                   fontsize=8, frameon=False)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for i, (ax, item) in enumerate(zip(axes, items)):
        if len(item) != 5:
            raise ValueError(f"items[{i}] must be (image, map or None, pred boxes, true boxes, label)")
        image, sensitivity_map, pred, true, label = item
        m = None if sensitivity_map is None else _as_map(sensitivity_map)
        _show(ax, image, m, _as_boxes(pred, f"items[{i}] pred boxes"), _as_boxes(true, f"items[{i}] true boxes"),
              linewidth=1.5)
        ax.set_title(str(label), fontsize=8)
    for ax in axes[len(items):]:
        ax.set_axis_off()
    return _save(fig, path, dpi)


__all__ = ["figure_height", "plot_example_grid", "plot_localization"]


def plot_accuracy_cost(table, path: str | PathLike[str], title: str = "", dpi: int = 100) -> Path:
    """Accuracy against cost, one point per row of a methods table (``map_method``, ``box_method``,
    ``gt_known_loc`` in %, ``x_forward``): GT-known Loc over the image → box time in forward passes (log
    scale), a colour per map method and a marker per box method. Rows without a map (cost 0) are dashed
    horizontal lines."""
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(9.0, 5.0))
    ax = fig.add_subplot()
    mapped = table[table["x_forward"] > 0]
    colours = {method: f"C{k}" for k, method in enumerate(dict.fromkeys(mapped["map_method"]))}
    markers = dict(zip(dict.fromkeys(mapped["box_method"]), "s^oDv"))
    for _, row in table[table["x_forward"] <= 0].iterrows():
        ax.axhline(row["gt_known_loc"], color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"{row['box_method']} box (no map)", (0.01, row["gt_known_loc"]), xycoords=("axes fraction", "data"),
                    va="bottom", fontsize=8, color="grey")
    for _, row in mapped.iterrows():
        ax.scatter(row["x_forward"], row["gt_known_loc"], marker=markers[row["box_method"]],
                   color=colours[row["map_method"]], s=45, edgecolors="black", linewidths=0.4)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=m) for m, c in colours.items()]
    handles += [Line2D([], [], color="grey", marker=k, linestyle="", label=f"{b} box") for b, k in markers.items()]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xscale("log")
    ax.set_xlabel("time of image → map → box, in forward passes (log)")
    ax.set_ylabel("GT-known Loc (%)")
    ax.grid(True, which="both", linewidth=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.76, bottom=0.11, top=0.92)
    return _save(fig, path, dpi)
