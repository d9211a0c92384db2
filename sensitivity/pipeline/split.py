"""Stage 2: the train / val / test assignment of the images.

Folder, CSV and ImageNet datasets are split per class by seeded fractions; a VOC devkit is split by its
official image lists (``ImageSets/Main/train.txt`` → train, ``val.txt`` → val, ``test.txt`` → test).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import pandas as pd

from sensitivity.datasets import list_split, read_manifest, split_manifest
from sensitivity.datasets.split import SPLITS


def make_split(manifest_path: str | Path, split_path: str | Path, fractions: list[float], seed: int) -> pd.Series:
    """Write ``image_id, split``: seeded fractions, stratified per class (see ``split_manifest``)."""
    split = split_manifest(read_manifest(manifest_path), fractions, seed)
    return _write(split, split_path)


def make_list_split(manifest_path: str | Path, split_path: str | Path, root: str | Path,
                    image_sets: Mapping[str, str], needed: Collection[str] = SPLITS) -> pd.Series:
    """Write ``image_id, split`` from VOC image lists (see :func:`list_split`)."""
    return _write(list_split(read_manifest(manifest_path), root, image_sets, needed), split_path)


def _write(split: pd.Series, split_path: str | Path) -> pd.Series:
    Path(split_path).parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(split_path)
    return split
