"""Which Grad-CAM map the shape box model's second channel should be, for Gestalt Total maps: the Total's own
(the channel mean of the last conv block, what extraction stored before ``attention_of`` existed) or the
predicted class's (what it stores now), by the fit stage's cross-validation over several fold seeds.

Both use the stored sensitivity map (channel 1) and the classifier's embedding (64 principal components
inside the ridge), scored by the fit stage's own cross-validation (``fit_alpha_path_folds``, ``held_out``); the Total's Grad-CAM is recomputed from the images
(one forward pass each). Prints 5-fold CV CorLoc (%) per alpha, mean ± std over the fold seeds. Run from the
repository root after ``make box-model`` (its stores hold the class's Grad-CAM), e.g.

    python benchmarks/attention_channel.py results/box_model --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sensitivity.evaluation import image_folds, labelled_rows
from sensitivity.images import read_image
from sensitivity.map_methods import compute_maps
from sensitivity.maps import pool_maps
from sensitivity.models import load_model
from sensitivity.pipeline.fit import held_out
from sensitivity.pipeline.rows import RowMaps
from sensitivity.regress import BoxRegressor, MapStack
from sensitivity.store import map_provenance

ALPHAS = (10.0, 100.0, 1000.0)


def gestalt_grad_cam(paths: list[str], map_size: int, made: dict, batch_size: int = 16) -> np.ndarray:
    """The Gestalt Total's Grad-CAM of each image (N, S, S) by the stores' network (its default weights), resized
    and pooled as extraction stores maps."""
    loaded = load_model(made["model"], None, torch.device("cpu"))
    if loaded.weights != made["weights"]:
        raise SystemExit(f"the stores' maps were made with weights {made['weights']!r}, here {loaded.weights!r}")
    transform = loaded.preprocessing.transform("squash")
    out = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([transform(read_image(p, max_side=2 * loaded.preprocessing.size))
                              for p in paths[start:start + batch_size]])
        out.append(pool_maps(compute_maps(loaded, images, "gradcam", target="gestalt").maps, map_size).numpy())
    return np.concatenate(out)


def cv_corloc(stack: MapStack, rows: pd.DataFrame, seed: int, folds: int = 5,
              loss: str = "squared") -> dict[float, float]:
    """5-fold CV CorLoc (%) per alpha of the fit stage's shape candidate (64 embedding components, ``loss``) on
    ``stack``, with its folds, its one-pass fold fits and its held-out scoring."""
    fold = pd.Series(image_folds(rows, folds, seed), index=rows.index)
    targets = np.stack(rows["target_box"].to_numpy())
    base = BoxRegressor(features="shape", target="corners", embedding_components=64, loss=loss)
    per_fold = base.fit_alpha_path_folds([(stack, targets, fold.to_numpy())], ALPHAS, folds)
    scores = held_out(per_fold, [(rows, stack)], fold).fold_corloc(0.5).mean(axis=1)
    return {alpha: 100 * float(score) for alpha, score in zip(ALPHAS, scores)}


def fitting_rows(results: Path, stores: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The train + val rows of a results folder, their (N, 2, S, S) map stacks and embeddings (float64)."""
    rows = labelled_rows(results / "manifest.csv", results / "split.csv")
    rows = rows[rows["split"].isin(["train", "val"])]
    blocks = list(RowMaps(stores, rows, 4096, attention=True, embedding=True))
    rows = pd.concat([block for block, _ in blocks])
    maps = np.concatenate([m.maps for _, m in blocks])
    return rows, maps, np.concatenate([m.embedding for _, m in blocks]).astype(np.float64)


def parse_arguments(doc: str) -> argparse.Namespace:
    """``results`` (a dataset's results folder) and ``--seeds`` (fold seeds), with their maps' ``stores``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("results", type=Path, help="the dataset's results folder, e.g. results/box_model")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    args.stores = sorted(str(p) for p in (args.results / "maps").glob("*.zarr"))
    return args


def print_over_seeds(name: str, stack: MapStack, rows: pd.DataFrame, seeds: list[int], loss: str = "squared") -> None:
    """One line: the CV CorLoc per alpha of :func:`cv_corloc`, mean ± std over the fold ``seeds``."""
    per_seed = [cv_corloc(stack, rows, seed, loss=loss) for seed in seeds]
    cells = ", ".join(f"α {alpha:g}: {np.mean([s[alpha] for s in per_seed]):.1f} ± "
                      f"{np.std([s[alpha] for s in per_seed]):.1f}" for alpha in ALPHAS)
    print(f"{name}: {cells} (5-fold CV CorLoc %, fold seeds {seeds})", flush=True)


def main() -> None:
    args = parse_arguments(__doc__)
    stores = args.stores
    made = map_provenance(stores)
    if made["target"] != "gestalt" or made["attention_of"] != "class":
        raise SystemExit(f"{args.results}: needs Gestalt Total maps with the class's Grad-CAM, got {made}")
    rows, maps, embedding = fitting_rows(args.results, stores)
    channels = {"Gestalt Total's Grad-CAM": gestalt_grad_cam(rows["path"].tolist(), maps.shape[-1], made),
                "the predicted class's Grad-CAM": maps[:, 1]}
    for name, attention in channels.items():
        print_over_seeds(name, MapStack(np.stack([maps[:, 0], attention], axis=1), embedding), rows, args.seeds)


if __name__ == "__main__":
    main()
