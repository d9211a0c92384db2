"""All map variants of one dataset in memory: one (V, S, S) stack per labelled row, aligned with the rows.

The paper's comparisons (§3.6, the variant study, the across-seed table) refit many small models on
the same maps, so the maps are read once. Memory is ``rows × 4 × S² × 4`` bytes (14 MB for the 273
shared images at S = 56; about 15 GB for all 300 k boxed ImageNet training images, where a subset
or a smaller ``map_size`` is advisable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.evaluation import labelled_rows
from sensitivity.store import MapStore, iter_maps, map_provenance

#: The four (target, aggregate) map variants, in the order of the bank's second axis.
MAP_VARIANTS: tuple[str, ...] = ("class_max", "class_mean", "gestalt_max", "gestalt_mean")


def variant_name(target: str, aggregate: str) -> str:
    return f"{target}_{aggregate}"


@dataclass
class MapBank:
    """Labelled rows with a valid map in every variant, and those maps.

    ``rows``: manifest rows (one per image and class) with ``gt`` (k, 4) boxes and ``target_box`` (the
    largest box, the regression target), in manifest order; ``maps``: float32 (len(rows), V, S, S) with
    the variants in ``variants`` order; ``missing``: image ids left out (no valid map in some variant);
    ``attributes``: the first store's attributes of each variant (model, weights, target, ...);
    ``provenance``: how each variant's maps were made (:func:`~sensitivity.store.map_provenance` of its stores,
    which refuses shards made differently), what a box model fitted on them records.
    """

    rows: pd.DataFrame
    maps: np.ndarray
    variants: tuple[str, ...] = MAP_VARIANTS
    missing: list[str] = field(default_factory=list)
    attributes: dict[str, dict] = field(default_factory=dict)
    provenance: dict[str, dict] = field(default_factory=dict)

    def index(self, variant: str) -> int:
        return self.variants.index(variant)

    def subset(self, mask: np.ndarray) -> MapBank:
        mask = np.asarray(mask)
        return MapBank(self.rows[mask].reset_index(drop=True), self.maps[mask], self.variants, self.missing,
                       self.attributes, self.provenance)

    def join(self, other: MapBank) -> MapBank:
        """This bank's rows and maps, then ``other``'s (e.g. train + val)."""
        return MapBank(pd.concat([self.rows, other.rows], ignore_index=True), np.concatenate([self.maps, other.maps]),
                       self.variants, self.missing, self.attributes, self.provenance)

    @property
    def targets(self) -> np.ndarray:
        """(n, 4) regression targets (largest ground-truth box per row)."""
        return np.stack(self.rows["target_box"].to_numpy()) if len(self.rows) else np.empty((0, 4))

    @property
    def gt(self) -> list[np.ndarray]:
        return list(self.rows["gt"])


def load_bank(manifest_path: str | Path, stores: Mapping[str, Sequence[str | Path]],
              variants: Sequence[str] = MAP_VARIANTS) -> MapBank:
    """Read every variant's stores (``stores[variant]`` = that variant's shard stores)."""
    rows = labelled_rows(manifest_path)
    wanted = set(rows["image_id"])
    per_variant: list[dict[str, np.ndarray]] = []
    attributes, provenance = {}, {}
    for variant in variants:
        if variant not in stores:
            raise ValueError(f"no map stores given for variant {variant!r}; got {sorted(stores)}")
        paths = list(stores[variant])
        attributes[variant] = MapStore(paths[0]).attrs if paths else {}
        if paths:
            made = map_provenance(paths)
            provenance[variant] = {key: value for key, value in made.items() if key not in ("attention", "embedding")}
        found: dict[str, np.ndarray] = {}
        for image_ids, maps in iter_maps(paths, wanted):
            found.update(zip(image_ids.tolist(), maps))
        per_variant.append(found)
    valid = set.intersection(*(set(found) for found in per_variant)) if per_variant else set()
    keep = rows["image_id"].isin(valid).to_numpy()
    missing = sorted(wanted - valid)
    kept = rows[keep].reset_index(drop=True)
    if kept.empty:
        raise ValueError(f"{manifest_path}: no image has a valid map in every variant")
    maps = np.stack([np.stack([found[i] for found in per_variant]) for i in kept["image_id"]]).astype(np.float32)
    return MapBank(kept, maps, tuple(variants), missing, attributes, provenance)
