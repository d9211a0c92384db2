"""iter_maps at scale: the ``wanted`` filter costs one membership pass per store, not one per block, and blocks
without a wanted row are not read, while the rows streamed stay exactly the wanted valid ones in store order."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.store import MapStore, MapStoreWriter, iter_maps


@pytest.fixture
def stores(tmp_path) -> list:
    """Two stores of 40 and 30 random 4×4 maps; rows 5 and 33 of the first are skipped (invalid)."""
    rng = np.random.default_rng(0)
    paths = []
    for k, n in enumerate((40, 30)):
        ids = [f"s{k}_{i:03d}" for i in range(n)]
        writer = MapStoreWriter(tmp_path / f"{k}.zarr", ids, 4, {"model": "test"})
        skipped = {5, 33} if k == 0 else set()
        rows = np.array([i for i in range(n) if i not in skipped])
        writer.write(rows, rng.random((len(rows), 4, 4)) + 0.1)
        for i in sorted(skipped):
            writer.skip(ids[i], f"{ids[i]}.jpg", "unreadable")
        paths.append(writer.close())
    return paths


def test_wanted_rows_streamed_in_store_order(stores) -> None:
    wanted = {"s0_004", "s0_005", "s0_006", "s0_039", "s1_000", "s1_017", "absent"}
    blocks = list(iter_maps(stores, wanted, batch_size=8))
    ids = [i for block_ids, _ in blocks for i in block_ids]
    assert ids == ["s0_004", "s0_006", "s0_039", "s1_000", "s1_017"]  # s0_005 is invalid
    first = MapStore(stores[0])
    by_id = {i: first.read(r, r + 1)[0] for r, i in enumerate(first.image_ids)}
    np.testing.assert_array_equal(blocks[0][1], np.stack([by_id["s0_004"], by_id["s0_006"]]))


def test_wanted_filter_is_one_pass_per_store_and_skips_empty_blocks(stores, monkeypatch) -> None:
    calls = {"isin": 0, "read": []}
    isin, read = np.isin, MapStore.read

    def counting_isin(*args, **kwargs):
        calls["isin"] += 1
        return isin(*args, **kwargs)

    def recording_read(self, start, stop, attention=False):
        calls["read"].append((self.path.name, start))
        return read(self, start, stop, attention)

    monkeypatch.setattr(np, "isin", counting_isin)
    monkeypatch.setattr(MapStore, "read", recording_read)
    list(iter_maps(stores, {"s0_010", "s1_029"}, batch_size=8))
    assert calls["isin"] == len(stores)
    assert calls["read"] == [("0.zarr", 8), ("1.zarr", 24)]
