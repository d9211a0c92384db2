"""Stage 2: deterministic, per-class stratified train / val / test assignment of the images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sensitivity.datasets import find_voc_root, read_manifest, split_manifest


def voc_test_ids(root: str | Path, test_set: str = "test") -> set[str]:
    """Ids listed in the official VOC test image set."""
    voc = find_voc_root(root)
    if voc is None:
        raise ValueError(f"{root}: not a VOC folder")
    listing = voc / "ImageSets" / "Main" / f"{test_set}.txt"
    return {line.split()[0] for line in listing.read_text().splitlines() if line.strip()}


def make_split(manifest_path: str | Path, split_path: str | Path, fractions: list[float], seed: int,
               official_test: set[str] | None = None) -> pd.Series:
    """Write ``image_id, split``. With ``official_test`` (VOC), those images are the test split and the
    rest is split train/val by the train and val fractions, renormalised."""
    manifest = read_manifest(manifest_path)
    if official_test is None:
        split = split_manifest(manifest, fractions, seed)
    else:
        short_id = manifest["image_id"].str.rsplit("/", n=1).str[-1]
        is_test = short_id.isin(official_test)
        train, val = fractions[0], fractions[1]
        fit_part = split_manifest(manifest[~is_test], (train / (train + val), val / (train + val), 0.0), seed)
        test_part = pd.Series("test", index=pd.Index(manifest.loc[is_test, "image_id"].unique(), name="image_id"))
        split = pd.concat([fit_part, test_part]).rename("split")
    Path(split_path).parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(split_path)
    return split


def read_split(path: str | Path) -> pd.Series:
    """``image_id`` → ``train | val | test``."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("image_id")["split"]
