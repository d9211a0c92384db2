"""The workflow's speed table (`results/speed.csv`) and the shared timing helpers, on real demo photos."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from sensitivity.datasets.manifest import make_manifest, write_manifest
from sensitivity.regress import BoxRegressor
from sensitivity.speed import load_batch, speed_table, summarise, time_interleaved


def test_rotated_rounds_start_at_a_different_stage_each_time():
    calls = []
    times = time_interleaved({name: (lambda name=name: calls.append(name)) for name in "abc"},
                             torch.device("cpu"), warmup=0, repeats=3, rotate=True)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(values) == 3 for values in times.values())


def test_ratios_are_taken_within_each_round():
    times = {"forward": [1.0, 2.0, 4.0], "map": [2.0, 4.4, 8.0]}  # per round: 2.0, 2.2, 2.0
    rows = {row["stage"]: row for row in summarise(times, batch_size=4)}
    assert rows["forward"]["ratio_to_forward"] == 1.0 and rows["forward"]["images_per_s"] == 2.0
    assert rows["map"]["ratio_to_forward"] == 2.0 and rows["map"]["seconds_per_batch"] == 4.4


def test_load_batch_passes_over_unreadable_images(tmp_path, lite0, demo_image_paths):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    batch = load_batch([empty, *demo_image_paths[:3]], lite0, batch_size=2)
    assert batch.shape == (2, 3, 224, 224)
    transform = lite0.preprocessing.transform("squash")
    from sensitivity.images import read_image

    expected = transform(read_image(demo_image_paths[0], max_side=2 * lite0.preprocessing.size))
    torch.testing.assert_close(batch[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("features", ["pooled", "shape"])
def test_speed_table_times_every_path_on_real_images(tmp_path, demo_image_paths, features):
    empty = tmp_path / "empty.jpg"
    empty.touch()
    rows = [{"image_id": f"k/{i}", "path": str(path), "width": 10, "height": 10, "label": "kangaroo",
             "boxes": json.dumps([[0.1, 0.1, 0.9, 0.9]]), "difficult_dropped": 0}
            for i, path in enumerate([empty, *demo_image_paths[:2]])]
    write_manifest(make_manifest(rows), tmp_path / "manifest.csv")
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, size=(32, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    # the workflow's regressors: the paper's pooled map, or shape features of (map, attention) stacks
    maps = rng.random((32, 56, 56)) if features == "pooled" else rng.random((32, 2, 56, 56))
    BoxRegressor(pool=7, features=features).fit(maps, boxes).save(tmp_path / "regressor.npz")

    table = speed_table(tmp_path / "manifest.csv", tmp_path / "regressor.npz", tmp_path / "speed.csv",
                        {"name": "efficientnet_lite0", "weights": "random"}, target="gestalt", aggregate="max",
                        batch_size=2, warmup=0, repeats=1, device="cpu", threads=1)

    written = pd.read_csv(tmp_path / "speed.csv", keep_default_na=False)
    paths = ["forward", "class map", "gestalt map", "gestalt map + Grad-CAM", "image → box"]
    assert written["path"].tolist() == table["path"].tolist() == paths
    assert (written["batch_size"] == 2).all() and (written["device"] == "cpu").all()
    assert (written["dtype"] == "float32").all() and (written["model"] == "efficientnet_lite0").all()
    assert written.set_index("path").loc["image → box", "target"] == "gestalt"
    assert written.set_index("path").loc["forward", "ratio_to_forward"] == 1.0
    assert (written["images_per_s"] > 0).all()
    for column in ("cpu", "usable_cores", "torch", "torch_threads", "gpu", "load_average_1min_before"):
        assert column in written.columns


def test_speed_table_without_a_regressor_leaves_the_box_step_out(tmp_path, demo_image_paths):
    rows = [{"image_id": "k/0", "path": str(demo_image_paths[0]), "width": 10, "height": 10, "label": "kangaroo",
             "boxes": json.dumps([[0.1, 0.1, 0.9, 0.9]]), "difficult_dropped": 0}]
    write_manifest(make_manifest(rows), tmp_path / "manifest.csv")
    table = speed_table(tmp_path / "manifest.csv", None, tmp_path / "speed.csv",
                        {"name": "efficientnet_lite0", "weights": "random"}, target="class", aggregate="mean",
                        batch_size=4, warmup=0, repeats=1, device="cpu", threads=1)
    assert table["path"].tolist() == ["forward", "class map", "gestalt map", "class map + Grad-CAM"]
    assert (table["batch_size"] == 1).all()  # fewer readable images than asked: the batch is what there is

