"""Stage 4: fit the map → box regression on train maps, choosing hyper-parameters on val only."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from sensitivity.boxes import correct_localizations
from sensitivity.pipeline.rows import RowMaps, labelled_rows
from sensitivity.regress import BoxRegressor


def candidate_models(grid: dict, solver: str, sgd: dict, train: RowMaps) -> list[BoxRegressor]:
    """Fit every grid point; ridge alphas share one pass over the train maps per (pool, normalize, box)."""
    fitted = []
    for pool, normalize, parameterisation in itertools.product(grid["pool"], grid["normalize"],
                                                               grid["parameterisation"]):
        base = BoxRegressor(solver=solver, pool=pool, normalize=normalize, target=parameterisation, **sgd)
        if solver == "ridge":
            fitted.extend(base.fit_alpha_path(train.boxes(), grid["alpha"]))
        else:
            fitted.append(base.fit_batches(train.boxes()))
    return fitted


def validation_corloc(models: list[BoxRegressor], val: RowMaps, threshold: float) -> np.ndarray:
    """CorLoc of each model on the val rows, from one pass over the val maps."""
    correct = np.zeros(len(models))
    count = 0
    for block, maps in val:
        for k, model in enumerate(models):
            correct[k] += correct_localizations(model.predict(maps), list(block["gt"]), threshold).sum()
        count += len(block)
    if count == 0:
        raise ValueError("the val split has no image with a map; cannot choose hyper-parameters")
    return correct / count


def fit_regressor(manifest_path: str | Path, split_path: str | Path, stores: list[str], model_path: str | Path,
                  summary_path: str | Path, grid: dict, solver: str = "ridge", sgd: dict | None = None,
                  iou_threshold: float = 0.5, batch_size: int = 1024) -> BoxRegressor:
    """Fit all candidates on train, keep the best on val (ties: first in grid order), save it and a summary."""
    rows = labelled_rows(manifest_path, split_path)
    train = RowMaps(stores, rows[rows["split"] == "train"], batch_size)
    val = RowMaps(stores, rows[rows["split"] == "val"], batch_size)
    models = candidate_models(grid, solver, sgd or {}, train)
    scores = validation_corloc(models, val, iou_threshold)
    best = models[int(np.argmax(scores))]
    keys = ("alpha", "pool", "normalize", "target")
    summary = {
        "chosen": {key: best.get_params()[key] for key in keys} | {"solver": solver},
        "val_corloc": float(scores.max()),
        "n_train_rows": int(best.n_samples_seen_),
        "n_val_rows": int((rows["split"] == "val").sum()),
        "candidates": [{key: m.get_params()[key] for key in keys} | {"val_corloc": float(s)}
                       for m, s in zip(models, scores)],
    }
    # The summary first, the model last, each written aside and renamed into place: a fit killed at any
    # point leaves no half-written file, and a model at its final path always ends a finished fit.
    publish(summary_path, lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
    publish(model_path, best.save)
    return best


def publish(path: str | Path, write) -> None:
    """``write(<path>.partial)``, then rename it to ``path`` (atomic on one file system)."""
    partial = Path(f"{path}.partial")
    write(partial)
    partial.replace(path)
