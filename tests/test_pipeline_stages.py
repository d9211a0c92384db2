"""The workflow's stages as library calls, on a dozen real demo photos and the real EfficientNet-Lite0.

Extraction runs once per module (two shards); the fit and evaluation tests reuse its stores.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold

import sensitivity.pipeline.extract as extract_module
from sensitivity import __version__
from sensitivity.box_model import BoxEnsemble, load_box_model
from sensitivity.boxes import largest_box
from sensitivity.datasets import DatasetError, read_manifest, read_split
from sensitivity.evaluation import corloc_table
from sensitivity.images import ImageReadError, read_image
from sensitivity.pipeline.evaluate import METHOD_NAMES, METHODS, evaluate
from sensitivity.pipeline.extract import extract_shard
from sensitivity.pipeline.fit import fit_regressor
from sensitivity.pipeline.prepare import build_manifest
from sensitivity.pipeline.split import make_split
from sensitivity.regress import BoxRegressor, MapStack, decode_boxes
from sensitivity.shape import shape_descriptors
from sensitivity.store import MapStore, MapStoreWriter, StoreError, iter_maps
from sensitivity.tables import corloc_display, to_markdown

PER_CLASS = 6
MODEL = {"name": "efficientnet_lite0", "weights": None}
MAP_ARGS = {"model": MODEL, "target": "gestalt", "aggregate": "max", "map_size": 56, "device": "cpu",
            "num_workers": 0}


@pytest.fixture(scope="module")
def cached_model(lite0):
    """``extract_shard`` loads its model by name; hand it the session's already loaded network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "load_model", lambda name, weights=None, device="cpu": lite0)
        yield lite0


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory, make_demo_subset) -> dict:
    """A folder dataset of 6 kangaroo + 6 raccoon photos, its manifest and a seeded split."""
    root = tmp_path_factory.mktemp("stages")
    roots = make_demo_subset(root / "data", PER_CLASS)
    spec = {"kind": "folder", "roots": [str(r) for r in roots], "on_bad_input": "fail"}
    manifest = root / "manifest.csv"
    build_manifest(spec, manifest, root / "manifest_skipped.csv")
    split = root / "split.csv"
    make_split(manifest, split, [0.5, 0.25, 0.25], seed=0)
    return {"root": root, "roots": roots, "spec": spec, "manifest": manifest, "split": split}


@pytest.fixture(scope="module")
def shard_stores(demo_dataset, cached_model) -> list[Path]:
    """The dataset's maps, extracted as two shards (batch size 4, so several batches per shard)."""
    out = demo_dataset["root"] / "maps"
    return [extract_shard(demo_dataset["manifest"], out / f"{k}-of-2.zarr", f"{k}-of-2", batch_size=4, **MAP_ARGS)
            for k in (1, 2)]


# --- stage 1: manifest --------------------------------------------------------------------------------


def test_build_manifest_reads_a_folder_dataset(demo_dataset) -> None:
    manifest = read_manifest(demo_dataset["manifest"])
    assert len(manifest) == 2 * PER_CLASS
    assert manifest["image_id"].is_unique
    assert sorted(manifest["label"].unique()) == ["kangaroo", "raccoon"]
    assert (manifest["label"].value_counts() == PER_CLASS).all()
    for row in manifest.itertuples(index=False):
        assert row.image_id == f"{row.label}/{Path(row.path).stem}"
        with Image.open(row.path) as image:
            assert (row.width, row.height) == image.size
        boxes = np.asarray(json.loads(row.boxes))
        assert boxes.ndim == 2 and boxes.shape[1] == 4
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    skipped = pd.read_csv(demo_dataset["root"] / "manifest_skipped.csv")
    assert list(skipped.columns) == ["path", "reason"] and skipped.empty


def test_build_manifest_bad_annotation_fails_or_is_listed(tmp_path, make_demo_subset) -> None:
    (root,) = make_demo_subset(tmp_path / "data", 3, classes=("raccoon",))
    orphan = sorted((root / "images").iterdir())[0]
    orphan.unlink()  # its annotation now points at a missing image
    spec = {"kind": "folder", "roots": [str(root)], "on_bad_input": "fail"}
    with pytest.raises(DatasetError, match=orphan.stem):
        build_manifest(spec, tmp_path / "m.csv", tmp_path / "s.csv")
    assert not (tmp_path / "m.csv").exists()

    manifest = build_manifest(spec | {"on_bad_input": "skip"}, tmp_path / "m.csv", tmp_path / "s.csv")
    assert len(manifest) == 2
    skipped = pd.read_csv(tmp_path / "s.csv")
    assert len(skipped) == 1 and orphan.stem in skipped["path"].iloc[0]
    assert "missing image" in skipped["reason"].iloc[0]


# --- stage 2: split ---------------------------------------------------------------------------------


def test_make_split_is_deterministic_stratified_and_seeded(demo_dataset, tmp_path) -> None:
    manifest = demo_dataset["manifest"]
    make_split(manifest, tmp_path / "a.csv", [0.5, 0.25, 0.25], seed=0)
    make_split(manifest, tmp_path / "b.csv", [0.5, 0.25, 0.25], seed=0)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == demo_dataset["split"].read_bytes()

    split = read_split(tmp_path / "a.csv")
    ids = read_manifest(manifest)["image_id"]
    assert sorted(split.index) == sorted(ids)  # every image exactly once
    per_class = split.groupby([split.index.str.split("/").str[0], split]).size().unstack()
    assert (per_class.sum(axis=1) == PER_CLASS).all()  # stratified: each class split on its own
    assert (per_class["train"] == 3).all() and (per_class["val"] >= 1).all() and (per_class["test"] >= 1).all()

    others = []
    for seed in (1, 2, 3):
        make_split(manifest, tmp_path / f"s{seed}.csv", [0.5, 0.25, 0.25], seed=seed)
        others.append(read_split(tmp_path / f"s{seed}.csv").loc[split.index])
    assert any(not other.equals(split) for other in others), "the split ignores its seed"


