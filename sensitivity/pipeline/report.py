"""Stage 6: example figures for the report (ground truth green, learned-map prediction red)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.figures import plot_example_grid
from sensitivity.images import read_image


def choose_examples(predictions: pd.DataFrame, per_class: int, seed: int, max_classes: int | None = None
                    ) -> pd.DataFrame:
    """Up to ``per_class`` seeded random test rows per class, in class order; from at most ``max_classes``
    seeded random classes (all when None), so that the figure's size does not grow with the dataset's."""
    labels = np.sort(predictions["label"].unique())
    if max_classes is not None and len(labels) > max_classes:
        labels = np.sort(np.random.default_rng(seed).choice(labels, size=max_classes, replace=False))
    shuffled = predictions.sample(frac=1.0, random_state=seed)
    shuffled = shuffled[shuffled["label"].isin(labels)]
    return shuffled.groupby("label", sort=True).head(per_class).sort_values(["label", "image_id"])


def example_figure(predictions_path: str | Path, figure_path: str | Path, per_class: int = 4, seed: int = 0,
                   max_classes: int | None = None, title: str = "") -> Path:
    """Grid of test images with their true boxes (green) and the regression's box (red), from at most
    ``max_classes`` classes, under ``title`` and a legend saying which is which."""
    predictions = pd.read_csv(predictions_path, dtype={"image_id": str, "label": str})
    items = []
    for row in choose_examples(predictions, per_class, seed, max_classes).itertuples(index=False):
        predicted = np.array([[row.regression_x1, row.regression_y1, row.regression_x2, row.regression_y2]])
        true = np.asarray(json.loads(row.boxes))
        verdict = "✓" if row.regression_correct else "✗"
        items.append((read_image(row.path, max_side=512), None, predicted, true,
                      f"{row.label} IoU {row.regression_iou:.2f} {verdict}"))
    return plot_example_grid(items, figure_path, columns=per_class, title=title,
                             legend=("true box", "learned box (prediction)"))
