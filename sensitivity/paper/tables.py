"""The paper's tables beside ours: small builders from the analysis frames and the published numbers.

Published numbers live in one file, ``data/published_results.csv`` (columns ``table, method, class,
value, source``): Tables 1-4 and the §3.6 aggregation numbers of the ICLR 2019 submission "Fast Object
Localization via Sensitivity Analysis", as printed. ``class`` is a PASCAL VOC class (official names:
the paper's Table 2 header abbreviates them as areo, bike, table, mbike, plant, tv), ``Average CorLoc``
(Tables 1, 3, 4), ``MeanCL`` (Table 2's mean column), or, for §3.6, the dataset the number is about.

All CorLoc values are percentages. Each builder returns a DataFrame; :func:`markdown` renders one and
:func:`write` saves CSV + Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.evaluation import ALL, corloc_table
from sensitivity.tables import numeric_columns, to_markdown, write_table

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: Table 1's six classes (those of Tang et al. 2014).
TABLE1_CLASSES = ("aeroplane", "bicycle", "boat", "bus", "horse", "motorbike")
#: Our methods in the tables: prediction-column prefix → label.
OUR_METHODS = {"linear": "Sensitivity maps + linear map (ours)", "heuristic": "Heuristic box (ours)",
               "centre": "Centre box (ours)", "best": "Best variant (ours)"}
CENTRE_BOX_NOTE = ("does not reproduce: on genuine ILSVRC val images a mean-size centre box scores about 50 % "
                   "(most ImageNet objects are large and central)")


def published_table2(published: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as printed: ``method, MeanCL`` and the 20 classes (official VOC names), paper row order."""
    rows = published[published["table"] == "2"]
    wide = rows.pivot(index="method", columns="class", values="value")
    order = list(dict.fromkeys(rows["method"]))
    return wide.loc[order, ["MeanCL", *VOC_CLASSES]].reset_index().rename_axis(columns=None)


def per_class(predictions: pd.DataFrame, methods: Sequence[str] = tuple(OUR_METHODS)) -> pd.DataFrame:
    """Per-class CorLoc (%) of our methods from per-row ``<method>_correct`` flags, with the Average row
    (the paper's metric; the workflow table's all-images row is left out)."""
    table = corloc_table(predictions, methods)
    return table[table["class"] != ALL].reset_index(drop=True)


