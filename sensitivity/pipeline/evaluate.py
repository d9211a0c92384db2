"""Stage 5: per-image predictions on the test split and per-class CorLoc for every box method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.box_model import BoxModel, load_box_model
from sensitivity.boxes import DEFAULT_FRACTION, CentreBoxBaseline, heuristic_boxes
from sensitivity.evaluation import ROW_COLUMNS, corloc_table, labelled_rows, prediction_columns
from sensitivity.pipeline.classify import accuracy_note
from sensitivity.pipeline.rows import RowMaps, own_maps
from sensitivity.tables import corloc_display, small_count_note, write_table

METHODS = ("regression", "heuristic", "centre")
#: Column titles of the Markdown and HTML tables.
METHOD_NAMES = {"regression": "learned box", "heuristic": "heuristic box", "centre": "centre box"}


def maps_note(regressor: BoxModel) -> str:
    """How the evaluated maps were made, from the box model's record of its training maps."""
    made = getattr(regressor, "provenance_", None)
    if not made:
        return ""
    return (f"Maps: {made['model']}, {made['method']} ({made['target']} target, {made['aggregate']} "
            f"aggregation), {made['map_size']}² pixels.")


def box_model_note(summary_path: str | Path) -> str:
    """Which learned box model the fit stage chose, on what, and among how many (from ``fit_summary.json``)."""
    summary = json.loads(Path(summary_path).read_text())
    chosen = summary["chosen"]
    if "ensemble" in chosen:
        members = "; ".join(", ".join(model_settings(m, summary)) for m in chosen["members"])
        what = f"the average box of {len(chosen['members'])} {chosen['solver']} box models ({members})"
    else:
        settings = model_settings(chosen, summary)
        what = ", ".join([settings[0], chosen["solver"], *settings[1:]])
    return (f"Learned box: {what}; chosen by {summary['chosen_on']} among "
            f"{len(summary['candidates'])} candidates (CorLoc {100 * summary['score']:.1f} % on "
            f"{summary['n_choice_rows']} images; {Path(summary_path).name}). Heuristic box: the "
            "paper's (smoothed map, top pixels); centre box: the mean training box, centred.")


def model_settings(chosen: dict, summary: dict) -> list[str]:
    """One box model's settings in words, from its entry in ``fit_summary.json``."""
    settings = [f"{chosen['features']} features", f"alpha {chosen['alpha']:g}"]
    settings += [f"{key} {chosen[key]}" for key in ("pool", "normalize") if chosen.get(key) is not None]
    if chosen.get("embedding_components"):
        settings.append(f"{chosen['embedding_components']} embedding components")
    if chosen.get("loss", "squared") != "squared":
        settings.append(f"{chosen['loss']} loss")
    if chosen.get("start"):
        how = "as it is" if chosen["start"] == "as is" else "fine-tuned (alpha: penalty towards its weights)"
        settings.append(f"the prior box model {summary['prior']['model']} {how}")
    return settings


def predict_test(rows: pd.DataFrame, stores: list[str], regressor: BoxModel, centre: CentreBoxBaseline,
                 sigma: float, fraction: float, iou_threshold: float = 0.5, batch_size: int = 1024) -> pd.DataFrame:
    """One row per test (image, class): each method's box, its best IoU with the class's boxes and whether it
    is correct (IoU > ``iou_threshold``)."""
    blocks = []
    for block, maps in RowMaps(stores, rows, batch_size, attention=regressor.n_channels_ > 1,
                               embedding=regressor.n_embedding_ > 0):
        predictions = {
            "regression": regressor.predict(maps),
            "heuristic": heuristic_boxes(own_maps(maps), sigma=sigma, fraction=fraction),
            "centre": centre.predict(maps),
        }
        out = prediction_columns(block, predictions, iou_threshold)
        out.insert(len(ROW_COLUMNS), "n_gt", [len(g) for g in block["gt"]])
        blocks.append(out)
    if not blocks:
        raise ValueError("the test split has no image with a map")
    return pd.concat(blocks, ignore_index=True).sort_values(["label", "image_id"], ignore_index=True)


def evaluate(manifest_path: str | Path, split_path: str | Path, stores: list[str], model_path: str | Path,
             predictions_path: str | Path, table_csv: str | Path, table_md: str | Path,
             sigma: float, fraction: float = DEFAULT_FRACTION, iou_threshold: float = 0.5, title: str = "",
             skipped_path: str | Path | None = None, classifier_path: str | Path | None = None,
             fit_split: str = "train", summary_path: str | Path | None = None,
             table_html: str | Path | None = None) -> pd.DataFrame:
    """Write per-image predictions and the per-class CorLoc table (CSV and Markdown); return the table.

    Under the Markdown table: ``skipped_path`` (the dataset's skipped-inputs CSV) adds their count,
    ``classifier_path`` (see :func:`~sensitivity.pipeline.classify.classifier_accuracy`) the classifier's
    top-1 / top-5. ``fit_split`` is the split the regressor and the centre box were fitted on; ``"test"``
    (``fit_on_test``, for test-only samples) is said under the table: the numbers are then not held out.
    ``summary_path`` (the fit stage's ``fit_summary.json``) says which box model was chosen. The Markdown (and
    ``table_html``) table gives CorLoc with Wilson 95 % intervals and the maps' model and method.
    """
    rows = labelled_rows(manifest_path, split_path)
    train = rows[rows["split"] == fit_split]
    centre = CentreBoxBaseline().fit(np.zeros(len(train)), np.stack(train["target_box"].to_numpy()))
    regressor = load_box_model(model_path)
    predictions = predict_test(rows[rows["split"] == "test"], stores, regressor, centre, sigma, fraction,
                               iou_threshold)
    predictions.to_csv(predictions_path, index=False, float_format="%.6g")
    table = corloc_table(predictions, METHODS)
    notes = [small_count_note(table), maps_note(regressor)]
    if summary_path is not None:
        notes.append(box_model_note(summary_path))
    if fit_split == "test":
        notes.append("fit_on_test: the box model and the centre box were fitted, and the hyper-parameters chosen, "
                     "on these same test images; a plumbing check, not a held-out result.")
    if skipped_path is not None and (n_skipped := len(pd.read_csv(skipped_path))):
        notes.append(f"{n_skipped} input(s) skipped as bad input (listed in {Path(skipped_path).name}).")
    if classifier_path is not None:
        notes.append(accuracy_note(classifier_path))
    write_table(table, table_csv, table_md, title, "\n\n".join(note for note in notes if note),
                shown=corloc_display(table, METHOD_NAMES), html_path=table_html)
    return table
