"""The comparison stage: every map method with every box method on the test split, scored with CorLoc and the
WSOL metrics of Choe et al. (CVPR 2020), beside each path's cost.

Per map method (:func:`score_method`, one CSV) and for three box methods:

- ``heuristic``: the paper's baseline (Gaussian smoothing, top pixels, their bounding box);
- ``wsol``: wsolevaluation's box, the largest contour of the min-max normalised map above τ, τ chosen on
  val for IoU 0.5; its MaxBoxAccV2 is wsolevaluation's (all contours, the best one counts; τ per δ chosen
  on val and, as wsolevaluation does, on test itself);
- ``learned``: the workflow's fitted box model of that map method (pooled or shape features, chosen on val).

Metrics, over the test rows (one per image and class): ``gt_known_loc`` (IoU >= 0.5; the maps are of the
true class when the dataset's ``class_source`` is ``true``), ``top1_loc`` (that, and the classifier's top-1
class is the label; needs a synset mapping), ``boxacc_<δ>`` and their mean ``maxboxacc_v2`` (for the
``wsol`` box at the val-chosen τ per δ; for boxes without a threshold their plain box accuracy), and
``corloc``, the paper's class-averaged CorLoc (IoU > ``iou_threshold``). :func:`methods_table` joins the
method files, the centre-box baseline and the map timings into ``results/{dataset}_methods.csv``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.box_model import BoxModel, load_box_model
from sensitivity.boxes import DEFAULT_FRACTION, DEFAULT_SIGMA, CentreBoxBaseline, heuristic_boxes
from sensitivity.evaluation import average_corloc, labelled_rows, prediction_columns
from sensitivity.map_methods import list_map_methods
from sensitivity.metrics import (
    accuracy_at,
    best_ious,
    box_accuracy_curves,
    choose_thresholds,
    fixed_box_ious,
    localized,
    maxboxacc_of,
    threshold_box,
)
from sensitivity.pipeline.classify import row_correctness
from sensitivity.pipeline.rows import RowMaps, own_maps
from sensitivity.regress import check_provenance
from sensitivity.store import map_provenance
from sensitivity.tables import read_published, to_markdown

BOX_METHODS = ("heuristic", "wsol", "learned")
GT_KNOWN_LEVEL = 50


def choose_on(stores: Sequence[str | Path], rows: pd.DataFrame, thresholds: np.ndarray,
              iou_levels: Sequence[int], batch_size: int = 1024) -> dict:
    """τ per δ for wsolevaluation's MaxBoxAccV2 boxes (all contours) and τ at IoU 0.5 for its single box (the
    largest contour), each the best on ``rows`` (val)."""
    all_contours, largest = [], []
    for block, maps in RowMaps(stores, rows, batch_size):
        gt = list(block["gt"])
        all_contours.append(best_ious(own_maps(maps), gt, thresholds, multi_contour=True))
        largest.append(best_ious(own_maps(maps), gt, thresholds, multi_contour=False))
    if not all_contours:
        raise ValueError("the val split has no image with a map; cannot choose the wsolevaluation threshold")
    chosen = choose_thresholds(box_accuracy_curves(np.vstack(all_contours), iou_levels), thresholds, iou_levels)
    single = choose_thresholds(box_accuracy_curves(np.vstack(largest), [GT_KNOWN_LEVEL]), thresholds,
                               [GT_KNOWN_LEVEL])
    return {"maxboxacc": chosen, "box": single[GT_KNOWN_LEVEL]}


def predict_rows(stores: Sequence[str | Path], rows: pd.DataFrame, regressor: BoxModel, threshold: float,
                 thresholds: np.ndarray, sigma: float, fraction: float,
                 batch_size: int = 1024) -> tuple[pd.DataFrame, np.ndarray, dict[str, float]]:
    """Each box method's box and best IoU per row; the all-contour best IoUs (n, T) for MaxBoxAccV2; and the
    seconds each box method took on these maps."""
    seconds = dict.fromkeys(BOX_METHODS, 0.0)
    blocks, all_contours = [], []
    for block, maps in RowMaps(stores, rows, batch_size, attention=regressor.n_channels_ > 1,
                               embedding=regressor.n_embedding_ > 0):
        own = own_maps(maps)
        boxes = {}
        for method, run in (("heuristic", lambda: heuristic_boxes(own, sigma=sigma, fraction=fraction)),
                            ("wsol", lambda: np.stack([threshold_box(m, threshold) for m in own])),
                            ("learned", lambda: regressor.predict(maps))):
            start = time.perf_counter()
            boxes[method] = run()
            seconds[method] += time.perf_counter() - start
        blocks.append(prediction_columns(block, boxes, None, keep=("image_id", "label")))
        all_contours.append(best_ious(own, list(block["gt"]), thresholds, multi_contour=True))
    if not blocks:
        raise ValueError("the test split has no image with a map")
    return pd.concat(blocks), np.vstack(all_contours), seconds


def box_scores(ious: np.ndarray, labels: Sequence[str], top1: np.ndarray | None, iou_levels: Sequence[int],
               iou_threshold: float) -> dict[str, float]:
    """The metrics of one box per row from its best IoUs: GT-known and Top-1 Loc, box accuracy per δ and
    their mean, and the class-averaged CorLoc (fractions; Top-1 Loc NaN without ``top1``)."""
    located = localized(ious, GT_KNOWN_LEVEL)
    accuracy = box_accuracy_curves(ious[:, None], iou_levels)[:, 0]
    corloc = average_corloc(ious > iou_threshold, labels) / 100
    return {"n_test": len(ious), "gt_known_loc": located.mean(),
            "top1_loc": (located & top1).mean() if top1 is not None else np.nan,
            "maxboxacc_v2": accuracy.mean(), **{f"boxacc_{d}": a for d, a in zip(iou_levels, accuracy)},
            "corloc": corloc}


def score_method(manifest_path: str | Path, split_path: str | Path, stores: Sequence[str | Path],
                 model_path: str | Path, scores_path: str | Path, predictions_path: str | Path, method: str,
                 thresholds: int = 100, iou_levels: Sequence[int] = (30, 50, 70),
                 sigma: float = DEFAULT_SIGMA, fraction: float = DEFAULT_FRACTION, iou_threshold: float = 0.5,
                 synset_mapping: str | Path | None = None, val_split: str = "val") -> pd.DataFrame:
    """One row per box method of ``method``'s maps on the test split (columns: module docstring); writes the
    rows and the per-row predictions as CSV. ``thresholds``: τ = 0, 1/thresholds, ...; ``val_split``: the
    split τ and the box model were chosen on."""
    taus = np.arange(thresholds) / thresholds
    levels = [int(level) for level in iou_levels]
    regressor = load_box_model(model_path)
    check_provenance(regressor, map_provenance(stores), str(model_path))
    rows = labelled_rows(manifest_path, split_path)
    chosen = choose_on(stores, rows[rows["split"] == val_split], taus, levels)
    predictions, all_contours, seconds = predict_rows(stores, rows[rows["split"] == "test"], regressor,
                                                      chosen["box"], taus, sigma, fraction)
    top1 = None
    if synset_mapping is not None:
        top1 = row_correctness(rows.loc[predictions.index], stores, synset_mapping)["top1"].to_numpy()
        predictions["top1"] = top1
    out = []
    for box in BOX_METHODS:
        scores = box_scores(predictions[f"{box}_iou"].to_numpy(), predictions["label"], top1, levels, iou_threshold)
        if box == "wsol":  # MaxBoxAccV2 proper: all contours, τ per δ from val (and, labelled, from test)
            accuracy = accuracy_at(all_contours, taus, chosen["maxboxacc"])
            scores |= {"maxboxacc_v2": accuracy["mean"], **{f"boxacc_{d}": a for d, a in accuracy["per_iou"].items()},
                       "maxboxacc_v2_tau_on_test": maxboxacc_of(all_contours, taus, levels)["mean"],
                       "threshold_box": chosen["box"], **{f"threshold_{d}": t for d, t in chosen["maxboxacc"].items()}}
        out.append({"map_method": method, "box_method": box, **scores,
                    "box_ms_per_image": 1000 * seconds[box] / len(predictions)})
    table = pd.DataFrame(out)
    table.to_csv(scores_path, index=False, float_format="%.6g")
    predictions.to_csv(predictions_path, index=False, float_format="%.6g")
    return table


def centre_scores(manifest_path: str | Path, split_path: str | Path, test_rows: pd.DataFrame, fit_split: str,
                  iou_levels: Sequence[int], iou_threshold: float) -> dict:
    """The centre box of mean training size (no map) on the test rows of a method's predictions."""
    rows = labelled_rows(manifest_path, split_path)
    train = rows[rows["split"] == fit_split]
    centre = CentreBoxBaseline().fit(np.zeros(len(train)), np.stack(train["target_box"].to_numpy()))
    gt = rows.set_index(["image_id", "label"]).loc[pd.MultiIndex.from_frame(test_rows[["image_id", "label"]]), "gt"]
    ious = fixed_box_ious(centre.predict(test_rows), list(gt))
    top1 = test_rows["top1"].to_numpy(dtype=bool) if "top1" in test_rows else None
    return {"map_method": "none", "box_method": "centre",
            **box_scores(ious, test_rows["label"], top1, iou_levels, iou_threshold), "box_ms_per_image": 0.0}