# --- stage 3: extraction ----------------------------------------------------------------------------


def test_extract_two_shards_cover_every_image_once(demo_dataset, shard_stores) -> None:
    ids = set(read_manifest(demo_dataset["manifest"])["image_id"])
    seen: list[str] = []
    for k, path in enumerate(shard_stores, start=1):
        assert path.is_dir() and not path.with_name(path.name + ".partial").exists()
        store = MapStore(path)
        assert store.attrs["shard"] == f"{k}-of-2" and store.attrs["complete"] is True
        assert store.attrs["model"] == "efficientnet_lite0" and store.attrs["package_version"] == __version__
        assert store.attrs["skipped"] == []
        raw = zarr.open_group(path, mode="r")["maps"]
        assert raw.dtype == np.float16 and raw.shape == (len(store), 56, 56)
        assert store.valid.all() and (store.scale > 0).all()
        maps = store.read(0, len(store))
        assert np.isfinite(maps).all() and (maps >= 0).all()
        # a real sensitivity map is not flat: its peak stands well above its mean
        assert (maps.reshape(len(maps), -1).max(1) > 3 * maps.reshape(len(maps), -1).mean(1)).all()
        seen += store.image_ids.tolist()
    assert len(seen) == len(ids) and set(seen) == ids
    assert abs(len(MapStore(shard_stores[0])) - len(MapStore(shard_stores[1]))) <= 1


def test_gestalt_stores_hold_the_predicted_class_grad_cam_and_say_so(demo_dataset, shard_stores, lite0) -> None:
    """The attention channel of Gestalt Total maps is the predicted class's Grad-CAM (recomputed here with the
    gradcam method, class target); the stores record it, and stores made before it was recorded read as the
    Total's own."""
    from sensitivity.map_methods import compute_maps
    from sensitivity.maps import pool_maps
    from sensitivity.store import attention_of, map_provenance

    made = map_provenance(shard_stores)
    assert made["attention_of"] == "class" and made["class_source"] == "predicted" and made["target"] == "gestalt"
    assert attention_of({"target": "gestalt"}) == "gestalt" and attention_of({"target": "class"}) == "class"
    store = MapStore(shard_stores[0])
    manifest = read_manifest(demo_dataset["manifest"]).set_index("image_id")
    paths = [manifest.loc[i, "path"] for i in store.image_ids[:2]]
    transform = lite0.preprocessing.transform("squash")
    images = torch.stack([transform(read_image(p, max_side=2 * lite0.preprocessing.size)) for p in paths])
    expected = pool_maps(compute_maps(lite0, images, "gradcam", target="class").maps, 56).numpy()
    stored = store.read(0, 2, attention=True)[:, 1]
    # resized from 7² then pooled to 56² here, resized straight to 56² there; float16 in the store
    assert np.corrcoef(stored.ravel(), expected.ravel())[0, 1] > 0.99


@pytest.fixture(scope="module")
def truncated_dataset(tmp_path_factory, make_demo_subset) -> dict:
    """Two kangaroo + two raccoon photos, the second raccoon JPEG cut to 40% of its bytes."""
    root = tmp_path_factory.mktemp("truncated")
    roots = make_demo_subset(root / "data", 2)
    victim = sorted((roots[1] / "images").iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: int(0.4 * len(data))])
    manifest = root / "manifest.csv"
    build_manifest({"kind": "folder", "roots": [str(r) for r in roots]}, manifest, root / "skipped.csv")
    return {"root": root, "manifest": manifest, "victim": victim,
            "victim_id": f"raccoon/{victim.stem}"}


def test_truncated_jpeg_fails_naming_the_file_and_publishes_nothing(truncated_dataset, cached_model) -> None:
    store = truncated_dataset["root"] / "fail.zarr"
    with pytest.raises(ImageReadError) as caught:
        extract_shard(truncated_dataset["manifest"], store, "1-of-1", on_bad_input="fail", batch_size=2, **MAP_ARGS)
    assert str(truncated_dataset["victim"]) in str(caught.value)
    assert not store.exists()
    with pytest.raises(StoreError):
        MapStore(store)


def test_truncated_jpeg_skipped_is_recorded(truncated_dataset, cached_model) -> None:
    path = extract_shard(truncated_dataset["manifest"], truncated_dataset["root"] / "skip.zarr", "1-of-1",
                         on_bad_input="skip", batch_size=2, **MAP_ARGS)
    store = MapStore(path)
    assert store.attrs["complete"] is True and len(store) == 4
    bad = store.image_ids.tolist().index(truncated_dataset["victim_id"])
    assert store.valid.tolist() == [k != bad for k in range(4)]
    (skipped,) = store.attrs["skipped"]
    assert skipped["image_id"] == truncated_dataset["victim_id"]
    assert skipped["path"] == str(truncated_dataset["victim"])
    assert "decode" in skipped["reason"] or "truncated" in skipped["reason"]
    streamed = [i for ids, _ in iter_maps([path]) for i in ids]
    assert truncated_dataset["victim_id"] not in streamed and len(streamed) == 3


