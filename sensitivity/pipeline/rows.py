"""Labelled rows (:func:`sensitivity.evaluation.labelled_rows`) streamed with their maps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.regress import MapStack
from sensitivity.store import iter_maps


def own_maps(maps: np.ndarray | MapStack) -> np.ndarray:
    """The map method's own maps (n, S, S) of maps, of (n, C, S, S) stacks (their first channel) or of a
    :class:`~sensitivity.regress.MapStack`."""
    maps = maps.maps if isinstance(maps, MapStack) else maps
    return maps[:, 0] if maps.ndim == 4 else maps


class RowMaps:
    """Re-iterable stream of ``(rows, maps)`` blocks for a subset of rows.

    An image with several rows (several classes) has its map repeated once per row. At most one
    block of maps is in memory at a time. With ``attention`` the maps are (n, 2, S, S) stacks of the
    sensitivity map and the attention map; with ``embedding`` they come as a
    :class:`~sensitivity.regress.MapStack` with the classifier's embedding of each image.
    """

    def __init__(self, stores: Sequence[str | Path], rows: pd.DataFrame, batch_size: int = 1024,
                 attention: bool = False, embedding: bool = False) -> None:
        self.stores, self.rows, self.batch_size, self.attention = list(stores), rows, batch_size, attention
        self.embedding = embedding
        self._by_image = rows.groupby("image_id").indices

    def __iter__(self) -> Iterator[tuple[pd.DataFrame, np.ndarray | MapStack]]:
        for image_ids, maps, *embedding in iter_maps(self.stores, set(self._by_image), self.batch_size,
                                                     self.attention, self.embedding):
            positions = [self._by_image[i] for i in image_ids]
            repeat = np.array([len(p) for p in positions])
            block = self.rows.iloc[np.concatenate(positions)]
            maps = np.repeat(maps, repeat, axis=0)
            yield block, MapStack(maps, np.repeat(embedding[0], repeat, axis=0)) if embedding else maps

    def boxes(self) -> Iterator[tuple[np.ndarray | MapStack, np.ndarray]]:
        """``(maps, target boxes)`` batches, the input of ``BoxRegressor.fit_batches``."""
        for block, maps in self:
            yield maps, np.stack(block["target_box"].to_numpy())
