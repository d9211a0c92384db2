"""Zarr v3 stores of sensitivity maps: one store per extraction shard, one writer per store.

Layout of a store (a directory):
- ``maps`` (N, S, S) float16, chunks of ``CHUNK_MAPS`` images, Zstd-compressed: each map divided by its maximum, so
  float16 keeps ~3 significant digits however small the gradients are;
- ``scale`` (N,) float32: that maximum (map = maps * scale);
- ``attention`` (N, S, S) float16 and ``attention_scale`` (N,) float32: the class's Grad-CAM map from the
  same pass, resized to S x S, stored the same way (attribute ``attention: true`` when written; attribute
  ``attention_of``: whose Grad-CAM it is, see :func:`attention_of`);
- ``image_id`` (N,) str; ``class_index`` (N,) int32 (class used for a class-score map, -1 otherwise);
- ``top5`` (N, 5) int32: the classifier's five highest-scoring classes, best first (-1 past the number of
  classes), from the forward pass the map needed anyway;
- ``valid`` (N,) bool: False for an image that could not be read (``on_bad_input: skip``);
- attributes: how the maps were made (model, weights, target, aggregation, preprocessing, map size,
  package version), the skipped images, and ``complete: true``, written last.

A store is built under ``<path>.partial`` and renamed into place when complete, so a store found at its
final path is always whole; an interrupted writer leaves only the ``.partial`` directory, which the
next attempt replaces.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

FORMAT = "sensitivity-maps/2"
TOP_K = 5
# Maps per chunk: block reads 13-29x faster and a third of the disk of one chunk per map, single maps
# about 2x slower to read (benchmarks/bench_zarr_chunks.py, docs/PERFORMANCE.md "Storage").
CHUNK_MAPS = 64


class StoreError(ValueError):
    """A map store that is missing, incomplete or of another format, with its path named."""


def _write_scaled(array: zarr.Array, rows: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Write maps (b, S, S) divided by their maxima as float16 at increasing ``rows``; return the maxima."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = maps.reshape(len(maps), -1).max(axis=1, initial=0.0)
    safe = np.where(peak > 0, peak, 1.0)
    array.oindex[rows] = (maps / safe[:, None, None]).astype(np.float16)
    return peak


class MapStoreWriter:
    """Writes the maps of a fixed list of images into a new store, then publishes it atomically."""

    def __init__(self, path: str | Path, image_ids: Sequence[str], map_size: int, attributes: dict) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        if self.partial.exists():
            shutil.rmtree(self.partial)
        n = len(image_ids)
        group = zarr.open_group(self.partial, mode="w", zarr_format=3)
        chunk = (max(1, min(CHUNK_MAPS, n)), map_size, map_size)
        self._maps, self._attention = (
            group.create_array(name, shape=(n, map_size, map_size), chunks=chunk, dtype="float16",
                               compressors=ZstdCodec(level=3), fill_value=0)
            for name in ("maps", "attention"))
        self._scale = group.create_array("scale", shape=(n,), chunks=(max(n, 1),), dtype="float32", fill_value=0)
        self._attention_scale = group.create_array("attention_scale", shape=(n,), chunks=(max(n, 1),),
                                                   dtype="float32", fill_value=0)
        self._classes = group.create_array("class_index", shape=(n,), chunks=(max(n, 1),), dtype="int32", fill_value=-1)
        self._valid = group.create_array("valid", shape=(n,), chunks=(max(n, 1),), dtype="bool", fill_value=False)
        self._top5 = group.create_array("top5", shape=(n, TOP_K), chunks=(max(n, 1), TOP_K), dtype="int32",
                                        fill_value=-1)
        ids = group.create_array("image_id", shape=(n,), chunks=(max(n, 1),), dtype=str)
        if n:
            ids[:] = np.asarray(image_ids, dtype=str)
        self._group = group
        self._attributes = {"format": FORMAT, "n_images": n, "map_size": map_size, **attributes, "complete": False}
        group.attrs.update(self._attributes)
        self._scale_buffer = np.zeros(n, dtype=np.float32)
        self._attention_scale_buffer = np.zeros(n, dtype=np.float32)
        self._has_attention = False
        self._embedding: zarr.Array | None = None
        self._class_buffer = np.full(n, -1, dtype=np.int32)
        self._valid_buffer = np.zeros(n, dtype=bool)
        self._top5_buffer = np.full((n, TOP_K), -1, dtype=np.int32)
        self._skipped: list[dict[str, str]] = []

    def write(self, rows: np.ndarray, maps: np.ndarray, classes: np.ndarray | None = None,
              top5: np.ndarray | None = None, attention: np.ndarray | None = None,
              embedding: np.ndarray | None = None) -> None:
        """Store float maps (b, S, S) for the given row indices (b,), with the class used, the top
        classes (b, k <= 5), the attention maps (b, S, S) and the classifier's embeddings (b, D) when known."""
        order = np.argsort(rows)  # zarr orthogonal indexing wants increasing rows
        rows = np.asarray(rows)[order]
        if embedding is not None:
            self._write_embedding(rows, np.asarray(embedding, dtype=np.float32)[order])
        self._scale_buffer[rows] = _write_scaled(self._maps, rows, np.asarray(maps)[order])
        if attention is not None:
            self._attention_scale_buffer[rows] = _write_scaled(self._attention, rows, np.asarray(attention)[order])
            self._has_attention = True
        self._valid_buffer[rows] = True
        if classes is not None:
            self._class_buffer[rows] = np.asarray(classes)[order]
        if top5 is not None:
            top5 = np.asarray(top5)[order]
            self._top5_buffer[rows, : top5.shape[1]] = top5

    def _write_embedding(self, rows: np.ndarray, embedding: np.ndarray) -> None:
        if self._embedding is None:
            n = len(self._valid_buffer)
            self._embedding = self._group.create_array(
                "embedding", shape=(n, embedding.shape[1]), chunks=(max(1, min(CHUNK_MAPS, n)), embedding.shape[1]),
                dtype="float32", compressors=ZstdCodec(level=3), fill_value=0)
        self._embedding.oindex[rows] = embedding

    def record(self, attributes: dict) -> None:
        """Add attributes (e.g. how long the maps took) that are written when the store is closed."""
        self._attributes |= attributes

    def skip(self, image_id: str, path: str, reason: str) -> None:
        """Record an image that could not be used (its row stays invalid)."""
        self._skipped.append({"image_id": image_id, "path": path, "reason": reason})

    def close(self) -> Path:
        """Write the per-image vectors, mark the store complete and move it to its final path."""
        written = int(self._valid_buffer.sum()) + len(self._skipped)
        if written != len(self._valid_buffer):
            raise StoreError(f"{self.partial}: {written} of {len(self._valid_buffer)} images written; not publishing")
        self._scale[:] = self._scale_buffer
        self._attention_scale[:] = self._attention_scale_buffer
        self._classes[:] = self._class_buffer
        self._valid[:] = self._valid_buffer
        self._top5[:] = self._top5_buffer
        embedding = 0 if self._embedding is None else int(self._embedding.shape[1])
        self._group.attrs.update({**self._attributes, "skipped": self._skipped, "attention": self._has_attention,
                                  "embedding": embedding, "complete": True})
        if self.path.exists():
            shutil.rmtree(self.path)
        self.partial.rename(self.path)
        return self.path


