"""Map stores for a large manifest, filled with real maps of a smaller run (for timing the stages after extraction).

Extraction costs the same per image at any N (docs/SCALE.md measures it on the real run); what changes with N
is the work of the stages that read the stores. This writes, for each shard ``k-of-n`` of ``MANIFEST`` (the
images :func:`~sensitivity.pipeline.extract.shard_images` gives that shard), a store at
``OUT/<k>-of-<n>.zarr`` whose rows are the maps, Grad-CAM maps, classes and top-5 of the ``--from`` stores
reused in turn, with their provenance attributes. The maps do not belong to the images, so accuracies computed
from them mean nothing; sizes, files and costs are those of real maps. Run from the repository root:

    python benchmarks/replay_maps.py results/imagenet/manifest.csv results/imagenet/maps 2 --from small/*.zarr
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sensitivity.pipeline.extract import shard_images
from sensitivity.store import MapStore, MapStoreWriter

#: Attributes that belong to a store's own rows, not to how its maps were made.
OWN = ("format", "n_images", "map_size", "complete", "skipped", "attention", "shard")


def source_rows(paths: list[Path]) -> dict[str, np.ndarray]:
    """Every valid row of the source stores: maps, attention maps, classes and top-5."""
    parts: dict[str, list[np.ndarray]] = {"maps": [], "attention": [], "class_index": [], "top5": []}
    for path in paths:
        store = MapStore(path)
        valid = store.valid
        stacks = store.read(0, len(store), attention=True)[valid]
        parts["maps"].append(stacks[:, 0])
        parts["attention"].append(stacks[:, 1])
        parts["class_index"].append(store.class_index[valid])
        parts["top5"].append(store.top5[valid])
    return {key: np.concatenate(value) for key, value in parts.items()}


def replay(manifest: Path, out: Path, shards: int, sources: list[Path], batch_size: int = 16) -> list[Path]:
    """Write the ``shards`` stores of ``manifest`` under ``out`` from the rows of ``sources``; returns their paths."""
    rows = source_rows(sources)
    attributes = {k: v for k, v in MapStore(sources[0]).attrs.items() if k not in OWN}
    map_size = rows["maps"].shape[-1]
    out.mkdir(parents=True, exist_ok=True)
    written, offset = [], 0
    for k in range(1, shards + 1):
        shard = f"{k}-of-{shards}"
        images, _ = shard_images(manifest, shard)
        writer = MapStoreWriter(out / f"{shard}.zarr", images["image_id"].tolist(), map_size,
                                attributes | {"shard": shard})
        for start in range(0, len(images), batch_size):
            index = np.arange(start, min(start + batch_size, len(images)))
            take = (offset + index) % len(rows["maps"])
            writer.write(index, rows["maps"][take], rows["class_index"][take], rows["top5"][take],
                         rows["attention"][take])
        offset += len(images)
        written.append(writer.close())
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("out", type=Path, help="folder of the shard stores (results/<dataset>/maps)")
    parser.add_argument("shards", type=int)
    parser.add_argument("--from", dest="sources", type=Path, nargs="+", required=True, help="stores to reuse")
    args = parser.parse_args()
    for path in replay(args.manifest, args.out, args.shards, args.sources):
        print(path)


if __name__ == "__main__":
    main()
