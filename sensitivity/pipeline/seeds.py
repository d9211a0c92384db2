"""How the test scores vary with the split seed: the split, fit and evaluate (or compare) stages rerun per seed
on the same maps (maps do not depend on the split)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.box_model import BoxModel
from sensitivity.evaluation import ALL, AVERAGE
from sensitivity.pipeline.evaluate import METHODS, evaluate
from sensitivity.pipeline.fit import DEFAULT_ENSEMBLE, fit_regressor
from sensitivity.pipeline.methods import centre_scores, in_method_order, score_method
from sensitivity.pipeline.split import make_split
from sensitivity.regress import BoxRegressor
from sensitivity.tables import to_markdown


def refit(manifest_path: str | Path, split_path: Path, stores: Sequence[str | Path], stem: Path, regression: dict,
          evaluation: dict) -> BoxModel:
    """The fit stage on another split: ``<stem>.npz`` and its summary ``<stem>.json``."""
    return fit_regressor(manifest_path, split_path, list(stores), stem.with_suffix(".npz"), stem.with_suffix(".json"),
                         grid=regression["grid"], solver=regression["solver"],
                         sgd=regression["sgd"] if regression["solver"] == "sgd" else None,
                         iou_threshold=evaluation["iou_threshold"], selection=regression.get("selection"),
                         prior=regression.get("prior"), ensemble=regression.get("ensemble", DEFAULT_ENSEMBLE))


def seed_splits(manifest_path: str | Path, fractions: Sequence[float], seeds: Sequence[int]) -> Iterator[tuple[int, Path]]:
    """For each seed, a scratch folder holding that seed's ``split.csv`` (removed after the last seed)."""
    with tempfile.TemporaryDirectory(prefix="seeds-") as scratch:
        for seed in seeds:
            folder = Path(scratch) / str(seed)
            folder.mkdir()
            make_split(manifest_path, folder / "split.csv", list(fractions), seed)
            yield seed, folder


def seed_study(manifest_path: str | Path, stores: Sequence[str | Path], fractions: Sequence[float],
               seeds: Sequence[int], regression: dict, evaluation: dict, table_csv: str | Path,
               table_md: str | Path, title: str = "") -> pd.DataFrame:
    """One row per seed (and ``mean`` / ``std`` rows): Average CorLoc and all-images CorLoc of every method
    on that seed's test split, with the box model chosen on that seed's val split, as the workflow does."""
    heuristic = evaluation["heuristic"]
    rows = []
    for seed, folder in seed_splits(manifest_path, fractions, seeds):
        model = refit(manifest_path, folder / "split.csv", stores, folder / "regressor", regression, evaluation)
        table = evaluate(manifest_path, folder / "split.csv", list(stores), folder / "regressor.npz",
                         folder / "predictions.csv", folder / "corloc.csv", folder / "corloc.md",
                         sigma=heuristic["sigma"], fraction=heuristic["fraction"],
                         iou_threshold=evaluation["iou_threshold"]).set_index("class")
        kind = model.features if isinstance(model, BoxRegressor) else "ensemble"
        row = {"seed": str(seed), "n_test": int(table.loc[ALL, "n_images"]), "box_model": kind}
        for method in METHODS:
            row[f"average_{method}"] = table.loc[AVERAGE, f"corloc_{method}"]
            row[f"all_{method}"] = table.loc[ALL, f"corloc_{method}"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    numbers = [c for c in frame.columns if c.startswith(("average_", "all_"))]
    summary = [{"seed": name, **getattr(frame[numbers], name)().to_dict()} for name in ("mean", "std")]
    frame = pd.concat([frame, pd.DataFrame(summary)], ignore_index=True)
    frame.to_csv(table_csv, index=False, float_format="%.4f")
    shown = frame.assign(n_test=[str(int(n)) if pd.notna(n) else "" for n in frame["n_test"]],
                         box_model=frame["box_model"].fillna(""))
    Path(table_md).write_text(to_markdown(shown, title) + "\naverage_*: mean over classes (the paper's Average "
                              "CorLoc); all_*: over all test images. box_model: the regression's features, chosen "
                              "on that seed's val split.\n")
    return frame


def methods_seed_study(manifest_path: str | Path, method_stores: dict[str, Sequence[str | Path]],
                       fractions: Sequence[float], seeds: Sequence[int], regression: dict, evaluation: dict,
                       comparison: dict, table_csv: str | Path, table_md: str | Path,
                       synset_mapping: str | Path | None = None, title: str = "") -> pd.DataFrame:
    """The comparison's accuracies per split seed: for each seed the split, each map method's box model
    (fitted on train, chosen on val) and its scores (:func:`~sensitivity.pipeline.methods.score_method`) again,
    on the same maps; the CSV has one row per seed, map method and box method, the Markdown mean ± std."""
    levels = comparison["iou_levels"]
    frames = []
    for seed, folder in seed_splits(manifest_path, fractions, seeds):
        split = folder / "split.csv"
        for method, stores in method_stores.items():
            refit(manifest_path, split, stores, folder / method, regression, evaluation)
            scores = score_method(manifest_path, split, list(stores), folder / f"{method}.npz",
                                  folder / f"{method}.csv", folder / f"{method}_predictions.csv", method,
                                  comparison["thresholds"], levels, **evaluation["heuristic"],
                                  iou_threshold=evaluation["iou_threshold"], synset_mapping=synset_mapping)
            frames.append(scores.assign(seed=seed))
        centre = centre_scores(manifest_path, split, pd.read_csv(folder / f"{method}_predictions.csv"), "train",
                               levels, evaluation["iou_threshold"])
        frames.append(pd.DataFrame([centre]).assign(seed=seed))
    frame = in_method_order(pd.concat(frames, ignore_index=True)).sort_values("seed", kind="stable")
    columns = ["gt_known_loc", "top1_loc", "maxboxacc_v2", "corloc"]
    frame[columns] *= 100
    frame = frame[["seed", "map_method", "box_method", "n_test", *columns]]
    frame.to_csv(table_csv, index=False, float_format="%.4f")
    summary = frame.groupby(["map_method", "box_method"], sort=False)[columns].agg(["mean", "std"])
    shown = pd.DataFrame({"map method": [m for m, _ in summary.index], "box": [b for _, b in summary.index]})
    for column, header in zip(columns, ("GT-known Loc", "Top-1 Loc", "MaxBoxAccV2", "CorLoc")):
        mean, std = summary[(column, "mean")].to_numpy(), summary[(column, "std")].to_numpy()
        shown[header] = ["—" if np.isnan(m) else f"{m:.1f} ± {s:.1f}" for m, s in zip(mean, std)]
    Path(table_md).write_text(
        to_markdown(shown, title) + f"\nMean ± std over split seeds {', '.join(map(str, seeds))} "
        f"({int(frame['n_test'].min())}–{int(frame['n_test'].max())} test rows per seed); per seed, every box model "
        "and threshold chosen on that seed's val split. Columns as in the comparison table.\n")
    return frame