class MapStore:
    """Read access to one complete store."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            group = zarr.open_group(self.path, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as error:
            raise StoreError(f"{self.path}: no map store here") from error
        self.attrs = dict(group.attrs)
        if self.attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path}: not a {FORMAT} store (format {self.attrs.get('format')!r})")
        if not self.attrs.get("complete"):
            raise StoreError(f"{self.path}: store is incomplete (its writer was interrupted)")
        self._maps, self._attention = group["maps"], group["attention"]
        self._embedding = group["embedding"] if self.attrs.get("embedding") else None
        self.attention_scale = np.asarray(group["attention_scale"][:])
        self.image_ids = np.array(group["image_id"][:].tolist(), dtype=str)
        self.scale = np.asarray(group["scale"][:])
        self.class_index = np.asarray(group["class_index"][:])
        self.valid = np.asarray(group["valid"][:])
        self.top5 = np.asarray(group["top5"][:])

    def __len__(self) -> int:
        return len(self.image_ids)

    def read(self, start: int, stop: int, attention: bool = False) -> np.ndarray:
        """Float32 maps (stop - start, S, S) of rows [start, stop); with ``attention``, (stop - start, 2, S, S):
        the sensitivity map, then the attention map."""
        maps = np.asarray(self._maps[start:stop], dtype=np.float32) * self.scale[start:stop, None, None]
        if not attention:
            return maps
        if not self.attrs.get("attention"):
            raise StoreError(f"{self.path}: this store has no attention maps (extract again)")
        extra = np.asarray(self._attention[start:stop], dtype=np.float32) * self.attention_scale[start:stop, None, None]
        return np.stack([maps, extra], axis=1)

    def read_embedding(self, start: int, stop: int) -> np.ndarray:
        """The classifier's embeddings (stop - start, D) float32 of rows [start, stop)."""
        if self._embedding is None:
            raise StoreError(f"{self.path}: this store has no classifier embeddings (extract again)")
        return np.asarray(self._embedding[start:stop], dtype=np.float32)


