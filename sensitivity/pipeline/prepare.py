"""Stage 1: read a configured dataset into its manifest (one row per image and class)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sensitivity.datasets import (
    OFFICIAL_IMAGE_SETS,
    read_csv_boxes,
    read_folder_dataset,
    read_imagenet,
    read_voc2007,
    write_manifest,
)
from sensitivity.datasets.manifest import SKIPPED_COLUMNS


def read_dataset(spec: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Dispatch on ``spec["kind"]`` (folder | csv | voc2007 | imagenet); returns ``(manifest, skipped)``.

    voc2007 reads the images of its train, val and test lists (``image_sets``, by default the official
    ``ImageSets/Main/{train,val,test}.txt``); the split stage assigns them by the same lists.
    """
    kind = spec["kind"]
    common = {"on_bad_input": spec.get("on_bad_input", "fail")}
    if kind == "folder":
        return read_folder_dataset(spec["roots"], class_from=spec.get("class_from", "folder"),
                                   use_difficult=spec.get("use_difficult", False), **common)
    if kind == "csv":
        return read_csv_boxes(spec["csv"], spec["images"], **common)
    if kind == "voc2007":
        sets = spec.get("image_sets")
        names = [sets[split] for split in ("train", "val", "test")] if sets else OFFICIAL_IMAGE_SETS
        return read_voc2007(spec["root"], names, use_difficult=spec.get("use_difficult", False), **common)
    if kind == "imagenet":
        parts = [read_imagenet(spec["root"], split=part, layout=spec.get("layout", "auto"),
                               use_difficult=spec.get("use_difficult", False), **common)
                 for part in spec.get("parts", ["train"])]
        return (pd.concat([p[0] for p in parts], ignore_index=True),
                pd.concat([p[1] for p in parts], ignore_index=True))
    raise ValueError(f"unknown dataset kind {kind!r}")


def build_manifest(spec: dict, manifest_path: str | Path, skipped_path: str | Path) -> pd.DataFrame:
    """Write the manifest CSV and the list of skipped inputs (``path, reason``)."""
    manifest, skipped = read_dataset(spec)
    if manifest.empty:
        raise ValueError(f"dataset {spec} has no usable annotated image")
    write_manifest(manifest, manifest_path)
    skipped.reindex(columns=SKIPPED_COLUMNS).to_csv(skipped_path, index=False)
    return manifest
