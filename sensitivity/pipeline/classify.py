"""The classifier's top-1 / top-5 accuracy on a dataset's images, from the classes stored with the maps."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sensitivity.datasets import synset_to_index
from sensitivity.datasets.split import SPLITS
from sensitivity.evaluation import labelled_rows
from sensitivity.store import MapStore

COLUMNS = ["split", "n_images", "top1", "top5"]


def stored_top5(stores: Sequence[str | Path]) -> pd.DataFrame:
    """``(N, 5)`` top classes of every image with a map, indexed by image id."""
    frames = []
    for path in stores:
        store = MapStore(path)
        frames.append(pd.DataFrame(store.top5[store.valid], index=pd.Index(store.image_ids[store.valid],
                                                                          name="image_id")))
    return pd.concat(frames)


def row_correctness(rows: pd.DataFrame, stores: Sequence[str | Path], synset_mapping: str | Path) -> pd.DataFrame:
    """Per labelled row with a map: ``image_id``, ``split``, and whether its label is the classifier's
    ``top1`` / among its ``top5``. Every label must be a synset of ``synset_mapping`` (line k = output k)."""
    index = synset_to_index(synset_mapping)
    unknown = sorted(set(rows["label"]) - set(index))
    if unknown:
        raise ValueError(f"labels not in {synset_mapping}: {unknown[:5]}")
    top5 = stored_top5(stores)
    rows = rows[rows["image_id"].isin(top5.index)]
    predicted = top5.loc[rows["image_id"]].to_numpy()
    truth = rows["label"].map(index).to_numpy()[:, None]
    return pd.DataFrame({"image_id": rows["image_id"].to_numpy(), "split": rows["split"].to_numpy(),
                         "top1": predicted[:, 0] == truth[:, 0], "top5": (predicted == truth).any(axis=1)},
                        index=rows.index)


def classifier_accuracy(manifest_path: str | Path, split_path: str | Path, stores: Sequence[str | Path],
                        synset_mapping: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Top-1 / top-5 accuracy (%) per split and over all images with a map; written as CSV.

    An image is right at k when one of its annotated classes is among the classifier's k best.
    """
    try:
        per_row = row_correctness(labelled_rows(manifest_path, split_path), stores, synset_mapping)
    except ValueError as error:
        raise ValueError(f"{manifest_path}: {error}") from None
    per_image = per_row.groupby("image_id").agg(split=("split", "first"), top1=("top1", "any"), top5=("top5", "any"))
    table = [{"split": name, "n_images": len(part), "top1": 100.0 * part["top1"].mean(),
              "top5": 100.0 * part["top5"].mean()}
             for name, part in [*((s, per_image[per_image["split"] == s]) for s in SPLITS), ("all", per_image)]
             if len(part)]
    frame = pd.DataFrame(table, columns=COLUMNS)
    frame.to_csv(out_path, index=False, float_format="%.4f")
    return frame


def accuracy_note(path: str | Path) -> str:
    """One sentence for the CorLoc table: the classifier's accuracy over all images with a map."""
    overall = pd.read_csv(path).set_index("split").loc["all"]
    return (f"Classifier top-1 {overall['top1']:.1f} %, top-5 {overall['top5']:.1f} % on the "
            f"{int(overall['n_images'])} images with a map ({Path(path).name}).")
