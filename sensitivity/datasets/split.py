"""Train/val/test splits of a manifest's images: deterministic and stratified per class, or from VOC image
lists; and reading a split file."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .voc import read_image_set

SPLITS = ("train", "val", "test")


def _counts(n: int, fractions: Sequence[float], rng: random.Random) -> list[int]:
    """Split ``n`` by ``fractions``.

    With n >= 3: largest-remainder rounding, and every split of non-zero fraction gets at least one
    item, taken from the largest split. With n = 1 or 2 (too few for one image per split) each image
    draws its split with probabilities ``fractions`` from ``rng``, so that small classes still reach
    val and test in the expected shares instead of all landing in train.
    """
    if 0 < n < 3:
        draws = rng.choices(range(len(fractions)), weights=fractions, k=n)
        return [draws.count(i) for i in range(len(fractions))]
    quotas = [n * f for f in fractions]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= 3:
        for i, f in enumerate(fractions):
            if f > 0 and counts[i] == 0:
                counts[max(range(len(counts)), key=counts.__getitem__)] -= 1
                counts[i] = 1
    return counts


def _class_rng(seed: int, label: str) -> random.Random:
    """A generator seeded from ``seed`` and the class name only, so classes are independent."""
    digest = hashlib.sha256(f"{seed}\x00{label}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_manifest(
    df: pd.DataFrame, fractions: Sequence[float] = (0.75, 0.125, 0.125), seed: int = 0
) -> pd.Series:
    """Assign each image of a manifest to ``"train"``, ``"val"`` or ``"test"``.

    Stratified per class, an image's class being its alphabetically first label.
    Each class's images (sorted by id) are shuffled by an RNG derived from ``seed``
    and the class name, then cut by ``fractions`` (largest-remainder rounding; a
    class with >= 3 images gets >= 1 val and >= 1 test image when those fractions
    are non-zero; each image of a class with 1 or 2 images draws its split at random
    with probabilities ``fractions``, see :func:`_counts`). Returns a Series named ``split`` indexed by the unique image ids.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    image_class = df.groupby("image_id", sort=False)["label"].min()
    assignment: dict[str, str] = {}
    for label, ids in image_class.groupby(image_class, sort=True):
        images = sorted(ids.index)
        rng = _class_rng(seed, str(label))
        rng.shuffle(images)
        start = 0
        for name, count in zip(SPLITS, _counts(len(images), fractions, rng)):
            assignment.update(dict.fromkeys(images[start : start + count], name))
            start += count
    index = pd.Index(df["image_id"].unique(), name="image_id")
    return pd.Series([assignment[i] for i in index], index=index, name="split")


def read_split(path: str | Path) -> pd.Series:
    """``image_id`` → ``train | val | test`` from a split CSV (``image_id, split``)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("image_id")["split"]


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
