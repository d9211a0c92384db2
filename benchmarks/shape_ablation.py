"""Which map channels the shape box model needs: shape features of the sensitivity map alone, of the
Grad-CAM map alone and of both, over several split seeds, on a dataset the workflow has extracted.

Each model is standardised ridge (``BoxRegressor(features="shape")``) with alpha chosen on val; the
test Average CorLoc (%) is printed per seed and as mean ± std. Run from the repository root after the
workflow's extraction, e.g.

    python benchmarks/shape_ablation.py results/imagenet
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.boxes import correct_localizations
from sensitivity.evaluation import labelled_rows
from sensitivity.pipeline.rows import RowMaps
from sensitivity.pipeline.split import make_split
from sensitivity.regress import BoxRegressor

CHANNELS = {"sensitivity map": [0], "Grad-CAM map": [1], "both": [0, 1]}
ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def split_data(manifest: Path, stores: list[Path], seed: int, fractions: list[float], scratch: Path) -> dict:
    make_split(manifest, scratch / "split.csv", fractions, seed)
    rows = labelled_rows(manifest, scratch / "split.csv")
    data = {}
    for part in ("train", "val", "test"):
        blocks = list(RowMaps(stores, rows[rows["split"] == part], 4096, attention=True))
        block_rows = pd.concat([b for b, _ in blocks])
        data[part] = (np.concatenate([m for _, m in blocks]), np.stack(block_rows["target_box"].to_numpy()),
                      list(block_rows["gt"]), block_rows["label"].to_numpy())
    return data


def average_corloc(model: BoxRegressor, part: tuple, channels: list[int]) -> float:
    X, _, gt, labels = part
    correct = correct_localizations(model.predict(X[:, channels]), gt, 0.5)
    return 100.0 * pd.Series(correct).groupby(labels).mean().mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="results/<dataset> (manifest.csv and maps/*.zarr)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--fractions", type=float, nargs=3, default=[0.75, 0.125, 0.125])
    args = parser.parse_args()
    stores = sorted((args.results / "maps").glob("*.zarr"))
    table = {name: [] for name in CHANNELS}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            data = split_data(args.results / "manifest.csv", stores, seed, args.fractions, Path(scratch))
            for name, channels in CHANNELS.items():
                fitted = [BoxRegressor(features="shape", alpha=a).fit(data["train"][0][:, channels], data["train"][1])
                          for a in ALPHAS]
                best = max(fitted, key=lambda m: average_corloc(m, data["val"], channels))
                table[name].append(average_corloc(best, data["test"], channels))
    print("| shape features of | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | std |")
    print("|---|" + "---:|" * (len(args.seeds) + 2))
    for name, values in table.items():
        cells = [f"{v:.1f}" for v in values] + [f"{np.mean(values):.1f}", f"{np.std(values, ddof=1):.1f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