# --- stage 4: fit -----------------------------------------------------------------------------------

GRID = {"alpha": [0.1, 10.0], "pool": [7, 14], "normalize": ["max", "rank"], "parameterisation": ["corners"]}


def _hand_corloc(pred: np.ndarray, gt: list[np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """Per-row IoU of ``pred`` with its best ground-truth box, computed here independently."""
    best = []
    for p, boxes in zip(pred, gt):
        ious = []
        for g in boxes:
            w = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
            h = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
            inter = w * h
            union = (p[2] - p[0]) * (p[3] - p[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            ious.append(inter / union)
        best.append(max(ious))
    return np.asarray(best)


@pytest.fixture(scope="module")
def fitted(demo_dataset, shard_stores) -> dict:
    root = demo_dataset["root"]
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], [str(p) for p in shard_stores],
                  root / "regressor.npz", root / "fit_summary.json", grid=GRID, selection={"method": "val"})
    return {"model": root / "regressor.npz", "summary": json.loads((root / "fit_summary.json").read_text())}


def test_fit_summary_has_every_grid_point_and_keeps_the_best_on_val(demo_dataset, shard_stores, fitted) -> None:
    summary = fitted["summary"]
    *candidates, ensemble = summary["candidates"]
    expected = set(itertools.product(GRID["alpha"], GRID["pool"], GRID["normalize"], GRID["parameterisation"]))
    assert len(candidates) == len(expected)
    assert {(c["alpha"], c["pool"], c["normalize"], c["target"]) for c in candidates} == expected
    scores = [c["val_corloc"] for c in candidates]
    # the ensemble candidate: the 3 best on val (ties: the earlier), last, so that it wins only when strictly better
    assert ensemble["ensemble"] == sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:3]
    assert ensemble["members"] == [{k: v for k, v in candidates[i].items() if k != "val_corloc"}
                                   for i in ensemble["ensemble"]]
    best = candidates[int(np.argmax(scores))]
    assert summary["score"] == max(scores) and summary["selection"] == "val"
    assert summary["chosen"] == {k: best[k] for k in ("features", "alpha", "pool", "normalize", "target",
                                                      "embedding_components", "loss", "start")} | {"solver": "ridge"}
    assert best["start"] is None  # the shipped prior's maps are Guided Backprop, these are gradient maps
    assert summary["prior"]["used"] is False and "method='guided_backprop'" in summary["prior"]["why_not"]
    assert {c["features"] for c in candidates} == {"pooled"}  # the grid's default

    split = read_split(demo_dataset["split"])
    assert summary["n_choice_rows"] == int((split == "val").sum())
    assert summary["n_fit_rows"] == int((split == "train").sum())

    # the saved model is the chosen one, and its val CorLoc recomputed by hand is the reported one
    model = BoxRegressor.load(fitted["model"])
    assert {k: model.get_params()[k] for k in ("alpha", "pool", "normalize", "target")} == \
        {k: best[k] for k in ("alpha", "pool", "normalize", "target")}
    manifest = read_manifest(demo_dataset["manifest"]).set_index("image_id")
    val_ids, maps = [], []
    for ids, block in iter_maps(shard_stores, set(split.index[split == "val"])):
        val_ids += ids.tolist()
        maps.append(block)
    gt = [np.asarray(json.loads(manifest.loc[i, "boxes"])) for i in val_ids]
    ious = _hand_corloc(model.predict(np.concatenate(maps)), gt)
    assert np.isclose((ious > 0.5).mean(), summary["score"])

    # the ensemble's val CorLoc by hand: its members fitted on train, their val boxes averaged
    train_ids, train_maps = [], []
    for ids, block in iter_maps(shard_stores, set(split.index[split == "train"])):
        train_ids += ids.tolist()
        train_maps.append(block)
    targets = np.stack([largest_box(np.asarray(json.loads(manifest.loc[i, "boxes"]))) for i in train_ids])
    members = [BoxRegressor(**{k: candidates[i][k] for k in ("alpha", "pool", "normalize", "target")}).fit(
        np.concatenate(train_maps), targets) for i in ensemble["ensemble"]]
    boxes = np.mean([m.predict(np.concatenate(maps)) for m in members], axis=0)
    assert np.isclose((_hand_corloc(boxes, gt) > 0.5).mean(), ensemble["val_corloc"])


def test_cross_validation_scores_every_candidate_on_held_out_folds_and_refits_the_best(
        demo_dataset, shard_stores, tmp_path) -> None:
    from sklearn.model_selection import StratifiedGroupKFold

    grid = {"alpha": [0.1, 100.0], "pool": [7], "normalize": ["max"], "parameterisation": ["corners"],
            "features": ["pooled", "shape"], "embedding_components": [0, 8]}
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], [str(p) for p in shard_stores],
                  tmp_path / "regressor.npz", tmp_path / "summary.json", grid=grid,
                  selection={"method": "cv", "folds": 3, "seed": 1})
    summary = json.loads((tmp_path / "summary.json").read_text())
    *candidates, ensemble = summary["candidates"]
    assert [(c["features"], c["embedding_components"], c["alpha"]) for c in candidates] == [
        ("pooled", 0, 0.1), ("pooled", 0, 100.0), ("shape", 0, 0.1), ("shape", 0, 100.0), ("shape", 8, 0.1),
        ("shape", 8, 100.0)]
    means = [c["cv_corloc"] for c in candidates]
    assert ensemble["ensemble"] == sorted(range(len(means)), key=lambda i: (-means[i], i))[:3]
    assert summary["selection"] == "cv" and summary["fitted_on"] == ["train", "val"]

    # one candidate's folds redone by hand: images grouped, classes stratified, fitted on the other folds
    split = read_split(demo_dataset["split"])
    manifest = read_manifest(demo_dataset["manifest"])
    rows = manifest[manifest["image_id"].map(split).isin({"train", "val"})].reset_index(drop=True)
    stacks = {}
    for ids, block, embedding in iter_maps(shard_stores, attention=True, embedding=True):
        stacks.update({i: (b, e) for i, b, e in zip(ids, block, embedding)})
    rows = rows[rows["image_id"].isin(stacks)].reset_index(drop=True)
    gt = [np.asarray(json.loads(b)) for b in rows["boxes"]]
    X = MapStack(np.stack([stacks[i][0] for i in rows["image_id"]]), np.stack([stacks[i][1] for i in rows["image_id"]]))
    y = np.stack([largest_box(g) for g in gt])
    assert X.embedding.shape[1] == 1280
    folds = StratifiedGroupKFold(3, shuffle=True, random_state=1).split(rows, rows["label"], rows["image_id"])

    def model_of(entry: dict) -> BoxRegressor:
        return BoxRegressor(**{k: entry[k] for k in ("features", "alpha", "target", "embedding_components")},
                            **{k: entry[k] for k in ("pool", "normalize") if entry[k] is not None})

    per_fold, ensemble_per_fold = [], []
    for fit_part, held_out in folds:
        model = BoxRegressor(features="shape", alpha=100.0, embedding_components=8).fit(X[fit_part], y[fit_part])
        per_fold.append((_hand_corloc(model.predict(X[held_out]), [gt[k] for k in held_out]) > 0.5).mean())
        # the ensemble on this fold: its members fitted on the other folds, their boxes averaged
        members = [model_of(m).fit(X[fit_part], y[fit_part]) for m in ensemble["members"]]
        boxes = np.mean([m.predict(X[held_out]) for m in members], axis=0)
        ensemble_per_fold.append((_hand_corloc(boxes, [gt[k] for k in held_out]) > 0.5).mean())
    np.testing.assert_allclose(candidates[5]["fold_corloc"], per_fold)
    assert np.isclose(candidates[5]["cv_corloc"], np.mean(per_fold))
    assert np.isclose(candidates[5]["cv_corloc_std"], np.std(per_fold))
    np.testing.assert_allclose(ensemble["fold_corloc"], ensemble_per_fold)
    assert np.isclose(ensemble["cv_corloc"], np.mean(ensemble_per_fold))

    # the best candidate, here the ensemble (it beats its members on these photos), refitted on train + val: each
    # member refitted alone, saved together
    assert ensemble["cv_corloc"] > max(means)
    assert summary["score"] == ensemble["cv_corloc"] and summary["n_fit_rows"] == len(rows)
    assert summary["chosen"] == {"ensemble": ensemble["ensemble"], "members": ensemble["members"], "solver": "ridge"}
    saved = load_box_model(tmp_path / "regressor.npz")
    assert isinstance(saved, BoxEnsemble) and saved.n_samples_seen_ == len(rows)
    assert saved.fitted_on_["ensemble"] == ensemble["members"] and saved.provenance_["model"] == "efficientnet_lite0"
    refitted = [model_of(m).fit(X, y) for m in ensemble["members"]]
    np.testing.assert_allclose(saved.predict(X), np.mean([m.predict(X) for m in refitted], axis=0), atol=1e-8)


