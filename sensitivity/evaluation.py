"""Scoring boxes on labelled rows, for the workflow's stages and the paper's study alike.

A labelled row is one (image, class) of a manifest with its ground-truth boxes ``gt`` (k, 4) and the
regression target ``target_box`` (the largest of them). A predicted box is correct when its best IoU with
the row's boxes is above the threshold (PASCAL criterion). CorLoc tables give each class's share correct,
then ``Average`` (the unweighted mean over classes, the paper's "Average CorLoc") and ``All images`` (the
share over all rows), in %. One rule chooses among candidates: the highest score, ties going to the higher
tie-break score (mean IoU where the caller has it), then to the earlier candidate; one rule makes the folds of
cross-validation (:func:`image_folds`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from sensitivity.boxes import largest_box
from sensitivity.datasets import read_manifest, read_split
from sensitivity.metrics import fixed_box_ious

AVERAGE = "Average"
ALL = "All images"
COORDINATES = ("x1", "y1", "x2", "y2")
#: The manifest columns a prediction table keeps of each row.
ROW_COLUMNS = ("image_id", "label", "path", "width", "height", "boxes")


def labelled_rows(manifest_path: str | Path, split_path: str | Path | None = None) -> pd.DataFrame:
    """The manifest's rows :func:`with_boxes` and, given a split file, their ``split``."""
    rows = read_manifest(manifest_path)
    if split_path is not None:
        rows["split"] = rows["image_id"].map(read_split(split_path))
        if rows["split"].isna().any():
            missing = rows.loc[rows["split"].isna(), "image_id"].iloc[0]
            raise ValueError(f"{split_path}: image {missing!r} has no split")
    return with_boxes(rows)


def with_boxes(manifest: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows with ``gt`` (k, 4) arrays and ``target_box`` (the largest box, regressed)."""
    manifest["gt"] = [np.asarray(json.loads(b), dtype=np.float64) for b in manifest["boxes"]]
    manifest["target_box"] = [largest_box(gt) for gt in manifest["gt"]]
    return manifest


def prediction_columns(rows: pd.DataFrame, boxes: Mapping[str, np.ndarray], threshold: float | None,
                       keep: Sequence[str] = ROW_COLUMNS) -> pd.DataFrame:
    """``keep`` columns of ``rows`` (index kept), then per method ``<method>_x1 .. _y2``, ``_iou`` (best IoU
    with the row's ``gt`` boxes) and, unless ``threshold`` is None, ``_correct`` (IoU > ``threshold``);
    ``boxes`` maps a method to its (len(rows), 4) boxes."""
    out = rows[list(keep)].copy()
    gt = list(rows["gt"])
    for method, predicted in boxes.items():
        for k, coordinate in enumerate(COORDINATES):
            out[f"{method}_{coordinate}"] = predicted[:, k]
        out[f"{method}_iou"] = fixed_box_ious(predicted, gt)
        if threshold is not None:
            out[f"{method}_correct"] = out[f"{method}_iou"] > threshold
    return out


def corloc_table(predictions: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """``class, n_images, corloc_<method>...`` (percent) from per-row ``label`` and ``<method>_correct``.

    After the classes (sorted) come ``Average`` (the unweighted mean over classes, the paper's metric) and
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


def average_corloc(correct: np.ndarray, labels: Sequence[str]) -> float:
    """The ``Average`` of :func:`corloc_table` for one method's per-row correctness (%); NaN without rows."""
    if len(correct) == 0:
        return float("nan")
    frame = pd.DataFrame({"label": np.asarray(labels), "m_correct": np.asarray(correct, dtype=bool)})
    return float(corloc_table(frame, ["m"]).set_index("class").loc[AVERAGE, "corloc_m"])


@dataclass
class Scores:
    """Boxes of some rows, their best IoU and correctness, and the summary numbers."""

    boxes: np.ndarray
    iou: np.ndarray
    correct: np.ndarray
    corloc: float  # Average CorLoc, %
    micro: float  # share of rows correct (what candidates are chosen by)
    mean_iou: float


def score_boxes(boxes: np.ndarray, rows: pd.DataFrame, threshold: float) -> Scores:
    """Score (len(rows), 4) ``boxes`` against the rows' ``gt`` boxes; ``label`` groups the Average CorLoc."""
    iou = fixed_box_ious(boxes, list(rows["gt"])) if len(rows) else np.empty(0)
    correct = iou > threshold
    return Scores(boxes, iou, correct, average_corloc(correct, rows["label"]),
                  float(correct.mean()) if len(correct) else float("nan"),
                  float(iou.mean()) if len(iou) else float("nan"))


def ranking(scores: Sequence[float], tie_break: Sequence[float] | None = None) -> list[int]:
    """Candidate indices, best first: higher score, ties → higher ``tie_break`` (if given) → earlier."""
    second = tie_break if tie_break is not None else [0.0] * len(scores)
    if len(second) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(second)} tie-break scores")
    return sorted(range(len(scores)), key=lambda i: (scores[i], second[i], -i), reverse=True)


def choose(scores: Sequence[float], tie_break: Sequence[float] | None = None) -> int:
    """Index of the best candidate by :func:`ranking`, the one choice rule of the fit stage and the study."""
    if len(scores) == 0:
        raise ValueError("no candidate to choose from")
    return ranking(scores, tie_break)[0]


def ranked(scores: Sequence[Scores]) -> list[int]:
    """:func:`ranking` of scored candidates: share of rows correct, ties → mean IoU → earlier."""
    return ranking([s.micro for s in scores], [s.mean_iou for s in scores])


def image_folds(rows: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Fold (0..folds-1) of each row: every row of an image in one fold, classes spread over the folds
    (scikit-learn's ``StratifiedGroupKFold``, shuffled with ``seed``)."""
    n_images = rows["image_id"].nunique()
    if not 2 <= folds <= n_images:
        raise ValueError(f"cross-validation needs 2 <= folds <= {n_images} images, got folds={folds}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    # stratified where possible: when no class has `folds` rows, scikit-learn refuses, and the folds only group
    labels = rows["label"] if rows["label"].value_counts().max() >= folds else np.zeros(len(rows))
    fold = np.empty(len(rows), dtype=np.int64)
    with warnings.catch_warnings():  # classes with fewer images than folds cannot be in every fold
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, held_out) in enumerate(splitter.split(rows, labels, groups=rows["image_id"])):
            fold[held_out] = k
    return fold
