"""Stage 4: fit the map → box regression on train maps, choosing hyper-parameters on val only."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from sensitivity.boxes import correct_localizations
from sensitivity.pipeline.rows import RowMaps, labelled_rows
from sensitivity.regress import BoxRegressor
from sensitivity.store import map_provenance


def candidate_settings(grid: dict) -> list[dict]:
    """BoxRegressor settings of every grid point but alpha, in grid order. ``pool`` and ``normalize`` only
    apply to ``features: pooled``; ``shape`` features get one setting per box parameterisation."""
    settings = []
    for features in grid.get("features", ["pooled"]):
        if features == "pooled":
            settings += [{"features": features, "pool": pool, "normalize": normalize, "target": parameterisation}
                         for pool, normalize, parameterisation in itertools.product(
                             grid["pool"], grid["normalize"], grid["parameterisation"])]
        else:
            settings += [{"features": features, "target": parameterisation} for parameterisation in grid["parameterisation"]]
    return settings


def candidate_models(grid: dict, solver: str, sgd: dict, train: RowMaps) -> list[BoxRegressor]:
    """Fit every grid point; ridge alphas share one pass over the train maps per setting."""
    if solver != "ridge" and "shape" in grid.get("features", []):
        raise ValueError("regression.grid.features 'shape' needs regression.solver 'ridge'")
    fitted = []
    for setting in candidate_settings(grid):
        base = BoxRegressor(solver=solver, **setting, **sgd)
        if solver == "ridge":
            fitted.extend(base.fit_alpha_path(train.boxes(), grid["alpha"]))
        else:
            fitted.append(base.fit_batches(train.boxes()))
    return fitted


def validation_corloc(models: list[BoxRegressor], val: RowMaps, threshold: float) -> np.ndarray:
    """CorLoc of each model on the val rows, from one pass over the val maps (features computed once per
    feature setting)."""
    correct = np.zeros(len(models))
    count = 0
    for block, maps in val:
        features: dict[tuple, np.ndarray] = {}
        for k, model in enumerate(models):
            key = model.feature_settings()
            if key not in features:
                features[key] = model.transform_features(maps)
            boxes = model.predict_features(features[key])
            correct[k] += correct_localizations(boxes, list(block["gt"]), threshold).sum()
        count += len(block)
    if count == 0:
        raise ValueError("the val split has no image with a map; cannot choose hyper-parameters")
    return correct / count


def fit_regressor(manifest_path: str | Path, split_path: str | Path, stores: list[str], model_path: str | Path,
                  summary_path: str | Path, grid: dict, solver: str = "ridge", sgd: dict | None = None,
                  iou_threshold: float = 0.5, batch_size: int = 1024, train_split: str = "train",
                  val_split: str = "val") -> BoxRegressor:
    """Fit all candidates on train, keep the best on val (ties: first in grid order), save it and a summary.

    ``train_split`` / ``val_split`` name the splits used for fitting and choosing: ``"test"`` for both is the
    ``fit_on_test`` plumbing mode of test-only samples (the summary records it).
    """
    rows = labelled_rows(manifest_path, split_path)
    if not (rows["split"] == train_split).any():
        raise ValueError(f"{split_path}: the {train_split} split has no image; cannot fit a box model")
    provenance = map_provenance(stores)
    # Shape features also describe the Grad-CAM maps, where the map method stored them.
    has_attention = provenance.pop("attention")
    attention = "shape" in grid.get("features", []) and has_attention
    train = RowMaps(stores, rows[rows["split"] == train_split], batch_size, attention)
    val = RowMaps(stores, rows[rows["split"] == val_split], batch_size, attention)
    models = candidate_models(grid, solver, sgd or {}, train)
    scores = validation_corloc(models, val, iou_threshold)
    best = models[int(np.argmax(scores))]
    best.provenance_ = provenance
    summary = {
        "chosen": model_settings(best) | {"solver": solver},
        "val_corloc": float(scores.max()),
        "n_train_rows": int(best.n_samples_seen_),
        "n_val_rows": int((rows["split"] == val_split).sum()),
        "fitted_on": train_split,
        "chosen_on": val_split,
        "candidates": [model_settings(m) | {"val_corloc": float(s)} for m, s in zip(models, scores)],
    }
    # The summary first, the model last, each written aside and renamed into place: a fit killed at any
    # point leaves no half-written file, and a model at its final path always ends a finished fit.
    publish(summary_path, lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
    publish(model_path, best.save)
    return best


def model_settings(model: BoxRegressor) -> dict:
    """The grid settings of a candidate; ``pool`` and ``normalize`` are null for shape features (unused)."""
    params = model.get_params()
    settings = {key: params[key] for key in ("features", "alpha", "pool", "normalize", "target")}
    return settings | ({"pool": None, "normalize": None} if params["features"] == "shape" else {})


def publish(path: str | Path, write) -> None:
    """``write(<path>.partial)``, then rename it to ``path`` (atomic on one file system)."""
    partial = Path(f"{path}.partial")
    write(partial)
    partial.replace(path)