def test_fit_tries_a_prior_box_model_as_it_is_and_fine_tuned(demo_dataset, shard_stores, tmp_path) -> None:
    from sensitivity.store import map_provenance

    stores = [str(p) for p in shard_stores]
    provenance = map_provenance(stores)
    provenance.pop("attention"), provenance.pop("embedding")
    X = {}
    for ids, block, embedding in iter_maps(shard_stores, attention=True, embedding=True):
        X.update({i: (b, e) for i, b, e in zip(ids, block, embedding)})
    manifest = read_manifest(demo_dataset["manifest"]).set_index("image_id")
    image_ids = sorted(X)
    gt = {i: np.asarray(json.loads(manifest.loc[i, "boxes"])) for i in image_ids}
    stack = MapStack(np.stack([X[i][0] for i in image_ids]), np.stack([X[i][1] for i in image_ids]))
    # a prior that has seen every image (so it wins against the grid's mean box), made like these maps
    prior = BoxRegressor(features="shape", alpha=1.0, embedding_components=4).fit(
        stack, np.stack([largest_box(gt[i]) for i in image_ids]))
    prior.provenance_ = provenance
    prior.save(tmp_path / "prior.npz")
    grid = {"alpha": [1e12], "pool": [7], "normalize": ["max"], "parameterisation": ["corners"],
            "features": ["pooled"]}
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], stores, tmp_path / "r.npz", tmp_path / "s.json",
                  grid=grid, selection={"method": "cv", "folds": 3, "seed": 0},
                  prior={"model": str(tmp_path / "prior.npz"), "alpha": [1.0, 1e9]})
    summary = json.loads((tmp_path / "s.json").read_text())
    *candidates, ensemble = summary["candidates"]
    assert summary["prior"] == {"model": "prior.npz", "used": True}
    assert [(c["start"], c["alpha"]) for c in candidates] == [(None, 1e12), ("as is", 1.0), ("fine-tuned", 1.0),
                                                              ("fine-tuned", 1e9)]
    means = [c["cv_corloc"] for c in candidates]
    assert ensemble["ensemble"] == sorted(range(len(means)), key=lambda i: (-means[i], i))[:3]
    assert [m["start"] for m in ensemble["members"]] == [candidates[i]["start"] for i in ensemble["ensemble"]]
    # as it is, the prior scores on each held-out fold what its own predictions give
    split = read_split(demo_dataset["split"])
    rows = manifest.reset_index()
    rows = rows[rows["image_id"].map(split).isin({"train", "val"}) & rows["image_id"].isin(X)].reset_index(drop=True)
    folds = StratifiedGroupKFold(3, shuffle=True, random_state=0).split(rows, rows["label"], rows["image_id"])
    index = {i: k for k, i in enumerate(image_ids)}
    expected = []
    for _, held_out in folds:
        keys = [index[i] for i in rows["image_id"].iloc[held_out]]
        boxes = prior.predict(stack[np.asarray(keys)])
        expected.append((_hand_corloc(boxes, [gt[image_ids[k]] for k in keys]) > 0.5).mean())
    np.testing.assert_allclose(candidates[1]["fold_corloc"], expected)
    # the chosen candidate is saved as it is or refitted towards the prior, and says so
    best = candidates[int(np.argmax([c["cv_corloc"] for c in candidates]))]
    assert best["start"] is not None and summary["chosen"]["start"] == best["start"]
    saved = BoxRegressor.load(tmp_path / "r.npz")
    assert saved.fitted_on_["start"]["model"] == "prior.npz" and saved.fitted_on_["start"]["how"] == best["start"]
    if best["start"] == "as is":
        np.testing.assert_array_equal(saved.coef_, prior.coef_)
    else:
        assert saved.alpha == best["alpha"] and saved.n_samples_seen_ == len(rows)

    # chosen on val, the prior as it is (it has seen these images) is saved as a copy with its own record of
    # where it started (none: this prior was not fitted by the fit stage), not a record of itself
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], stores, tmp_path / "v.npz", tmp_path / "v.json",
                  grid=grid, selection={"method": "val"}, prior={"model": str(tmp_path / "prior.npz"), "alpha": [1e9]},
                  ensemble=0)
    on_val = json.loads((tmp_path / "v.json").read_text())
    assert on_val["chosen"]["start"] == "as is", on_val["candidates"]
    saved = BoxRegressor.load(tmp_path / "v.npz")
    assert saved.fitted_on_["start"] == {"model": "prior.npz", "how": "as is", "fitted_on": None}
    np.testing.assert_array_equal(saved.coef_, prior.coef_)

    # an ensemble with the prior among its members, refitted: the prior as it is, the others fitted towards it
    from sensitivity.evaluation import labelled_rows
    from sensitivity.pipeline.fit import Candidate, Ensemble, load_prior
    from sensitivity.pipeline.rows import RowMaps

    starting = load_prior({"model": str(tmp_path / "prior.npz"), "alpha": [1e9]}, provenance, True, 1280)
    members = (Candidate(prior.get_params(), "as is"), Candidate(prior.get_params() | {"alpha": 1e9}, "fine-tuned"))
    choice = labelled_rows(demo_dataset["manifest"], demo_dataset["split"])
    choice = choice[choice["split"].isin({"train", "val"})]
    refitted = Ensemble(members, (1, 3)).refit(RowMaps(stores, choice, 4, attention=True, embedding=True), starting)
    assert isinstance(refitted, BoxEnsemble) and refitted.provenance_ == provenance
    np.testing.assert_array_equal(refitted.members_[0].coef_, prior.coef_)
    assert refitted.members_[1].alpha == 1e9 and refitted.members_[1].n_samples_seen_ == len(rows)
    assert refitted.n_samples_seen_ == max(len(rows), len(image_ids))