def table1(published: pd.DataFrame, ours: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Table 1 style: the published VOC 2007 (6 classes) Average CorLoc rows, then ours.

    ``ours``: a :func:`per_class` table; ``setting`` describes our data and network.
    """
    rows = published[published["table"] == "1"]
    out = [{"method": r.method, "Average CorLoc": r.value, "data": "PASCAL VOC 2007, 6 classes", "source": r.source}
           for r in rows.itertuples(index=False)]
    average = ours[ours["class"] == "Average"].iloc[0]
    classes = ", ".join(ours.loc[ours["class"] != "Average", "class"])
    for prefix, label in OUR_METHODS.items():
        if f"corloc_{prefix}" in ours:
            out.append({"method": label, "Average CorLoc": float(average[f"corloc_{prefix}"]),
                        "data": f"test split, {int(average['n_images'])} images ({classes})", "source": setting})
    return pd.DataFrame(out)


def table2(published: pd.DataFrame, ours: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Table 2 style: the published per-class rows (20 VOC classes, MeanCL) and ours on our classes.

    Columns: ``method, source, MeanCL, mean of classes`` (recomputed from the row's class columns, which
    checks the transcription and the paper's arithmetic), then the VOC classes, then any class of ours
    that is not a VOC class. Cells a row does not have are NaN.
    """
    printed = published_table2(published)
    printed.insert(1, "source", published[published["table"] == "2"].groupby("method", sort=False)["source"].first().values)
    our_classes = [c for c in ours["class"] if c != "Average"]
    extra = [c for c in our_classes if c not in VOC_CLASSES]
    rows = []
    for prefix, label in OUR_METHODS.items():
        if f"corloc_{prefix}" not in ours:
            continue
        values = dict(zip(ours["class"], ours[f"corloc_{prefix}"]))
        rows.append({"method": label, "source": setting, "MeanCL": values["Average"],
                     **{c: values[c] for c in our_classes}})
    table = pd.concat([printed, pd.DataFrame(rows)], ignore_index=True)
    class_columns = [*VOC_CLASSES, *extra]
    table.insert(3, "mean of classes", table[class_columns].mean(axis=1, skipna=True))
    return table[["method", "source", "MeanCL", "mean of classes", *class_columns]]


def table3(sweep: pd.DataFrame, variant: str, split: str = "test") -> pd.DataFrame:
    """Table 3 style: Average CorLoc of the heuristic box, one row per sigma, one column per kept fraction."""
    part = sweep[(sweep["variant"] == variant) & (sweep["split"] == split)]
    if part.empty:
        raise ValueError(f"no heuristic sweep rows for variant {variant!r} on {split}")
    matrix = part.pivot(index="sigma", columns="fraction", values="corloc").sort_index()
    matrix.columns = [f"top {100 * f:g}%" for f in matrix.columns]
    return matrix.reset_index().rename(columns={"sigma": "sigma (input px)"}).rename_axis(columns=None)


def published_table3(published: pd.DataFrame) -> pd.DataFrame:
    rows = published[published["table"] == "3"]
    return rows[["method", "value", "source"]].rename(columns={"value": "Average CorLoc"}).reset_index(drop=True)


def table4(published: pd.DataFrame, ours: pd.DataFrame, setting: str) -> pd.DataFrame:
    """Table 4 style: centre box vs heuristic vs learned map, published (ImageNet, 478 classes) and ours."""
    rows = published[published["table"] == "4"]
    out = [{"method": r.method, "Average CorLoc": r.value, "data": "ImageNet, 478 classes", "source": r.source,
            "note": CENTRE_BOX_NOTE if "Center Box" in r.method else ""}
           for r in rows.itertuples(index=False)]
    average = ours[ours["class"] == "Average"].iloc[0]
    for prefix in ("centre", "heuristic", "linear", "best"):
        if f"corloc_{prefix}" in ours:
            out.append({"method": OUR_METHODS[prefix], "Average CorLoc": float(average[f"corloc_{prefix}"]),
                        "data": f"test split, {int(average['n_images'])} images", "source": setting, "note": ""})
    return pd.DataFrame(out)


def aggregation_table(variants: pd.DataFrame, published: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """§3.6: the linear map on each target × aggregation (chosen on val), beside the paper's numbers.

    The paper's ImageNet numbers are class-score maps, its VOC numbers Gestalt maps.
    """
    part = variants[(variants["family"] == "map variant (§3.6)") & (variants["seed"] == seed)]
    paper = published[published["table"] == "3.6"]
    printed = {("class", "mean"): ("ImageNet", "mean"), ("class", "max"): ("ImageNet", "max"),
               ("gestalt", "max"): ("PASCAL VOC 2007", "max"), ("gestalt", "mean"): ("PASCAL VOC 2007", "mean")}
    out = []
    for row in part.itertuples(index=False):
        target, aggregate = row.variant.rsplit(", ", 1)[1].split("_")
        dataset, agg = printed[(target, aggregate)]
        match = paper[(paper["class"] == dataset) & paper["method"].str.endswith(f"{agg} aggregation")]
        out.append({"target": target, "aggregate": aggregate, "val CorLoc": row.val_corloc,
                    "test CorLoc": row.test_corloc,
                    "published CorLoc": float(match["value"].iloc[0]) if len(match) else np.nan,
                    "published on": dataset, "chosen (on val)": row.params})
    return pd.DataFrame(out)


def mean_std(values: pd.Series) -> str:
    values = values.dropna()
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}" if len(values) > 1 else f"{values.mean():.1f}"


def variants_table(variants: pd.DataFrame, first_seed: int = 0) -> pd.DataFrame:
    """Every variant: the first seed's choice, val and test CorLoc, and test mean ± std over all seeds;
    with protocol B columns (``cv_*``), also the cross-validated choice's test mean ± std."""
    first = variants[variants["seed"] == first_seed].set_index("variant", drop=False)
    groups = variants.groupby("variant", sort=False)
    out = first[["family", "variant", "backward_passes", "params", "val_corloc", "test_corloc"]].copy()
    out["best on val"] = np.where(first["chosen"].astype(bool), "◀", "")
    out["test mean ± std (seeds)"] = [mean_std(groups.get_group(v)["test_corloc"]) for v in out["variant"]]
    out["times best on val"] = [int(groups.get_group(v)["chosen"].astype(bool).sum()) for v in out["variant"]]
    if "cv_test_corloc" in variants:
        has_cv = [groups.get_group(v)["cv_test_corloc"].notna().any() for v in out["variant"]]
        out["CV-chosen test mean ± std"] = [mean_std(groups.get_group(v)["cv_test_corloc"]) if h else ""
                                            for v, h in zip(out["variant"], has_cv)]
        out["times best by CV"] = [int(groups.get_group(v)["cv_chosen"].fillna(False).astype(bool).sum())
                                   for v in out["variant"]]
    return out.rename(columns={"val_corloc": f"val (seed {first_seed})", "test_corloc": f"test (seed {first_seed})",
                               "params": f"chosen on val (seed {first_seed})",
                               "backward_passes": "backward passes"}).reset_index(drop=True)


def seeds_table(seeds: pd.DataFrame) -> pd.DataFrame:
    """Headline methods: test CorLoc per split seed, mean ± std, and the val mean."""
    wide = seeds.pivot(index="method", columns="seed", values="test_corloc")
    order = list(dict.fromkeys(seeds["method"]))
    wide = wide.loc[order]
    wide.columns = [f"seed {s}" for s in wide.columns]
    out = wide.reset_index().rename_axis(columns=None)
    grouped = seeds.groupby("method", sort=False)
    out["test mean"] = [grouped.get_group(m)["test_corloc"].mean() for m in order]
    out["test std"] = [grouped.get_group(m)["test_corloc"].std(ddof=1) for m in order]
    out["val mean"] = [grouped.get_group(m)["val_corloc"].mean() for m in order]
    out["chosen variants"] = ["; ".join(f"{k}×{v}" for k, v in grouped.get_group(m)["variant"].value_counts().items())
                              for m in order]
    return out


def markdown(table: pd.DataFrame, title: str = "", digits: int = 1, note: str = "") -> str:
    """The paper tables' Markdown: third-level heading, numbers right-aligned and text left."""
    return to_markdown(table, title, digits, note, level=3, right=numeric_columns(table))


def write(table: pd.DataFrame, csv_path: str | Path, md_path: str | Path, title: str = "", digits: int = 1,
          note: str = "") -> None:
    """Save ``table`` as CSV (four decimals) and as :func:`markdown`."""
    write_table(table, csv_path, md_path, title, note, digits=digits, level=3, right=numeric_columns(table))


def counts_table(rows: pd.DataFrame, splits: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Images per class and split (the given seed's split column of ``splits``), with totals."""
    assignment = rows["image_id"].map(splits.set_index("image_id")[f"seed{seed}"])
    table = pd.crosstab(rows["label"], assignment).reindex(columns=["train", "val", "test"], fill_value=0)
    table["total"] = table.sum(axis=1)
    table.loc["all"] = table.sum()
    out = table.reset_index().rename(columns={"label": "class"}).rename_axis(columns=None)
    return out
