"""The paper's figures on our data: Figure 1 (images and their sensitivity maps) and Figures 3/4 (test
examples per class, ground truth green, prediction red), drawn with :mod:`sensitivity.figures`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.figures import plot_example_grid
from sensitivity.images import read_image
from sensitivity.paper.bank import MAP_VARIANTS
from sensitivity.store import iter_maps

MAX_SIDE = 400  # images are decoded at most this large: the cells are small


def choose_per_class(predictions: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """``per_class`` seeded random rows of each class (as many as all classes have), class by class."""
    n = min(per_class, int(predictions.groupby("label").size().min()))
    shuffled = predictions.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=True).head(n).sort_values(["label", "image_id"], kind="stable")


def _box(row, method: str) -> np.ndarray:
    return np.array([[getattr(row, f"{method}_{c}") for c in ("x1", "y1", "x2", "y2")]])


def examples_figure(predictions: pd.DataFrame, method: str, path: str | Path, per_class: int = 6, seed: int = 0,
                    dpi: int = 60) -> Path:
    """Figures 3/4: one row per class of test images, ground truth green, ``method``'s box red."""
    chosen = choose_per_class(predictions, per_class, seed)
    items = []
    for row in chosen.itertuples(index=False):
        verdict = "✓" if getattr(row, f"{method}_correct") else "✗"
        items.append((read_image(row.path, max_side=MAX_SIDE), None, _box(row, method),
                      np.asarray(json.loads(row.boxes)), f"{row.label} IoU {getattr(row, f'{method}_iou'):.2f} {verdict}"))
    columns = len(chosen) // chosen["label"].nunique()
    return plot_example_grid(items, path, columns=columns, cell_inches=2.2, dpi=dpi)


def read_selected_maps(stores: Sequence[str | Path], image_ids: Sequence[str]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for ids, maps in iter_maps(stores, set(image_ids)):
        found.update(zip(ids.tolist(), maps))
    return found


def maps_figure(predictions: pd.DataFrame, stores: Mapping[str, Sequence[str | Path]], path: str | Path,
                examples: int = 6, seed: int = 0, dpi: int = 60, variants: Sequence[str] = MAP_VARIANTS) -> Path:
    """Figure 1: each row an image, then its sensitivity map for each target × aggregation."""
    rows = predictions.drop_duplicates("image_id").sample(n=min(examples, predictions["image_id"].nunique()),
                                                          random_state=seed).sort_values(["label", "image_id"])
    maps = {v: read_selected_maps(stores[v], rows["image_id"].tolist()) for v in variants}
    items = []
    for row in rows.itertuples(index=False):
        image = read_image(row.path, max_side=MAX_SIDE)
        items.append((image, None, None, None, f"{row.label} {row.image_id.rsplit('/', 1)[-1]}"))
        for v in variants:
            items.append((image, maps[v][row.image_id], None, None, v.replace("_", " / ")))
    return plot_example_grid(items, path, columns=1 + len(variants), cell_inches=2.2, dpi=dpi)


def compact_png(path: str | Path, colours: int = 256) -> Path:
    """Re-save a PNG with a ``colours``-colour palette (figures are committed under docs/figures/)."""
    from PIL import Image

    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette.save(path, optimize=True)
    return Path(path)


def paper_figures(predictions_path: str | Path, stores: Mapping[str, Sequence[str | Path]], summary_path: str | Path,
                  outputs: Sequence[str | Path], per_class: int = 6, map_examples: int = 6, dpi: int = 60,
                  seed: int = 0) -> list[Path]:
    """Write ``outputs`` = (maps figure, linear-map examples, best-variant examples)."""
    predictions = pd.read_csv(predictions_path, dtype={"image_id": str, "label": str})
    maps_path, linear_path, best_path = outputs
    written = [maps_figure(predictions, stores, maps_path, map_examples, seed, dpi),
               examples_figure(predictions, "linear", linear_path, per_class, seed, dpi),
               examples_figure(predictions, "best", best_path, per_class, seed, dpi)]
    return [compact_png(path) for path in written]