def test_fold_corloc_scores_each_fold_with_its_own_models_and_refuses_an_empty_fold() -> None:
    from sensitivity.pipeline.fit import fold_corloc, held_out

    rng = np.random.default_rng(0)
    maps = rng.random((6, 8, 8))
    left, right = np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.5, 0.0, 1.0, 1.0])
    # two constant-box models per fold (alpha huge: the mean box of what each was fitted on)
    models = [[BoxRegressor(pool=2, alpha=1e12).fit(maps, np.tile(box, (6, 1))) for box in (left, right)]
              for _ in range(2)]
    rows = pd.DataFrame({"gt": [left[None], left[None], right[None], right[None], right[None], left[None]]},
                        index=[10, 11, 12, 13, 14, 15])
    fold = pd.Series([0, 0, 0, 1, 1, 1], index=rows.index)
    blocks = [(rows.iloc[:4], maps[:4]), (rows.iloc[4:], maps[4:])]  # a fold may span blocks
    scores = fold_corloc(models, blocks, fold, 0.5)
    np.testing.assert_allclose(scores, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    held = held_out(models, blocks, fold)  # (candidates, rows, 4), kept in a mapped file, not in memory
    assert isinstance(held.boxes, np.memmap) and held.boxes.shape == (2, 6, 4)
    np.testing.assert_allclose(held.boxes[0], np.tile(left, (6, 1)), atol=1e-9)
    np.testing.assert_allclose(held.boxes[1], np.tile(right, (6, 1)), atol=1e-9)
    with pytest.raises(ValueError, match="fold 1 has no image"):
        fold_corloc(models, blocks, pd.Series(0, index=rows.index), 0.5)


def test_ensemble_candidate_averages_held_out_boxes_of_the_best_that_read_the_same_maps() -> None:
    from sensitivity.pipeline.fit import Candidate, Ensemble, HeldOut, with_ensemble

    rng = np.random.default_rng(1)
    maps, targets = rng.random((6, 8, 8)), np.tile([0.2, 0.2, 0.6, 0.6], (6, 1))
    stacked = BoxRegressor(pool=2).fit(np.stack([maps, maps], axis=1), targets)  # reads (map, attention) stacks
    models = [BoxRegressor(pool=2, alpha=1.0).fit(maps, targets), stacked, BoxRegressor(pool=4).fit(maps, targets)]
    candidates = [Candidate(m.get_params()) for m in models]
    top_left, bottom_right = np.array([0.0, 0.0, 0.5, 0.5]), np.array([0.5, 0.5, 1.0, 1.0])
    gt = [top_left[None], top_left[None], bottom_right[None], bottom_right[None]]
    boxes = np.array([[top_left, top_left, bottom_right, bottom_right],     # all right
                      [top_left, top_left, bottom_right, top_left],         # 3 of 4: second best, other maps
                      [top_left, bottom_right, top_left, top_left]])        # 1 of 4
    held = HeldOut(boxes, gt, np.array([0, 0, 1, 1]), 2)
    fold_scores = held.fold_corloc(0.5)
    np.testing.assert_allclose(fold_scores, [[1, 1], [1, 0.5], [0.5, 0]])

    tried, scores = with_ensemble(candidates, fold_scores, held, models, 3, 0.5)
    assert tried[:3] == candidates and tried[3] == Ensemble((candidates[0], candidates[2]), (0, 2))
    mean = (boxes[0] + boxes[2]) / 2
    hand = _hand_corloc(mean, gt) > 0.5
    np.testing.assert_allclose(scores[:3], fold_scores)
    np.testing.assert_allclose(scores[3], [hand[:2].mean(), hand[2:].mean()])
    assert tried[3].of(models).members_ == [models[0], models[2]]
    for size in (0, 2):  # none asked for; or the two best, of which only one reads these maps
        assert len(with_ensemble(candidates[:2], fold_scores[:2], held, models[:2], size, 0.5)[0]) == 2


def test_fit_with_shape_features_describes_map_and_attention(demo_dataset, shard_stores, tmp_path) -> None:
    grid = GRID | {"features": ["pooled", "shape"]}
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], [str(p) for p in shard_stores],
                  tmp_path / "regressor.npz", tmp_path / "summary.json", grid=grid)
    *candidates, ensemble = json.loads((tmp_path / "summary.json").read_text())["candidates"]
    pooled = list(itertools.product(GRID["alpha"], GRID["pool"], GRID["normalize"], GRID["parameterisation"]))
    shape = list(itertools.product(GRID["alpha"], GRID["parameterisation"]))
    assert [c["features"] for c in candidates] == ["pooled"] * len(pooled) + ["shape"] * len(shape)
    assert len(ensemble["ensemble"]) == 3

    # the shape candidates refitted by hand: standardised ridge on descriptors of (map, attention) stacks
    split = read_split(demo_dataset["split"])
    manifest = read_manifest(demo_dataset["manifest"]).set_index("image_id")
    stacks = {}
    for ids, block in iter_maps(shard_stores, attention=True):
        stacks.update(zip(ids, block))
    train = [i for i in split.index[split == "train"] if i in stacks]
    X = np.stack([stacks[i] for i in train])
    assert X.shape[1:] == (2, 56, 56) and (X[:, 1] >= 0).all() and X[:, 1].max() > 0
    y = np.stack([largest_box(np.asarray(json.loads(manifest.loc[i, "boxes"]))) for i in train])
    alpha = GRID["alpha"][0]
    model = BoxRegressor(features="shape", alpha=alpha).fit(X, y)
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    descriptors = np.hstack([shape_descriptors(X[:, 0]), shape_descriptors(X[:, 1])])
    scaler = StandardScaler().fit(descriptors)
    reference = Ridge(alpha=alpha).fit(scaler.transform(descriptors), y)
    np.testing.assert_allclose(model.predict(X), decode_boxes(reference.predict(scaler.transform(descriptors)),
                                                              "corners"), atol=1e-8)


