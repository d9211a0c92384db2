"""Zarr v3 layouts for a map array: chunks of 64 maps (what `MapStoreWriter` does) against alternatives.

Writes the same N float16 maps (Zstd level 3, as the stores) with each layout, then reads them back and
reports, per layout:

- writing, in batches of ``--write-batch`` maps (the extraction's batch size; each batch is one slice
  assignment): maps/s, and the bytes handed to ``write()`` per map (``wchar`` of /proc/self/io: a partial
  write into a shard rewrites the whole shard, so this shows the write amplification);
- disk: files per 1,000 maps, bytes per map in files, bytes per map on disk as ``du`` counts them (files
  and directories, whole blocks);
- reading as the fit stage does (``iter_maps``: consecutive blocks of ``--block`` maps, float32), first
  cold (the store's pages dropped from the page cache with ``posix_fadvise``, after an ``fsync``) and
  then again warm;
- reading random single maps (``--singles`` of them, cold, then warm): ms per map.

Maps are random uniform by default; ``--maps-from STORE ...`` tiles the (float16, max-normalised) maps of
existing map stores instead, so that compression is that of real sensitivity maps. Run from the
repository root:

    python benchmarks/bench_zarr_chunks.py [--n 20000] [--maps-from results/demo/maps/*.zarr] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import ZstdCodec


def written_bytes() -> int:
    """Bytes this process has passed to write() so far (Linux /proc/self/io ``wchar``)."""
    with open("/proc/self/io") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("wchar"))


def disk_usage(folder: Path) -> tuple[int, int, int]:
    """(files, sum of file sizes, bytes allocated on disk by files and directories, as `du`)."""
    files = apparent = allocated = 0
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            info = os.lstat(os.path.join(root, name))
            allocated += info.st_blocks * 512
        for name in names:
            files += 1
            apparent += os.lstat(os.path.join(root, name)).st_size
    return files, apparent, allocated


def drop_from_page_cache(folder: Path) -> None:
    """Flush the files under ``folder`` to disk and ask the kernel to forget their cached pages."""
    for root, _, names in os.walk(folder):
        for name in names:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def tiled_maps(paths: list[Path], n: int) -> tuple[np.ndarray, int]:
    """``n`` float16 maps as the stores hold them (max-normalised): the valid maps of the map stores
    ``paths``, repeated; and how many distinct maps there were."""
    stored = []
    for path in paths:
        group = zarr.open_group(path, mode="r")
        stored.append(np.asarray(group["maps"][:], dtype=np.float16)[np.asarray(group["valid"][:])])
    maps = np.concatenate(stored)
    return maps[np.arange(n) % len(maps)], len(maps)


def read_blocks(array, n: int, block: int) -> float:
    start = time.perf_counter()
    for first in range(0, n, block):
        np.asarray(array[first:first + block], dtype=np.float32)
    return n / (time.perf_counter() - start)


def read_singles(array, rows: np.ndarray) -> float:
    start = time.perf_counter()
    for row in rows:
        np.asarray(array[int(row)], dtype=np.float32)
    return 1e3 * (time.perf_counter() - start) / len(rows)


def measure(layout: dict, maps: np.ndarray, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    n = maps.shape[0]
    path = folder / "maps.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    array = group.create_array("maps", shape=maps.shape, dtype="float16", compressors=ZstdCodec(level=3),
                               fill_value=0, **layout)
    wchar, start = written_bytes(), time.perf_counter()
    for first in range(0, n, args.write_batch):
        array[first:first + args.write_batch] = maps[first:first + args.write_batch]
    write_s, wchar = time.perf_counter() - start, written_bytes() - wchar
    files, apparent, allocated = disk_usage(path)
    rows = np.random.default_rng(1).integers(0, n, args.singles)
    drop_from_page_cache(path)
    reader = zarr.open_group(path, mode="r")["maps"]
    cold_blocks = read_blocks(reader, n, args.block)
    warm_blocks = read_blocks(reader, n, args.block)
    drop_from_page_cache(path)
    reader = zarr.open_group(path, mode="r")["maps"]
    cold_single = read_singles(reader, rows)
    warm_single = read_singles(reader, rows)
    assert np.array_equal(reader[n - 1], maps[n - 1])
    return {"write_maps_per_s": n / write_s, "written_bytes_per_map": wchar / n, "files_per_1000_maps": 1e3 * files / n,
            "file_bytes_per_map": apparent / n, "disk_bytes_per_map": allocated / n,
            "cold_read_maps_per_s": cold_blocks, "warm_read_maps_per_s": warm_blocks,
            "cold_single_map_ms": cold_single, "warm_single_map_ms": warm_single}


def markdown(results: dict[str, dict[str, float]]) -> str:
    lines = ["| layout | write maps/s | written B/map | files / 1000 maps | B/map in files | B/map on disk "
             "| block read maps/s cold | warm | one map ms cold | warm |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['write_maps_per_s']:.0f} | {r['written_bytes_per_map']:.0f} "
                     f"| {r['files_per_1000_maps']:.0f} | {r['file_bytes_per_map']:.0f} "
                     f"| {r['disk_bytes_per_map']:.0f} "
                     f"| {r['cold_read_maps_per_s']:.0f} | {r['warm_read_maps_per_s']:.0f} "
                     f"| {r['cold_single_map_ms']:.2f} | {r['warm_single_map_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--map-size", type=int, default=56)
    parser.add_argument("--block", type=int, default=1024, help="maps per block read (iter_maps' batch size)")
    parser.add_argument("--write-batch", type=int, default=16, help="maps per write (extraction.batch_size)")
    parser.add_argument("--singles", type=int, default=500, help="random single maps read")
    parser.add_argument("--maps-from", type=Path, nargs="+", help="map stores whose maps are tiled to --n")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    s = args.map_size
    if args.maps_from:
        maps, distinct = tiled_maps(args.maps_from, args.n)
        s = maps.shape[-1]
        source = f"the {distinct} real maps of {len(args.maps_from)} stores, repeated"
    else:
        maps = np.random.default_rng(0).random((args.n, s, s), dtype=np.float32).astype(np.float16)
        source = "random uniform"
    layouts = {
        "one chunk per map (MapStoreWriter before)": {"chunks": (1, s, s)},
        f"shards of {args.block} maps (one per read block), one inner chunk per map":
            {"chunks": (1, s, s), "shards": (args.block, s, s)},
        f"shards of {args.block} maps, inner chunks of 64 maps": {"chunks": (64, s, s), "shards": (args.block, s, s)},
        "chunks of 16 maps": {"chunks": (16, s, s)},
        "chunks of 64 maps (MapStoreWriter now)": {"chunks": (64, s, s)},
    }
    results = {}
    for name, layout in layouts.items():
        with tempfile.TemporaryDirectory(prefix="bench_zarr_", dir=args.dir) as folder:
            results[name] = measure(layout, maps, args, Path(folder))
    print(f"{args.n} maps {s}×{s} float16 ({source}), Zstd 3, zarr {zarr.__version__}; written in batches of "
          f"{args.write_batch}, read in blocks of {args.block} and as {args.singles} random single maps\n")
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "source": source,
                                         "zarr": zarr.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
