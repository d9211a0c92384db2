"""The comparison stage (sensitivity.pipeline.methods) on synthetic stores whose every score is known by hand:
each map is the indicator of one box, the true box for "good" images and a disjoint one for the others."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sensitivity.datasets import write_manifest
from sensitivity.pipeline.methods import BOX_METHODS, methods_table, score_method
from sensitivity.regress import BoxRegressor
from sensitivity.store import MapStoreWriter, map_provenance

SIZE = 16  # map side
N = {"train": 12, "val": 6, "test": 10}
GOOD_TEST = 6  # test images whose map sits on their box
TOP1_RIGHT = 4  # of the good test images, those the classifier gets right
SYNSETS = ["n00000001", "n00000002"]


def box_of(column: int, row: int) -> np.ndarray:
    """A 4 x 8 pixel box (normalised) with its top-left pixel at (column, row): 32 of the map's 256 pixels."""
    return np.array([column / SIZE, row / SIZE, (column + 4) / SIZE, (row + 8) / SIZE])


def indicator(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = np.rint(box * SIZE).astype(int)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[y1:y2, x1:x2] = 1.0
    return out


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> dict:
    """Manifest, split, two shard stores of one map method, its fitted regressor and a synset mapping."""
    root = tmp_path_factory.mktemp("methods")
    rng = np.random.default_rng(0)
    rows, split, maps, top1 = [], {}, [], []
    k = 0
    for name, count in N.items():
        for i in range(count):
            image_id = f"img{k:02d}"
            box = box_of(int(rng.integers(0, 4)), int(rng.integers(0, 8)))  # left half
            good = name != "test" or i < GOOD_TEST
            shown = box if good else box_of(10 + int(rng.integers(0, 2)), 4)  # right half: IoU 0
            rows.append({"image_id": image_id, "path": str(root / f"{image_id}.png"), "width": 64, "height": 64,
                         "label": SYNSETS[0], "boxes": json.dumps([box.tolist()]), "difficult_dropped": 0})
            split[image_id] = name
            maps.append(indicator(shown))
            top1.append(0 if (name != "test" or i < TOP1_RIGHT) else 1)
            k += 1
    write_manifest(pd.DataFrame(rows), root / "manifest.csv")
    pd.Series(split, name="split").rename_axis("image_id").reset_index().to_csv(root / "split.csv", index=False)
    (root / "mapping.txt").write_text("".join(f"{s} thing {i}\n" for i, s in enumerate(SYNSETS)))
    ids = [row["image_id"] for row in rows]
    made = {"model": "tiny", "weights": "random", "target": "class", "aggregate": "max", "class_source": "true",
            "preprocessing": {}, "amp": "none", "method": "cam", "method_settings": {}}
    stores = []
    for shard, part in (("1-of-2", slice(0, 14)), ("2-of-2", slice(14, None))):
        writer = MapStoreWriter(root / f"{shard}.zarr", ids[part], SIZE, made | {"shard": shard})
        positions = np.arange(len(ids))[part]
        top5 = np.array([[t, 1 - t, 2, 3, 4] for t in np.array(top1)[part]])
        writer.write(np.arange(len(positions)), np.stack(maps)[part], None, top5)
        stores.append(writer.close())
    train = np.stack([m for m, r in zip(maps, rows) if split[r["image_id"]] == "train"])
    targets = np.stack([json.loads(r["boxes"])[0] for r in rows if split[r["image_id"]] == "train"])
    regressor = BoxRegressor(pool=4, alpha=1e-3).fit(train, targets)
    regressor.provenance_ = {key: value for key, value in map_provenance(stores).items() if key != "attention"}
    regressor.save(root / "regressor.npz")
    return {"root": root, "stores": stores, "regressor": root / "regressor.npz"}


def score(comparison: dict, **options) -> pd.DataFrame:
    root = comparison["root"]
    return score_method(root / "manifest.csv", root / "split.csv", comparison["stores"], comparison["regressor"],
                        root / "scores.csv", root / "predictions.csv", "cam", thresholds=20,
                        sigma=0.0, fraction=32 / SIZE**2, **options).set_index("box_method")


def test_map_boxes_score_what_was_drawn(comparison) -> None:
    scores = score(comparison, synset_mapping=comparison["root"] / "mapping.txt")
    assert list(scores.index) == list(BOX_METHODS) and (scores["n_test"] == N["test"]).all()
    for box in ("heuristic", "wsol"):  # both find exactly the drawn box: right on good images, IoU 0 elsewhere
        row = scores.loc[box]
        for column in ("gt_known_loc", "maxboxacc_v2", "boxacc_30", "boxacc_50", "boxacc_70", "corloc"):
            assert row[column] == pytest.approx(GOOD_TEST / N["test"]), (box, column)
        assert row["top1_loc"] == pytest.approx(TOP1_RIGHT / N["test"])
    wsol = scores.loc["wsol"]
    assert wsol["maxboxacc_v2_tau_on_test"] == pytest.approx(GOOD_TEST / N["test"])
    assert wsol["threshold_box"] == 0.0 and wsol["threshold_50"] == 0.0  # every τ gives the drawn box: the first


def test_learned_box_scores_equal_its_own_predictions(comparison) -> None:
    scores = score(comparison)
    predictions = pd.read_csv(comparison["root"] / "predictions.csv")
    ious = predictions["learned_iou"].to_numpy()
    learned = scores.loc["learned"]
    assert learned["gt_known_loc"] == pytest.approx((ious >= 0.5).mean())
    assert learned["boxacc_70"] == pytest.approx((ious >= 0.7).mean())
    assert learned["maxboxacc_v2"] == pytest.approx(np.mean([(ious >= d).mean() for d in (0.3, 0.5, 0.7)]))
    assert np.isnan(learned["top1_loc"]) and "top1" not in predictions  # no synset mapping given


def test_regressor_of_other_maps_is_refused(comparison, tmp_path) -> None:
    regressor = BoxRegressor.load(comparison["regressor"])
    regressor.provenance_ = regressor.provenance_ | {"method": "gradient"}
    regressor.save(tmp_path / "other.npz")
    root = comparison["root"]
    with pytest.raises(ValueError, match=r"other.npz: fitted on maps made with method='gradient' \(here 'cam'\)"):
        score_method(root / "manifest.csv", root / "split.csv", comparison["stores"], tmp_path / "other.npz",
                     tmp_path / "s.csv", tmp_path / "p.csv", "cam")


def test_methods_table_adds_the_centre_box_and_the_cost(comparison, tmp_path) -> None:
    score(comparison, synset_mapping=comparison["root"] / "mapping.txt")
    root = comparison["root"]
    speed = pd.DataFrame({"path": ["forward", "cam"], "images_per_s": [100.0, 50.0], "ratio_to_forward": [1.0, 2.0],
                          "device": "cpu", "cpu": "test CPU", "torch_threads": 2, "batch_size": 16})
    speed.to_csv(tmp_path / "speed.csv", index=False)
    published = tmp_path / "published.csv"
    published.write_text("table,method,class,value,source\nwsol,CAM (VGG16),MaxBoxAccV2 ImageNet,60.0,Choe 2020\n")
    table = methods_table([root / "scores.csv"], [root / "predictions.csv"], tmp_path / "speed.csv",
                          root / "manifest.csv", root / "split.csv", tmp_path / "t.csv", tmp_path / "t.md",
                          tmp_path / "t.png", published_path=published, title="synthetic")
    assert table[["map_method", "box_method"]].values.tolist() == [["cam", b] for b in BOX_METHODS] + [["none", "centre"]]
    wsol = table.set_index("box_method").loc["wsol"]
    assert wsol["gt_known_loc"] == pytest.approx(100 * GOOD_TEST / N["test"])  # percent in the table
    box_s = wsol["box_ms_per_image"] / 1000
    assert wsol["images_per_s"] == pytest.approx(1 / (1 / 50 + box_s))
    assert wsol["x_forward"] == pytest.approx(2 + box_s * 100)
    centre = table.set_index("box_method").loc["centre"]
    assert centre["x_forward"] == 0 and 0 <= centre["gt_known_loc"] <= 100
    markdown = (tmp_path / "t.md").read_text()
    assert "| cam | wsol | 60.00 | 40.00 |" in markdown and "τ on test" in markdown
    assert "| CAM (VGG16) | MaxBoxAccV2 ImageNet | 60 | Choe 2020 |" in markdown
    with Image.open(tmp_path / "t.png") as image:
        assert image.format == "PNG" and min(image.size) > 300