def in_method_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by map method in the registry's order (then any other, the centre box last) and by box method,
    whatever order the config merged the methods in."""
    methods = [*list_map_methods(), "none"]
    boxes = [*BOX_METHODS, "centre"]
    rank = frame["map_method"].map(lambda m: methods.index(m) if m in methods else len(methods) - 0.5)
    return frame.assign(_map=rank, _box=frame["box_method"].map(boxes.index)).sort_values(
        ["_map", "_box"], kind="stable").drop(columns=["_map", "_box"]).reset_index(drop=True)


#: Accuracy columns, reported in percent.
ACCURACY = ("gt_known_loc", "top1_loc", "maxboxacc_v2", "maxboxacc_v2_tau_on_test", "corloc")


def methods_table(score_paths: Sequence[str | Path], prediction_paths: Sequence[str | Path],
                  speed_path: str | Path, manifest_path: str | Path, split_path: str | Path,
                  csv_path: str | Path, md_path: str | Path, figure_path: str | Path,
                  published_path: str | Path | None = None, iou_levels: Sequence[int] = (30, 50, 70),
                  iou_threshold: float = 0.5, fit_split: str = "train", title: str = "") -> pd.DataFrame:
    """``results/{dataset}_methods.csv`` / ``.md`` / ``.png``: every map method × box method and the centre box,
    accuracies in %, with images/s and time / forward pass of the whole image → box path (the map timed beside
    the forward pass in one run, plus the box step's time on the stored test maps)."""
    levels = [int(level) for level in iou_levels]
    scores = pd.concat([pd.read_csv(path) for path in score_paths], ignore_index=True)
    centre = centre_scores(manifest_path, split_path, pd.read_csv(prediction_paths[0]), fit_split, levels,
                           iou_threshold)
    table = in_method_order(pd.concat([scores, pd.DataFrame([centre])], ignore_index=True))
    for column in (*ACCURACY, *(f"boxacc_{d}" for d in levels)):
        table[column] = 100 * table[column]
    speed = pd.read_csv(speed_path).set_index("path")
    forward_s = 1 / speed.loc["forward", "images_per_s"]
    map_s = table["map_method"].map(lambda m: 1 / speed.loc[m, "images_per_s"] if m in speed.index else 0.0)
    box_s = table["box_ms_per_image"] / 1000
    table["images_per_s"] = 1 / (map_s + box_s).replace(0.0, np.nan)  # the centre box costs nothing: no rate
    table["x_forward"] = table["map_method"].map(speed["ratio_to_forward"]).fillna(0.0) + box_s / forward_s
    table["device"] = speed["device"].iloc[0]
    table.to_csv(csv_path, index=False, float_format="%.6g")
    _write_markdown(table, speed, levels, md_path, title, published_path)
    from sensitivity.figures import plot_accuracy_cost

    plot_accuracy_cost(table, figure_path, title)
    return table


def _write_markdown(table: pd.DataFrame, speed: pd.DataFrame, levels: Sequence[int], md_path: str | Path,
                    title: str, published_path: str | Path | None) -> None:
    shown = table.rename(columns={"map_method": "map method", "box_method": "box", "gt_known_loc": "GT-known Loc",
                                  "top1_loc": "Top-1 Loc", "maxboxacc_v2": "MaxBoxAccV2",
                                  **{f"boxacc_{d}": f"@{d}" for d in levels},
                                  "maxboxacc_v2_tau_on_test": "MaxBoxAccV2, τ on test", "corloc": "CorLoc",
                                  "images_per_s": "images/s", "x_forward": "× forward"})
    columns = ["map method", "box", "GT-known Loc", "Top-1 Loc", "MaxBoxAccV2", *(f"@{d}" for d in levels),
               "MaxBoxAccV2, τ on test", "CorLoc", "images/s", "× forward"]
    shown = shown[columns].astype(object).where(shown[columns].notna(), "—")
    best = table.loc[table["gt_known_loc"].idxmax()]
    rate = table.dropna(subset=["images_per_s"]).assign(per_s=lambda t: t["gt_known_loc"] * t["images_per_s"])
    fastest = rate.loc[rate["per_s"].idxmax()]
    machine = speed.iloc[0]
    notes = [
        f"{int(table['n_test'].iloc[0])} test rows (image, class). Accuracies in %. GT-known Loc: IoU ≥ 0.5 with a "
        "box of the class (maps of the class given by the dataset's `class_source`); Top-1 Loc: that and the "
        "classifier's top-1 class is right (— without a synset mapping); MaxBoxAccV2: mean over IoU "
        f"{', '.join(map(str, levels))} % of the box accuracy, for `wsol` wsolevaluation's (all contours of the "
        "min-max normalised map above τ, the best one counts) at the τ chosen on **val** per IoU level, for the "
        "other boxes their plain box accuracy (no threshold to choose); `MaxBoxAccV2, τ on test`: wsolevaluation's "
        "own protocol, τ chosen on the test rows themselves (optimistic). The `wsol` box of GT-known / Top-1 Loc "
        "and CorLoc is the largest contour at the τ chosen on val for IoU 0.5. CorLoc: the paper's class average, "
        "IoU > 0.5.",
        f"Cost: the whole image → map → box path, per image, on {machine['device']} ({machine['cpu']}, "
        f"{int(machine['torch_threads'])} threads, batch {int(machine['batch_size'])}): the map method timed beside "
        "the forward pass in interleaved rounds (`× forward` is the median of their ratios), plus the box step's "
        "time on the stored test maps.",
        f"Best GT-known Loc: {best['map_method']} + {best['box_method']} ({best['gt_known_loc']:.1f} %). Most "
        f"localized images per second: {fastest['map_method']} + {fastest['box_method']} "
        f"({fastest['gt_known_loc']:.1f} % at {fastest['images_per_s']:.1f} images/s).",
    ]
    text = to_markdown(shown, title) + "\n" + "\n\n".join(notes) + "\n"
    if published_path is not None:
        text += "\n" + published_markdown(published_path)
    Path(md_path).write_text(text)


def published_markdown(published_path: str | Path) -> str:
    """The published WSOL numbers of ``data/published_results.csv`` (other networks, full ILSVRC val)."""
    published = read_published(published_path)
    published = published[published["table"] == "wsol"]
    lines = ["### Published, for orientation (other networks and training; the full ILSVRC val, 50 000 images)", "",
             "| method | metric | value | source |", "|---|---|---:|---|"]
    lines += [f"| {row.method} | {row['class']} | {row.value:g} | {row.source} |" for _, row in published.iterrows()]
    return "\n".join(lines) + "\n"
