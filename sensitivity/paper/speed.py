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

After ``warmup`` untimed rounds, the stages are timed in interleaved rounds (forward, map, path, forward,
...), so that slow drifts of a shared machine hit every stage alike; the median of ``repeats`` rounds is
reported. CUDA work is synchronised before each clock read.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sensitivity.maps import pool_maps, sensitivity
from sensitivity.models import LoadedModel
from sensitivity.paper.variants import caching
from sensitivity.speed import load_batch, machine_description, time_interleaved

__all__ = ["machine_description", "measure_speed", "speed_analysis", "time_interleaved"]


def measure_speed(model: LoadedModel, images: torch.Tensor, targets: Sequence[str], aggregate: str, map_size: int,
                  regressors: Mapping[str, Callable[[np.ndarray], np.ndarray]], warmup: int = 2,
                  repeats: int = 7) -> pd.DataFrame:
    """Images/s of each stage for one batch ``images`` (B, 3, H, W) already on the model's device.

    Stages, all interleaved in every round: the forward pass; for each target, ``map + class`` and, for
    each of ``regressors`` (name → function from pooled maps (B, S, S) to boxes (B, 4)), ``image → box``;
    and ``map → box only`` per regressor (on fixed pooled maps). Returns one row per stage with the
    median seconds per batch, images/s, ms/image and the ratio of its time to the forward pass.
    """
    device = images.device
    network = model.network
    images = model.layout(images)  # the forward gets the batch as the maps do
    batch = len(images)

    def forward():
        with torch.inference_mode():
            return network(images)

    def maps(target: str):
        return sensitivity(model, images, target, aggregate, with_logits=True).maps

    def pooled(target: str) -> np.ndarray:
        return pool_maps(maps(target), map_size).cpu().numpy()

    stages: dict[tuple[str, str], Callable[[], object]] = {("forward (classification)", ""): forward}
    for target in targets:
        stages[("map + class (forward + backward)", target)] = lambda target=target: maps(target)
        for name, regress in regressors.items():
            stages[(f"image → box ({name})", target)] = lambda target=target, regress=regress: regress(pooled(target))
    sample = pooled(targets[0])
    for name, regress in regressors.items():
        stages[(f"map → box only ({name})", "")] = lambda regress=regress: regress(sample)
    with caching(False):  # time the features, not the memo
        times = time_interleaved(stages, device, warmup, repeats)
    forward_time = statistics.median(times[("forward (classification)", "")])
    rows = []
    for (name, target), values in times.items():
        median = statistics.median(values)
        rows.append({"stage": name, "target": target, "aggregate": aggregate, "batch_size": batch,
                     "seconds_per_batch": median, "images_per_s": batch / median,
                     "ms_per_image": 1000 * median / batch, "time_vs_forward": median / forward_time,
                     "repeats": repeats, "spread_s": max(values) - min(values)})
    return pd.DataFrame(rows)


def speed_analysis(manifest_path: str | Path, splits_path: str | Path, models_path: str | Path, model: dict,
                   map_size: int, speed_path: str | Path, machine_path: str | Path, batch_size: int = 16,
                   warmup: int = 2, repeats: int = 7, device: str = "cpu", threads: int = 1) -> pd.DataFrame:
    """§3.7 on the first ``batch_size`` test images: both targets, the dataset's aggregation."""
    from sensitivity.models import load_model
    from sensitivity.evaluation import labelled_rows
    from sensitivity.paper.bank import MAP_VARIANTS
    from sensitivity.models import resolve_device

    torch.set_num_threads(max(1, threads))
    torch_device = resolve_device(device)
    loaded = load_model(model["name"], model.get("weights"), torch_device)
    rows = labelled_rows(manifest_path).drop_duplicates("image_id")
    splits = pd.read_csv(splits_path, dtype=str)
    first_seed = next(c for c in splits.columns if c.startswith("seed"))
    test_ids = set(splits.loc[splits[first_seed] == "test", "image_id"])
    test_paths = rows.loc[rows["image_id"].isin(test_ids), "path"]
    images = load_batch(test_paths, loaded, batch_size, torch_device)
    with open(models_path, "rb") as fh:
        models = pickle.load(fh)

    def regressor(estimator):
        def run(maps: np.ndarray) -> np.ndarray:  # the same maps in every variant slot (timing only)
            return estimator.predict(np.repeat(maps[:, None], len(MAP_VARIANTS), axis=1))
        return run

    regressors = {"linear map": regressor(models["linear"]), f"best: {models['best_name']}": regressor(models["best"])}
    aggregate = models["primary"].split("_")[1]
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    table = measure_speed(loaded, images, ("class", "gestalt"), aggregate, map_size, regressors, warmup, repeats)
    table.insert(0, "device", str(torch_device))
    table.to_csv(speed_path, index=False, float_format="%.6g")
    machine = machine_description() | {"device": str(torch_device), "model": loaded.name, "weights": loaded.weights,
                                       "batch_size": len(images), "input_size": loaded.preprocessing.size,
                                       # Other processes on the machine slow every stage (and skew the ratios).
                                       "load_average_1min": [load_before,
                                                             os.getloadavg()[0] if hasattr(os, "getloadavg") else None]}
    Path(machine_path).write_text(json.dumps(machine, indent=2) + "\n")
    return table
