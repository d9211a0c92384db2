"""How the test CorLoc varies with the split seed: the split, fit and evaluate stages rerun per seed on the
same maps (maps do not depend on the split)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from sensitivity.pipeline.evaluate import METHODS, evaluate
from sensitivity.pipeline.fit import fit_regressor
from sensitivity.pipeline.split import make_split
from sensitivity.pipeline.tables import ALL, AVERAGE, to_markdown


def seed_study(manifest_path: str | Path, stores: Sequence[str | Path], fractions: Sequence[float],
               seeds: Sequence[int], regression: dict, evaluation: dict, table_csv: str | Path,
               table_md: str | Path, title: str = "") -> pd.DataFrame:
    """One row per seed (and ``mean`` / ``std`` rows): Average CorLoc and all-images CorLoc of every method
    on that seed's test split, with the box model chosen on that seed's val split, as the workflow does."""
    heuristic = evaluation["heuristic"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="seeds-") as scratch:
        for seed in seeds:
            folder = Path(scratch) / str(seed)
            folder.mkdir()
            make_split(manifest_path, folder / "split.csv", list(fractions), seed)
            model = fit_regressor(manifest_path, folder / "split.csv", list(stores), folder / "regressor.npz",
                                  folder / "summary.json", grid=regression["grid"], solver=regression["solver"],
                                  sgd=regression["sgd"] if regression["solver"] == "sgd" else None,
                                  iou_threshold=evaluation["iou_threshold"])
            table = evaluate(manifest_path, folder / "split.csv", list(stores), folder / "regressor.npz",
                             folder / "predictions.csv", folder / "corloc.csv", folder / "corloc.md",
                             sigma=heuristic["sigma"], fraction=heuristic["fraction"],
                             iou_threshold=evaluation["iou_threshold"]).set_index("class")
            row = {"seed": str(seed), "n_test": int(table.loc[ALL, "n_images"]), "box_model": model.features}
            for method in METHODS:
                row[f"average_{method}"] = table.loc[AVERAGE, f"corloc_{method}"]
                row[f"all_{method}"] = table.loc[ALL, f"corloc_{method}"]
            rows.append(row)
    frame = pd.DataFrame(rows)
    numbers = [c for c in frame.columns if c.startswith(("average_", "all_"))]
    summary = [{"seed": name, **getattr(frame[numbers], name)().to_dict()} for name in ("mean", "std")]
    frame = pd.concat([frame, pd.DataFrame(summary)], ignore_index=True)
    frame.to_csv(table_csv, index=False, float_format="%.4f")
    shown = frame.assign(n_test=[str(int(n)) if pd.notna(n) else "" for n in frame["n_test"]],
                         box_model=frame["box_model"].fillna(""))
    Path(table_md).write_text(to_markdown(shown, title) + "\naverage_*: mean over classes (the paper's Average "
                              "CorLoc); all_*: over all test images. box_model: the regression's features, chosen "
                              "on that seed's val split.\n")
    return frame