def iter_maps(
    paths: Iterable[str | Path], wanted: set[str] | None = None, batch_size: int = 1024, attention: bool = False,
    embedding: bool = False,
) -> Iterator[tuple]:
    """Yield ``(image_ids, maps)`` blocks over several stores, in store order, valid images only.

    ``wanted`` restricts to those image ids; at most ``batch_size`` maps are in memory at a time. With
    ``attention`` the maps are (n, 2, S, S) stacks (see :meth:`MapStore.read`); with ``embedding`` the
    blocks are ``(image_ids, maps, embeddings)``. The rows to keep are found once per store (not per block,
    whose cost would grow with ``len(wanted)`` and make a pass quadratic in N), and blocks without a kept row
    are not read.
    """
    wanted_ids = None if wanted is None else np.array(sorted(wanted), dtype=str)
    for path in paths:
        store = MapStore(path)
        kept = store.valid if wanted_ids is None else store.valid & np.isin(store.image_ids, wanted_ids)
        for start in range(0, len(store), batch_size):
            stop = min(start + batch_size, len(store))
            keep = kept[start:stop]
            if keep.any():
                block = (store.image_ids[start:stop][keep], store.read(start, stop, attention)[keep])
                yield block + (store.read_embedding(start, stop)[keep],) if embedding else block


def store_attributes(paths: Iterable[str | Path]) -> list[dict]:
    """Attributes of each store (used to check that shards were made the same way)."""
    return [MapStore(path).attrs for path in paths]


#: What the attention channel is (maps' provenance ``attention_of``): the Grad-CAM map of the class, for either
#: target (:mod:`sensitivity.maps`). Maps made before it existed recorded none; theirs was the target's.
ATTENTION_OF = "class"


def attention_of(provenance: dict) -> str:
    """Whose Grad-CAM the attention maps of maps made with ``provenance`` are: its ``attention_of``, or for maps made
    before it was recorded, the target's (``"gestalt"`` for the Gestalt Total, else ``"class"``)."""
    recorded = provenance.get("attention_of")
    if recorded is not None:
        return recorded
    return "gestalt" if provenance.get("target") == "gestalt" else "class"


#: The attributes that say how a store's maps were made; the shards of one dataset must agree on them.
PROVENANCE_KEYS = ("model", "weights", "target", "aggregate", "class_source", "preprocessing", "amp", "method",
                   "method_settings", "map_size", "format", "attention_of")


def map_provenance(paths: Iterable[str | Path]) -> dict:
    """How the maps of these stores were made (:data:`PROVENANCE_KEYS`; ``attention``: whether every store
    has the Grad-CAM channel; ``embedding``: the classifier embedding's dimension, 0 unless every store has it). Stores made differently are an error naming both and the first difference."""
    paths = list(paths)
    if not paths:
        raise StoreError("no map stores given")
    first = None
    attention = True
    embedding = 2**31
    for path in paths:
        attrs = MapStore(path).attrs
        made = {key: attrs.get(key) for key in PROVENANCE_KEYS}
        if made["method"] is None:  # stores written before map methods existed hold gradient maps
            made |= {"method": "gradient", "method_settings": {}}
        made["attention_of"] = attention_of(made)  # stores written before it was recorded
        if first is None:
            first = (path, made)
        elif made != first[1]:
            key = next(k for k in PROVENANCE_KEYS if made[k] != first[1][k])
            raise StoreError(f"{path}: maps made with {key}={made[key]!r}, but {first[0]} with {first[1][key]!r}; "
                             "extract the shards again with one setting")
        attention &= bool(attrs.get("attention"))
        embedding = min(embedding, int(attrs.get("embedding") or 0))
    return first[1] | {"attention": attention, "embedding": embedding}
