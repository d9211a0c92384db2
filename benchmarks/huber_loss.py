"""Least squares against the Huber loss for the shipped box model's candidate (shape descriptors of the map and
the class's Grad-CAM, 64 embedding components), by the fit stage's cross-validation over several fold seeds.

Prints 5-fold CV CorLoc (%) per alpha, mean ± std over the fold seeds, for each loss. Run from the repository
root after ``make box-model``, e.g.

    python benchmarks/huber_loss.py results/box_model --seeds 0 1 2 3 4
"""

from __future__ import annotations

from attention_channel import fitting_rows, parse_arguments, print_over_seeds

from sensitivity.regress import LOSSES, MapStack


def main() -> None:
    args = parse_arguments(__doc__)
    rows, maps, embedding = fitting_rows(args.results, args.stores)
    for loss in LOSSES:
        print_over_seeds(f"{loss} loss", MapStack(maps, embedding), rows, args.seeds, loss)


if __name__ == "__main__":
    main()
