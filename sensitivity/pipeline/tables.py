"""CorLoc tables: per class, the paper's "Average CorLoc" (unweighted mean over classes) and the CorLoc
over all rows, in %."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

AVERAGE = "Average"
ALL = "All images"


def corloc_table(predictions: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``class, n_images, corloc_<method>...`` (percent) from per-row ``<method>_correct`` flags.

    After the classes come ``Average`` (the unweighted mean over classes, the paper's metric) and
    ``All images`` (the share over all (image, class) rows, i.e. over images when each has one class).
    """
    grouped = predictions.groupby("label", sort=True)
    table = pd.DataFrame({"class": list(grouped.groups), "n_images": grouped.size().to_numpy()})
    for method in methods:
        table[f"corloc_{method}"] = 100.0 * grouped[f"{method}_correct"].mean().to_numpy()
    average = {"class": AVERAGE, "n_images": int(table["n_images"].sum())}
    average |= {f"corloc_{m}": table[f"corloc_{m}"].mean() for m in methods}
    overall = {"class": ALL, "n_images": len(predictions)}
    overall |= {f"corloc_{m}": 100.0 * predictions[f"{m}_correct"].mean() for m in methods}
    return pd.concat([table, pd.DataFrame([average, overall])], ignore_index=True)


def to_markdown(table: pd.DataFrame, title: str = "") -> str:
    """A GitHub Markdown table (numbers with two decimals, the first column left-aligned), optionally under a
    heading."""
    header = "| " + " | ".join(table.columns) + " |"
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"
    lines = [header, rule]
    for row in table.itertuples(index=False):
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row]
        if row[0] in (AVERAGE, ALL):
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return (f"## {title}\n\n" if title else "") + "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str = "",
                note: str = "") -> None:
    """The table as CSV and as Markdown (with an optional note under it)."""
    table.to_csv(csv_path, index=False, float_format="%.4f")
    Path(md_path).write_text(to_markdown(table, title) + (f"\n{note}\n" if note else ""))


def read_published(path: str | Path) -> pd.DataFrame:
    """The published numbers, ``value`` as float and ``table`` as a string ("1", "2", "3", "4", "3.6")."""
    frame = pd.read_csv(path, dtype={"table": str, "method": str, "class": str, "source": str})
    expected = ["table", "method", "class", "value", "source"]
    if list(frame.columns) != expected:
        raise ValueError(f"{path}: columns {list(frame.columns)}, expected {expected}")
    frame["value"] = frame["value"].astype(float)
    return frame
