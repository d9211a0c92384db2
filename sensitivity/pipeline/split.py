"""Stage 2: the train / val / test assignment of the images.

Folder, CSV and ImageNet datasets are split per class by seeded fractions; a VOC devkit is split by its
official image lists (``ImageSets/Main/train.txt`` → train, ``val.txt`` → val, ``test.txt`` → test).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pandas as pd

from sensitivity.datasets import read_image_set, read_manifest, split_manifest
from sensitivity.datasets.split import SPLITS


def make_split(manifest_path: str | Path, split_path: str | Path, fractions: list[float], seed: int) -> pd.Series:
    """Write ``image_id, split``: seeded fractions, stratified per class (see ``split_manifest``)."""
    split = split_manifest(read_manifest(manifest_path), fractions, seed)
    return _write(split, split_path)


def list_split(manifest: pd.DataFrame, root: str | Path, image_sets: Mapping[str, str],
               needed: Collection[str] = SPLITS) -> pd.Series:
    """``image_id`` → split from VOC image lists: ``image_sets`` maps each split to its list name.

    A manifest image must be listed in exactly one of the lists (ids are the part of ``image_id`` after
    the last ``/``). Raises ValueError when a split in ``needed`` has no image: the message names the
    list file and says why (its ids had no files here, or were skipped as bad input).
    """
    if set(image_sets) != set(SPLITS):
        raise ValueError(f"image_sets must name a list for each of {SPLITS}, got {dict(image_sets)}")
    where: dict[str, str] = {}
    files: dict[str, tuple[Path, int]] = {}
    for name in SPLITS:
        set_file, ids = read_image_set(root, image_sets[name])
        files[name] = (set_file, len(ids))
        for voc_id in ids:
            if where.setdefault(voc_id, name) != name:
                raise ValueError(f"{set_file}: id {voc_id} is also in the {where[voc_id]} list "
                                 f"{files[where[voc_id]][0]}; a split's images must be in its list only")
    image_ids = pd.Index(manifest["image_id"].unique(), name="image_id")
    split = pd.Series(image_ids.str.rsplit("/", n=1).str[-1].map(where), index=image_ids, name="split")
    if split.isna().any():
        raise ValueError(f"image {split.index[split.isna()][0]!r} of the manifest is in none of the lists "
                         f"{[str(f) for f, _ in files.values()]}")
    for name in needed:
        if not (split == name).any():
            set_file, n = files[name]
            raise ValueError(
                f"{set_file}: the {name} split is empty: none of the {n} ids listed there is in the manifest "
                "(each lacks its image or annotation, or was bad input: they are in manifest_skipped.csv). "
                + ("A box model needs train and val images; a sample of test images only can set "
                   "`fit_on_test: true` for a plumbing run (fit and choose on the test images: no held-out result)."
                   if name != "test" else "There is nothing to evaluate.")
            )
    return split


def make_list_split(manifest_path: str | Path, split_path: str | Path, root: str | Path,
                    image_sets: Mapping[str, str], needed: Collection[str] = SPLITS) -> pd.Series:
    """Write ``image_id, split`` from VOC image lists (see :func:`list_split`)."""
    return _write(list_split(read_manifest(manifest_path), root, image_sets, needed), split_path)


def _write(split: pd.Series, split_path: str | Path) -> pd.Series:
    Path(split_path).parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(split_path)
    return split
