"""A dataset's own box model (the fit stage, per split seed) against the shipped box model as it is, on the same
test photos: is the workflow's model no worse than the default `sensitivity localize` applies?

Run from the repository root after the dataset's maps exist (e.g. ``snakemake --cores 2 results/shared_corloc.csv
--configfile configs/shared_folder.yaml``):

    python benchmarks/workflow_vs_shipped.py shared [--seeds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import yaml

from sensitivity.box_model import load_box_model
from sensitivity.boxes import correct_localizations
from sensitivity.evaluation import labelled_rows
from sensitivity.localize import DEFAULT_BOX_MODEL
from sensitivity.pipeline.fit import fit_regressor
from sensitivity.pipeline.rows import RowMaps
from sensitivity.pipeline.split import make_split


def corloc_on(model, stores: list[str], rows) -> float:
    """CorLoc (%) of ``model`` on ``rows`` (their maps with Grad-CAM and embedding)."""
    correct = []
    for block, maps in RowMaps(stores, rows, 1024, attention=True, embedding=True):
        correct += list(correct_localizations(model.predict(maps), list(block["gt"]), 0.5))
    return 100 * float(np.mean(correct))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="results/<dataset> holds its manifest and maps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    config = yaml.safe_load(Path("config.yaml").read_text())
    regression = config["regression"]
    fractions = config["datasets"][args.dataset]["split"]["fractions"]
    manifest = f"results/{args.dataset}/manifest.csv"
    stores = sorted(str(p) for p in Path(f"results/{args.dataset}/maps").glob("*.zarr"))
    shipped = load_box_model(DEFAULT_BOX_MODEL)
    scores = []
    print("| seed | chosen by CV (CV CorLoc) | workflow's model, test % | shipped model as it is, test % |")
    print("|---:|---|---:|---:|")
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            make_split(manifest, folder / "split.csv", fractions, seed)
            model = fit_regressor(manifest, folder / "split.csv", stores, folder / "m.npz", folder / "s.json",
                                  grid=regression["grid"], selection=regression["selection"],
                                  prior=regression["prior"], ensemble=regression["ensemble"])
            summary = json.loads((folder / "s.json").read_text())
            rows = labelled_rows(manifest, folder / "split.csv")
            test = rows[rows["split"] == "test"]
            pair = corloc_on(model, stores, test), corloc_on(shipped, stores, test)
        scores.append(pair)
        chosen = summary["chosen"]
        what = "ensemble" if "ensemble" in chosen else f"{chosen.get('start') or 'grid'}, alpha {chosen['alpha']:g}"
        print(f"| {seed} | {what} ({100 * summary['score']:.1f}) | {pair[0]:.1f} | {pair[1]:.1f} |", flush=True)
    own, default = np.array(scores).T
    if len(scores) > 1:
        print(f"| mean ± std | | {own.mean():.1f} ± {own.std(ddof=1):.1f} | {default.mean():.1f} ± "
              f"{default.std(ddof=1):.1f} |")
        print(f"paired difference: {np.mean(own - default):+.1f} ± {np.std(own - default, ddof=1):.1f} points")


if __name__ == "__main__":
    main()
