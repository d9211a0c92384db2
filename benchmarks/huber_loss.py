"""Least squares against the Huber loss for the shipped box model's candidate (shape descriptors of the map and
the class's Grad-CAM, 64 embedding components), by the fit stage's cross-validation over several fold seeds.

Prints 5-fold CV CorLoc (%) per alpha, mean ± std over the fold seeds, for each loss. Run from the repository
root after ``make box-model``, e.g.

    python benchmarks/huber_loss.py results/box_model --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from attention_channel import ALPHAS, cv_corloc, fitting_rows

from sensitivity.regress import LOSSES, MapStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="the dataset's results folder, e.g. results/box_model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    stores = sorted(str(p) for p in (args.results / "maps").glob("*.zarr"))
    rows, maps, embedding = fitting_rows(args.results, stores)
    stack = MapStack(maps, embedding)
    for loss in LOSSES:
        per_seed = [cv_corloc(stack, rows, seed, loss=loss) for seed in args.seeds]
        cells = ", ".join(f"α {alpha:g}: {np.mean([s[alpha] for s in per_seed]):.1f} ± "
                          f"{np.std([s[alpha] for s in per_seed]):.1f}" for alpha in ALPHAS)
        print(f"{loss} loss: {cells} (5-fold CV CorLoc %, fold seeds {args.seeds})", flush=True)


if __name__ == "__main__":
    main()