class Killed(RuntimeError):
    pass


def test_a_fit_dying_while_writing_never_leaves_a_model(demo_dataset, shard_stores, monkeypatch, tmp_path) -> None:
    """The summary is published first and the model last, each renamed into place when whole."""
    args = (demo_dataset["manifest"], demo_dataset["split"], [str(p) for p in shard_stores])
    model, summary = tmp_path / "regressor.npz", tmp_path / "fit_summary.json"
    grid = {key: values[:1] for key, values in GRID.items()}

    # the summary cannot be written: no model either
    with pytest.raises(FileNotFoundError):
        fit_regressor(*args, model, tmp_path / "absent" / "fit_summary.json", grid=grid)
    assert list(tmp_path.iterdir()) == []

    # killed half-way through writing the model: only its .partial, never a regressor.npz
    def half_save(self, path) -> None:
        Path(path).write_bytes(b"PK\x03\x04")
        raise Killed("killed while saving")

    monkeypatch.setattr(BoxRegressor, "save", half_save)
    with pytest.raises(Killed):
        fit_regressor(*args, model, summary, grid=grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit_summary.json", "regressor.npz.partial"]
    assert json.loads(summary.read_text())["candidates"]

    monkeypatch.undo()
    fit_regressor(*args, model, summary, grid=grid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit_summary.json", "regressor.npz"]
    assert BoxRegressor.load(model).get_params()["alpha"] == grid["alpha"][0]


# --- stage 5: evaluate ------------------------------------------------------------------------------


def test_evaluate_table_equals_hand_recomputation(demo_dataset, shard_stores, fitted) -> None:
    root = demo_dataset["root"]
    paths = {"predictions": root / "pred.csv", "csv": root / "corloc.csv", "md": root / "corloc.md"}
    returned = evaluate(demo_dataset["manifest"], demo_dataset["split"], [str(p) for p in shard_stores],
                        fitted["model"], paths["predictions"], paths["csv"], paths["md"], sigma=2.0,
                        fraction=0.2, iou_threshold=0.5, title="stages")
    predictions = pd.read_csv(paths["predictions"], dtype={"image_id": str, "label": str})
    split = read_split(demo_dataset["split"])
    assert sorted(predictions["image_id"]) == sorted(split.index[split == "test"])
    assert not predictions.duplicated(["image_id", "label"]).any()

    gt = [np.asarray(json.loads(b)) for b in predictions["boxes"]]
    expected_rows = []
    for label, group in predictions.groupby("label"):
        expected_rows.append({"class": label, "n_images": len(group)})
    for method in METHODS:
        boxes = predictions[[f"{method}_{c}" for c in ("x1", "y1", "x2", "y2")]].to_numpy()
        ious = _hand_corloc(boxes, gt)
        np.testing.assert_allclose(predictions[f"{method}_iou"], ious, atol=1e-5)
        correct = ious > 0.5
        assert (predictions[f"{method}_correct"] == correct).all()
        for row in expected_rows:
            row[f"corloc_{method}"] = 100.0 * correct[(predictions["label"] == row["class"]).to_numpy()].mean()
    expected = pd.DataFrame(expected_rows)
    average = {"class": "Average", "n_images": int(expected["n_images"].sum())}
    average |= {f"corloc_{m}": expected[f"corloc_{m}"].mean() for m in METHODS}
    overall = {"class": "All images", "n_images": len(predictions)}
    overall |= {f"corloc_{m}": 100.0 * predictions[f"{m}_correct"].mean() for m in METHODS}
    expected = pd.concat([expected, pd.DataFrame([average, overall])], ignore_index=True)

    table = pd.read_csv(paths["csv"])
    assert list(table.columns) == ["class", "n_images"] + [f"corloc_{m}" for m in METHODS]
    assert table["class"].tolist() == ["kangaroo", "raccoon", "Average", "All images"]
    assert table["n_images"].tolist() == expected["n_images"].tolist()
    for method in METHODS:
        np.testing.assert_allclose(table[f"corloc_{method}"], expected[f"corloc_{method}"], atol=1e-4)
        np.testing.assert_allclose(returned[f"corloc_{method}"], expected[f"corloc_{method}"])
    markdown = paths["md"].read_text()  # the table as read, then its notes (intervals, maps)
    assert markdown.startswith(to_markdown(corloc_display(returned, METHOD_NAMES), "stages") + "\nCorLoc in % of")
    assert "\n\nMaps: efficientnet_lite0, " in markdown


# --- tables -----------------------------------------------------------------------------------------


def test_box_model_note_names_one_model_or_the_members_of_an_ensemble(tmp_path) -> None:
    from sensitivity.pipeline.evaluate import box_model_note

    shape = {"features": "shape", "alpha": 10.0, "pool": None, "normalize": None, "target": "corners",
             "embedding_components": 16, "loss": "huber", "start": None}
    pooled = {"features": "pooled", "alpha": 0.1, "pool": 7, "normalize": "max", "target": "corners",
              "embedding_components": 0, "loss": "squared", "start": "fine-tuned"}
    summary = {"chosen_on": "5-fold cross-validation on train + val", "score": 0.625, "n_choice_rows": 80,
               "prior": {"model": "prior.npz", "used": True}, "candidates": [shape, pooled, {}]}
    path = tmp_path / "fit_summary.json"
    path.write_text(json.dumps(summary | {"chosen": shape | {"solver": "ridge"}}))
    assert box_model_note(path).startswith("Learned box: shape features, ridge, alpha 10, 16 embedding components, "
                                           "huber loss; "
                                           "chosen by 5-fold cross-validation on train + val among 3 candidates "
                                           "(CorLoc 62.5 % on 80 images; fit_summary.json).")
    path.write_text(json.dumps(summary | {"chosen": {"ensemble": [0, 1], "members": [shape, pooled],
                                                     "solver": "ridge"}}))
    assert box_model_note(path).startswith(
        "Learned box: the average box of 2 ridge box models (shape features, alpha 10, 16 embedding components, "
        "huber loss; "
        "pooled features, alpha 0.1, pool 7, normalize max, the prior box model prior.npz fine-tuned (alpha: "
        "penalty towards its weights)); chosen by 5-fold")


def test_corloc_table_and_markdown_formatting() -> None:
    predictions = pd.DataFrame({
        "label": ["b", "a", "a", "b", "b"],
        "x_correct": [True, True, False, False, False],
    })
    table = corloc_table(predictions, ["x"])
    assert table["class"].tolist() == ["a", "b", "Average", "All images"]
    assert table["n_images"].tolist() == [2, 3, 5, 5]
    np.testing.assert_allclose(table["corloc_x"], [50.0, 100 / 3, (50.0 + 100 / 3) / 2, 40.0])
    assert to_markdown(table, "Demo") == (
        "## Demo\n\n"
        "| class | n_images | corloc_x |\n"
        "|---|---:|---:|\n"
        "| a | 2 | 50.00 |\n"
        "| b | 3 | 33.33 |\n"
        "| **Average** | **5** | **41.67** |\n"
        "| **All images** | **5** | **40.00** |\n"
    )
    assert to_markdown(table).startswith("| class |")


# --- stores -----------------------------------------------------------------------------------------


def test_store_round_trip_keeps_tiny_maps_precise(tmp_path) -> None:
    rng = np.random.default_rng(0)
    ids = ["a/1", "a/2", "b/1", "b/2"]
    maps = np.stack([
        rng.uniform(0.1, 1.0, (56, 56)) * 1e-7,   # gradients of a saturated network: ~1e-7
        rng.uniform(0.1, 1.0, (56, 56)) * 3e-3,
        rng.uniform(0.1, 1.0, (56, 56)) * 2e+2,
        np.zeros((56, 56)),                       # a flat map stays exactly zero
    ]).astype(np.float32)
    writer = MapStoreWriter(tmp_path / "s.zarr", ids, 56, {"model": "m"})
    writer.write(np.array([2, 0]), maps[[2, 0]], np.array([7, 5]),  # rows out of order
                 np.array([[7, 1, 2, 3, 4], [5, 6, 0, 8, 9]]))
    writer.write(np.array([3, 1]), maps[[3, 1]], top5=np.array([[1, 0], [0, 1]]))  # a 2-class head
    assert (tmp_path / "s.zarr.partial").is_dir() and not (tmp_path / "s.zarr").exists()
    path = writer.close()
    assert path == tmp_path / "s.zarr" and not (tmp_path / "s.zarr.partial").exists()

    store = MapStore(path)
    assert store.image_ids.tolist() == ids and store.valid.all()
    assert store.class_index.tolist() == [5, -1, 7, -1]
    assert store.top5.tolist() == [[5, 6, 0, 8, 9], [0, 1, -1, -1, -1], [7, 1, 2, 3, 4], [1, 0, -1, -1, -1]]
    assert store.attrs["complete"] is True and store.attrs["model"] == "m" and store.attrs["n_images"] == 4
    back = store.read(0, 4)
    assert back.dtype == np.float32 and back.shape == maps.shape
    nonzero = maps[:3]
    assert (np.abs(back[:3] - nonzero) / nonzero).max() < 1e-3
    assert (back[3] == 0).all()
    assert zarr.open_group(path, mode="r")["maps"].dtype == np.float16


def test_store_writer_refuses_to_publish_missing_rows(tmp_path) -> None:
    writer = MapStoreWriter(tmp_path / "s.zarr", ["a", "b"], 8, {})
    writer.write(np.array([0]), np.ones((1, 8, 8)))
    with pytest.raises(StoreError, match="1 of 2"):
        writer.close()
    assert not (tmp_path / "s.zarr").exists()
    with pytest.raises(StoreError, match="incomplete"):
        MapStore(tmp_path / "s.zarr.partial")


# --- split seeds ----------------------------------------------------------------------------------------


def test_seed_study_reruns_split_fit_and_evaluate_per_seed(demo_dataset, shard_stores, tmp_path) -> None:
    from sensitivity.pipeline.seeds import seed_study

    regression = {"solver": "ridge", "grid": GRID | {"features": ["pooled", "shape"]}}
    evaluation = {"iou_threshold": 0.5, "heuristic": {"sigma": 2.0, "fraction": 0.2}}
    stores = [str(p) for p in shard_stores]
    frame = seed_study(demo_dataset["manifest"], stores, [0.5, 0.25, 0.25], [0, 3], regression, evaluation,
                       tmp_path / "seeds.csv", tmp_path / "seeds.md", title="seeds")
    assert frame["seed"].tolist() == ["0", "3", "mean", "std"]

    # seed 0 is the fixture's own split: the same numbers as the stages run by hand on it
    fit_regressor(demo_dataset["manifest"], demo_dataset["split"], stores, tmp_path / "r.npz", tmp_path / "s.json",
                  grid=regression["grid"])
    table = evaluate(demo_dataset["manifest"], demo_dataset["split"], stores, tmp_path / "r.npz", tmp_path / "p.csv",
                     tmp_path / "t.csv", tmp_path / "t.md", sigma=2.0).set_index("class")
    for method in METHODS:
        assert frame.loc[0, f"average_{method}"] == pytest.approx(table.loc["Average", f"corloc_{method}"])
        assert frame.loc[0, f"all_{method}"] == pytest.approx(table.loc["All images", f"corloc_{method}"])
        values = frame.loc[:1, f"average_{method}"].astype(float)
        assert frame.loc[2, f"average_{method}"] == pytest.approx(values.mean())
        assert frame.loc[3, f"average_{method}"] == pytest.approx(values.std())
    assert frame.loc[0, "n_test"] == table.loc["All images", "n_images"]
    chosen = json.loads((tmp_path / "s.json").read_text())["chosen"]  # the seed study names the fit's choice
    assert frame.loc[0, "box_model"] == ("ensemble" if "ensemble" in chosen else chosen["features"])
    assert pd.read_csv(tmp_path / "seeds.csv")["seed"].astype(str).tolist() == ["0", "3", "mean", "std"]
    assert (tmp_path / "seeds.md").read_text().startswith("## seeds\n\n| seed | n_test | box_model |")
