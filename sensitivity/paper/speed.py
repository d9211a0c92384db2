"""§3.7 speed: images per second of the classifier's forward pass, of a sensitivity map (forward +
backward) and of the whole image → box path, and their ratio to the forward pass.

The paper argues the whole path costs "little more than twice" a classification. This measures it on
one batch of real, already decoded and preprocessed images (decoding and resizing are left out: they
are the same for every stage), on the device given:

- ``forward``: the full classifier under ``torch.inference_mode`` (the classification alone);
- ``map + class``: :func:`sensitivity.maps.sensitivity` for the target and aggregation, with the class
  scores (the Gestalt target's backward pass starts at the attention map; its class comes from running
  the head on that map, which costs only the head);
- ``image → box``: ``map`` plus pooling the map to the stored size and the map → box regressor(s);
- ``map → box only``: the regressor alone on the pooled maps (the "one cheap mapping").

Timing is :mod:`sensitivity.speed`'s, as for the workflow's ``results/speed.csv``: after ``warmup`` untimed
rounds, the stages are timed in ``repeats`` interleaved rounds, each starting at another stage, so that slow
drifts of a shared machine hit every stage alike; a stage's time is the median over rounds and its time ÷
forward the median over rounds of that round's ratio. CUDA work is synchronised before each clock read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sensitivity.box_model import BoxModel, load_box_model
from sensitivity.maps import pool_maps, sensitivity
from sensitivity.models import LoadedModel
from sensitivity.speed import (
    forward_stage,
    load_average,
    machine_description,
    summarise,
    time_interleaved,
    timing_setup,
)

FORWARD = ("forward (classification)", "")


def measure_speed(model: LoadedModel, images: torch.Tensor, targets: Sequence[str], aggregate: str, map_size: int,
                  regressors: Mapping[str, Callable[[np.ndarray], np.ndarray]], warmup: int = 2,
                  repeats: int = 7) -> pd.DataFrame:
    """Images/s of each stage for one batch ``images`` (B, 3, H, W) already on the model's device.

    Stages, all interleaved in every round: the forward pass; for each target, ``map + class`` and, for
    each of ``regressors`` (name → function from pooled maps (B, S, S) to boxes (B, 4)), ``image → box``;
    and ``map → box only`` per regressor (on fixed pooled maps). Returns one row per stage with the
    median seconds per batch, images/s, ms/image and the median ratio of its time to the forward pass.
    """
    batch = len(images)

    def maps(target: str):
        return sensitivity(model, images, target, aggregate, with_logits=True).maps

    def pooled(target: str) -> np.ndarray:
        return pool_maps(maps(target), map_size).cpu().numpy()

    stages: dict[tuple[str, str], Callable[[], object]] = {FORWARD: forward_stage(model, images)}
    for target in targets:
        stages[("map + class (forward + backward)", target)] = lambda target=target: maps(target)
        for name, regress in regressors.items():
            stages[(f"image → box ({name})", target)] = lambda target=target, regress=regress: regress(pooled(target))
    sample = pooled(targets[0])
    for name, regress in regressors.items():
        stages[(f"map → box only ({name})", "")] = lambda regress=regress: regress(sample)
    times = time_interleaved(stages, images.device, warmup, repeats, rotate=True)
    return pd.DataFrame([
        {"stage": row["stage"][0], "target": row["stage"][1], "aggregate": aggregate, "batch_size": batch,
         "seconds_per_batch": row["seconds_per_batch"], "images_per_s": row["images_per_s"],
         "ms_per_image": 1000 * row["seconds_per_batch"] / batch, "time_vs_forward": row["ratio_to_forward"],
         "repeats": row["repeats"], "spread_s": row["spread_s"]}
        for row in summarise(times, batch, reference=FORWARD)])


def speed_analysis(manifest_path: str | Path, splits_path: str | Path, model_paths: Mapping[str, str | Path],
                   model: dict, map_size: int, speed_path: str | Path, machine_path: str | Path, batch_size: int = 16,
                   warmup: int = 2, repeats: int = 7, device: str = "cpu", threads: int = 1) -> pd.DataFrame:
    """§3.7 on the first ``batch_size`` test images: both targets, aggregated as the first box model's maps.

    ``model_paths``: name → the study's box model file (:func:`~sensitivity.box_model.load_box_model`), the
    first the paper's linear map on the dataset's own maps. (The aggregation's cost, max or mean over three
    colour channels, is the same either way.)"""
    from sensitivity.evaluation import labelled_rows

    rows = labelled_rows(manifest_path).drop_duplicates("image_id")
    splits = pd.read_csv(splits_path, dtype=str)
    first_seed = next(c for c in splits.columns if c.startswith("seed"))
    test_ids = set(splits.loc[splits[first_seed] == "test", "image_id"])
    loaded, images = timing_setup(rows.loc[rows["image_id"].isin(test_ids), "path"], model, batch_size, device,
                                  threads)
    models = {name: load_box_model(path) for name, path in model_paths.items()}
    regressors = {_label(name, m): m.predict for name, m in models.items()}
    aggregate = next(iter(models.values())).provenance_["aggregate"]
    load_before = load_average()
    table = measure_speed(loaded, images, ("class", "gestalt"), aggregate, map_size, regressors, warmup, repeats)
    table.insert(0, "device", str(images.device))
    table.to_csv(speed_path, index=False, float_format="%.6g")
    machine = machine_description() | {"device": str(images.device), "model": loaded.name, "weights": loaded.weights,
                                       "batch_size": len(images), "input_size": loaded.preprocessing.size,
                                       # Other processes on the machine slow every stage (and skew the ratios).
                                       "load_average_1min": [load_before, load_average()]}
    Path(machine_path).write_text(json.dumps(machine, indent=2) + "\n")
    return table


def _label(name: str, model: BoxModel) -> str:
    """``name``, and the study's variant where the model records it (``best: <variant>``)."""
    study = (getattr(model, "fitted_on_", None) or {}).get("study")
    return f"{name}: {study['variant']}" if study and name == "best" else name
