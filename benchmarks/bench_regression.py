"""Cost of fitting the box regressor on many maps streamed from Zarr stores (paper: ImageNet, ~225k maps).

Writes N random maps (``--map-size`` 56) with :class:`MapStoreWriter` into shards of ``--shard-size``
maps in a temporary folder, then, for each pool in ``--pools``, in a fresh subprocess (so that each
configuration has its own peak RSS, ``ru_maxrss``):

fits ``BoxRegressor(solver="ridge", pool=pool)`` with ``fit_batches`` on ``(maps, boxes)`` batches
streamed by :func:`iter_maps` (random boxes), timing the whole fit (read + pool + normal equations +
solve) and, within it, the time spent waiting for :func:`iter_maps` (read maps/s; the stores were just
written, so they are in the page cache).

The write subprocess also times ``iter_maps`` over the first shard with ``wanted`` = all N image ids,
which is how the pipeline's ``RowMaps`` reads stores (its cost per batch grows with N). Random uniform
maps compress about as well as real ones (Zstd on float16). Run from the repository root:

    python benchmarks/bench_regression.py [--n 225000] [--pools 7 14 28] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SEED = 0


def stores(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.zarr"))


def random_boxes(n: int) -> np.ndarray:
    """(n, 4) valid boxes (x1, y1, x2, y2) in [0, 1], the same for every stage."""
    corners = np.random.default_rng(SEED).uniform(0, 1, size=(n, 2, 2))
    return np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)


def row_of(image_ids: np.ndarray) -> np.ndarray:
    return np.array([int(i[1:]) for i in image_ids])


def disk_bytes(folder: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes allocated on disk by files and directories, as `du`)."""
    apparent = allocated = 0
    for root, dirs, files in os.walk(folder):
        for name in files + dirs:
            info = os.lstat(os.path.join(root, name))
            allocated += info.st_blocks * 512
            apparent += info.st_size if name in files else 0
    return apparent, allocated


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def stage_write(args: argparse.Namespace) -> dict:
    """Write the shards; time writing and an iter_maps pass filtered by `wanted` (pipeline path)."""
    from sensitivity.store import MapStoreWriter, iter_maps

    rng = np.random.default_rng(SEED)
    written = 0.0
    for start in range(0, args.n, args.shard_size):
        ids = [f"m{i:07d}" for i in range(start, min(start + args.shard_size, args.n))]
        t0 = time.perf_counter()
        writer = MapStoreWriter(args.dir / f"{start // args.shard_size:03d}.zarr", ids, args.map_size,
                                {"model": "benchmark"})
        written += time.perf_counter() - t0
        for first in range(0, len(ids), args.write_batch):
            rows = np.arange(first, min(first + args.write_batch, len(ids)))
            maps = rng.random((len(rows), args.map_size, args.map_size), dtype=np.float32)
            t0 = time.perf_counter()
            writer.write(rows, maps)
            written += time.perf_counter() - t0
        t0 = time.perf_counter()
        writer.close()
        written += time.perf_counter() - t0
    apparent, allocated = disk_bytes(args.dir)
    wanted = {f"m{i:07d}" for i in range(args.n)}  # its cost per batch grows with len(wanted): time shard 1
    t0 = time.perf_counter()
    n_read = sum(len(ids) for ids, _ in iter_maps(stores(args.dir)[:1], wanted, args.read_batch))
    filtered_s = time.perf_counter() - t0
    return {"write_s": written, "apparent_bytes_per_map": apparent / args.n,
            "disk_bytes_per_map": allocated / args.n, "wanted_read_maps_per_s": n_read / filtered_s,
            "write_peak_rss_mib": peak_rss_mib()}


def stage_fit(args: argparse.Namespace) -> dict:
    """The ridge fit at `args.pool`, timing the whole fit and the share spent reading maps; peak RSS."""
    import torch

    from sensitivity.regress import BoxRegressor
    from sensitivity.store import iter_maps

    torch.set_num_threads(args.threads)
    boxes = random_boxes(args.n)
    reading = 0.0

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        nonlocal reading
        blocks = iter_maps(stores(args.dir), None, args.read_batch)
        while True:
            t0 = time.perf_counter()
            block = next(blocks, None)
            reading += time.perf_counter() - t0
            if block is None:
                return
            ids, maps = block
            yield maps, boxes[row_of(ids)]

    t0 = time.perf_counter()
    model = BoxRegressor(solver="ridge", pool=args.pool, batch_size=args.read_batch).fit_batches(batches())
    fit_s = time.perf_counter() - t0
    assert model.n_samples_seen_ == args.n
    return {"fit_s": fit_s, "read_s": reading, "read_maps_per_s": args.n / reading,
            "features": int(model.n_features_in_), "fit_peak_rss_mib": peak_rss_mib()}


def run_stage(stage: str, args: argparse.Namespace, pool: int | None = None) -> dict:
    """Run a stage in a fresh Python (own ru_maxrss, BLAS limited to --threads); return its JSON."""
    env = dict(os.environ, **{var: str(args.threads) for var in
                              ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    command = [sys.executable, __file__, "--stage", stage, "--dir", str(args.dir), "--n", str(args.n),
               "--map-size", str(args.map_size), "--shard-size", str(args.shard_size),
               "--write-batch", str(args.write_batch), "--read-batch", str(args.read_batch),
               "--threads", str(args.threads), "--pool", str(pool or 0)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"stage {stage} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(write: dict, fits: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Stores: {args.n} maps {args.map_size}×{args.map_size} float16 (Zstd 3, one chunk per map), "
        f"{-(-args.n // args.shard_size)} shards; written in {write['write_s']:.0f} s "
        f"({args.n / write['write_s']:.0f} maps/s, batches of {args.write_batch}); "
        f"{write['apparent_bytes_per_map']:.0f} B/map in files, {write['disk_bytes_per_map']:.0f} B/map on disk "
        f"(du, with directories); iter_maps with `wanted` = all ids (pipeline's RowMaps): "
        f"{write['wanted_read_maps_per_s']:.0f} maps/s.",
        "",
        "| N | pool | features | write s | B/map (disk) | read maps/s | fit s (reading) | fit maps/s | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fit in fits:
        lines.append(
            f"| {args.n} | {fit['pool']} | {fit['features']} | {write['write_s']:.0f} | "
            f"{write['disk_bytes_per_map']:.0f} | {fit['read_maps_per_s']:.0f} | {fit['fit_s']:.1f} ({fit['read_s']:.1f}) | "
            f"{args.n / fit['fit_s']:.0f} | {fit['fit_peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=225_000, help="number of maps")
    parser.add_argument("--pools", type=int, nargs="+", default=[7, 14, 28])
    parser.add_argument("--map-size", type=int, default=56)
    parser.add_argument("--shard-size", type=int, default=25_000, help="maps per store")
    parser.add_argument("--write-batch", type=int, default=16, help="maps per MapStoreWriter.write (extract's default)")
    parser.add_argument("--read-batch", type=int, default=1024, help="iter_maps / fit batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", type=Path, help="where to write the stores (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--stage", choices=("write", "fit"), help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage == "write":
        print(json.dumps(stage_write(args)))
        return
    if args.stage == "fit":
        print(json.dumps(stage_fit(args)))
        return
    with tempfile.TemporaryDirectory(prefix="bench_regression_", dir=args.dir) as folder:
        args.dir = Path(folder)
        write = run_stage("write", args)
        fits = [{"pool": pool, **run_stage("fit", args, pool)} for pool in args.pools]
    table = markdown(write, fits, args)
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "write": write,
                                         "fits": fits}, indent=2))


if __name__ == "__main__":
    main()
