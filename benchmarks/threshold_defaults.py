"""The map threshold τ of `sensitivity localize`'s threshold box, per map method, chosen on a dataset's non-test
images (train + val) from the stores the comparison target wrote.

For each map method, τ is the threshold whose largest-contour box (wsolevaluation's V1 box) has the highest
box accuracy at IoU 0.5 on those images, the lowest on ties (:func:`sensitivity.pipeline.methods.choose_on`).
The printed dictionary is ``sensitivity.localize.DEFAULT_THRESHOLDS``. Run from the repository root after
``snakemake --cores 2 results/imagenet_methods.csv --configfile configs/imagenet_sample.yaml``:

    python benchmarks/threshold_defaults.py results/imagenet --thresholds 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sensitivity.evaluation import labelled_rows
from sensitivity.map_methods import list_map_methods
from sensitivity.pipeline.methods import choose_on


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="results/<dataset> (its manifest, split and maps)")
    parser.add_argument("--thresholds", type=int, default=100, help="τ = 0, 1/n, ..., (n - 1)/n")
    args = parser.parse_args(argv)
    rows = labelled_rows(args.dataset / "manifest.csv", args.dataset / "split.csv")
    rows = rows[rows["split"] != "test"]
    taus = np.arange(args.thresholds) / args.thresholds
    chosen = {}
    for method in list_map_methods():
        folder = args.dataset if method == "gradient" else args.dataset.with_name(f"{args.dataset.name}__{method}")
        stores = sorted((folder / "maps").glob("*.zarr"))
        if stores:
            chosen[method] = choose_on(stores, rows, taus, [50])["box"]
    print(f"{len(rows)} train + val rows of {args.dataset}")
    print(chosen)


if __name__ == "__main__":
    main()
