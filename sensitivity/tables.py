"""Tables for reading: one Markdown and HTML renderer, CSV + Markdown writing, CorLoc with Wilson intervals,
and the published numbers. The tables themselves come from :mod:`sensitivity.evaluation` and the stages."""

from __future__ import annotations

import html
import math
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.evaluation import ALL, AVERAGE


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95 % for the default ``z``) of a binomial proportion, in percent."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def corloc_display(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """A :func:`corloc_table` for reading: CorLoc in % with one decimal and, where it is a share of images
    (each class and ``All images``, not the mean over classes), its Wilson 95 % interval in brackets.
    ``names`` maps each method to its column title."""
    shown = pd.DataFrame({"class": table["class"], "test images": table["n_images"].astype(int)})
    for method, name in names.items():
        cells = []
        for label, n, value in zip(table["class"], table["n_images"], table[f"corloc_{method}"]):
            if label == AVERAGE:
                cells.append(f"{value:.1f}")
            else:
                low, high = wilson_interval(round(value * n / 100), int(n))
                cells.append(f"{value:.1f} [{low:.1f}, {high:.1f}]")
        shown[f"{name}, %"] = cells
    return shown


def small_count_note(table: pd.DataFrame) -> str:
    """What the class sizes mean for the precision of the table (always the interval; the step per image when
    a class has fewer than 30 test images)."""
    note = "CorLoc in % of the test images; in brackets the Wilson 95 % interval"
    classes = table[~table["class"].isin([AVERAGE, ALL])]
    smallest = classes.loc[classes["n_images"].idxmin()] if len(classes) else None
    if smallest is None or smallest["n_images"] >= 30:
        return note + "."
    return (note + f". Few test images: one image moves a class's CorLoc by 100/n points "
            f"({100 / smallest['n_images']:.1f} for {smallest['class']}'s {int(smallest['n_images'])}), so "
            "differences inside the intervals may be chance.")


def _cell(value: object, digits: int) -> str:
    """A value as text: floats with ``digits`` decimals, NaN and None empty."""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.{digits}f}"
    return "" if value is None else str(value)


def _cells(table: pd.DataFrame, digits: int = 2) -> list[list[str]]:
    return [[_cell(v, digits) for v in row] for row in table.itertuples(index=False)]


def numeric_columns(table: pd.DataFrame) -> list[str]:
    """The columns of numbers (to align right when text columns stand between them)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]


def to_markdown(table: pd.DataFrame, title: str = "", digits: int = 2, note: str = "", level: int = 2,
                right: Collection[str] | None = None) -> str:
    """A GitHub Markdown table under an optional heading of ``level`` and above an optional note.

    Floats get ``digits`` decimals (NaN is empty); the ``right`` columns are right-aligned (by default all but
    the first); the ``Average`` and ``All images`` rows are bold.
    """
    right = set(table.columns[1:] if right is None else right)
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "|".join("---:" if c in right else "---" for c in table.columns) + "|"
    lines = [header, rule]
    for cells in _cells(table, digits):
        cells = [c.replace("|", "\\|") for c in cells]
        if cells and cells[0] in (AVERAGE, ALL):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    text = (f"{'#' * level} {title}\n\n" if title else "") + "\n".join(lines) + "\n"
    return text + (f"\n{note}\n" if note else "")


def to_html(table: pd.DataFrame, title: str = "", note: str = "") -> str:
    """The same table as an HTML fragment (for the Snakemake report, as a result and on its landing page): inline
    styles only, ASCII with character references, the note's paragraphs under the table."""
    cell = "padding:2px 8px;border-bottom:1px solid #ccc;text-align:{}"
    head = "".join(f'<th style="{cell.format("left" if i == 0 else "right")}">{html.escape(str(c))}</th>'
                   for i, c in enumerate(table.columns))
    body = []
    for cells in _cells(table):
        tag = "th" if cells[0] in (AVERAGE, ALL) else "td"
        body.append("<tr>" + "".join(f'<{tag} style="{cell.format("left" if i == 0 else "right")}">'
                                     f"{html.escape(c)}</{tag}>" for i, c in enumerate(cells)) + "</tr>")
    paragraphs = "".join(f"<p>{html.escape(p.strip())}</p>\n" for p in note.split("\n\n") if p.strip())
    heading = f"<h3>{html.escape(title)}</h3>\n" if title else ""
    text = (f'<div style="font-family:sans-serif">\n{heading}<table style="border-collapse:collapse">\n'
            f"<tr>{head}</tr>\n" + "\n".join(body) + f"\n</table>\n{paragraphs}</div>\n")
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")


def write_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str = "",
                note: str = "", shown: pd.DataFrame | None = None, html_path: str | Path | None = None,
                **style) -> None:
    """The table as CSV (four decimals) and, as ``shown`` (by default the table itself), as Markdown and
    optionally HTML, with an optional note under it; ``style``: :func:`to_markdown`'s digits, level, right."""
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False, float_format="%.4f")
    shown = table if shown is None else shown
    Path(md_path).write_text(to_markdown(shown, title, note=note, **style))
    if html_path is not None:
        Path(html_path).write_text(to_html(shown, title, note))


def read_published(path: str | Path) -> pd.DataFrame:
    """The published numbers, ``value`` as float and ``table`` as a string ("1", "2", "3", "4", "3.6")."""
    frame = pd.read_csv(path, dtype={"table": str, "method": str, "class": str, "source": str})
    expected = ["table", "method", "class", "value", "source"]
    if list(frame.columns) != expected:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {expected}")
    frame["value"] = frame["value"].astype(float)
    return frame
