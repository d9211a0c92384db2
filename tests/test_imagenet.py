"""ImageNet in the download's layout: genuine ILSVRC-2012 val files of ../shared, a train-part fixture
built from them, the true-class maps, the classifier's accuracy and the sample workflow run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sensitivity.pipeline.extract as extract_module
from sensitivity.datasets import read_imagenet, synset_to_index, write_manifest
from sensitivity.pipeline.classify import classifier_accuracy
from sensitivity.pipeline.extract import extract_shard
from sensitivity.pipeline.prepare import read_dataset
from sensitivity.store import MapStore

REPO = Path(__file__).resolve().parents[1]
VAL_IDS = ["ILSVRC2012_val_00000347", "ILSVRC2012_val_00000355", "ILSVRC2012_val_00000361"]


@pytest.fixture(scope="module")
def imagenet_root(shared_data) -> Path:
    return shared_data / "imagenet_loc"


def test_known_images_have_their_synset_and_output_index(imagenet_root) -> None:
    manifest, _ = read_imagenet(imagenet_root, "val")
    index = synset_to_index(imagenet_root / "LOC_synset_mapping.txt")
    labels = manifest.set_index("image_id")["label"]
    # LOC_val_solution.csv: 00000347 is n02951358 (canoe, output 472), 00000355 n02112137 (chow, 260)
    assert labels["ILSVRC2012_val_00000347"] == "n02951358" and index["n02951358"] == 472
    assert labels["ILSVRC2012_val_00000355"] == "n02112137" and index["n02112137"] == 260
    original = pd.read_csv(imagenet_root / "val_boxes_original.csv").drop_duplicates("image_id")
    assert (original["synset"].map(index) == original["class_index"]).all()


def test_boxes_are_the_original_boxes_scaled_to_227(imagenet_root) -> None:
    """The publisher squashed every image to 227x227 and scaled the 0-based inclusive box corners by
    (227/W, 227/H), rounded and clipped to 226 (its MANIFEST): recompute that from the original boxes."""
    manifest, _ = read_imagenet(imagenet_root, "val")
    boxes = manifest.set_index("image_id")["boxes"]
    original = pd.read_csv(imagenet_root / "val_boxes_original.csv")
    assert set(original["image_id"]) == set(boxes.index)
    for image_id, group in original.groupby("image_id"):
        w, h = group["orig_width"].to_numpy()[:, None], group["orig_height"].to_numpy()[:, None]
        corners = group[["xmin", "ymin", "xmax", "ymax"]].to_numpy() * 227 / np.hstack([w, h, w, h])
        scaled = np.clip(np.floor(corners + 0.5), 0, 226) + np.array([0, 0, 1, 1])  # inclusive → pixel edges
        ours = np.asarray(json.loads(boxes[image_id]))
        np.testing.assert_allclose(np.sort(ours, axis=0), np.sort(scaled / 227, axis=0), atol=1e-9,
                                   err_msg=image_id)


def build_train_part(imagenet_root: Path, dest: Path, per_class: int = 2) -> Path:
    """A download-shaped root with a ``train`` part (``train/<wnid>/<wnid>_<k>.JPEG``, XML and
    ``LOC_train_solution.csv``) made of genuine val images of the 3-image synsets, plus the val part."""
    manifest, _ = read_imagenet(imagenet_root, "val")
    counts = manifest["label"].value_counts()
    wnids = sorted(counts[counts >= 3].index)[:3]
    shutil.copytree(imagenet_root, dest)
    lines = ["ImageId,PredictionString"]
    for wnid in wnids:
        rows = manifest[manifest["label"] == wnid].sort_values("image_id").head(per_class)
        for k, row in enumerate(rows.itertuples(), 1):
            train_id = f"{wnid}_{k}"
            data = dest / "ILSVRC" / "Data" / "CLS-LOC" / "train" / wnid
            ann = dest / "ILSVRC" / "Annotations" / "CLS-LOC" / "train" / wnid
            data.mkdir(parents=True, exist_ok=True)
            ann.mkdir(parents=True, exist_ok=True)
            shutil.copy2(row.path, data / f"{train_id}.JPEG")
            xml = (imagenet_root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val" / f"{row.image_id}.xml").read_text()
            (ann / f"{train_id}.xml").write_text(xml.replace(row.image_id, train_id))
            solution = pd.read_csv(imagenet_root / "LOC_val_solution.csv").set_index("ImageId")
            lines.append(f"{train_id},{solution.loc[row.image_id, 'PredictionString']}")
    (dest / "LOC_train_solution.csv").write_text("\n".join(lines) + "\n")
    return dest


def test_train_and_val_parts_read_together_and_layouts_agree(imagenet_root, tmp_path) -> None:
    root = build_train_part(imagenet_root, tmp_path / "imagenet")
    spec = {"kind": "imagenet", "root": str(root)}
    train, _ = read_dataset(spec | {"parts": ["train"]})
    assert len(train) == 6 and train["image_id"].str.fullmatch(r"n\d{8}_\d").all()
    assert (train["path"].map(lambda p: Path(p).parent.name) == train["label"]).all()
    via_csv, _ = read_dataset(spec | {"parts": ["train"], "layout": "csv"})
    pd.testing.assert_frame_equal(train, via_csv)
    both, _ = read_dataset(spec | {"parts": ["train", "val"]})
    assert len(both) == 6 + 910 and both["image_id"].is_unique
    val, _ = read_dataset(spec | {"parts": ["val"]})
    pd.testing.assert_frame_equal(both.iloc[6:].reset_index(drop=True), val)


@pytest.fixture(scope="module")
def true_class_store(imagenet_root, lite0, tmp_path_factory) -> tuple[Path, Path, Path]:
    """Class-score maps of the true class for three genuine val images, with their manifest and split."""
    root = tmp_path_factory.mktemp("true_class")
    manifest, _ = read_imagenet(imagenet_root, "val")
    manifest = manifest[manifest["image_id"].isin(VAL_IDS)].reset_index(drop=True)
    write_manifest(manifest, root / "manifest.csv")
    pd.DataFrame({"image_id": VAL_IDS, "split": ["train", "val", "test"]}).to_csv(root / "split.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "load_model", lambda *args, **kwargs: lite0)
        store = extract_shard(root / "manifest.csv", root / "maps.zarr", "1-of-1",
                              {"name": "efficientnet_lite0", "weights": None}, "class", "mean", 56,
                              class_source="true", synset_mapping=str(imagenet_root / "LOC_synset_mapping.txt"),
                              device="cpu", num_workers=0)
    return root / "manifest.csv", root / "split.csv", store


def test_true_class_maps_use_the_annotated_synset_and_store_the_top5(true_class_store, imagenet_root,
                                                                     lite0) -> None:
    import torch

    from sensitivity.images import read_image
    from sensitivity.maps import sensitivity

    manifest_path, _, store_path = true_class_store
    store = MapStore(store_path)
    index = synset_to_index(imagenet_root / "LOC_synset_mapping.txt")
    labels = pd.read_csv(manifest_path).set_index("image_id")["label"]
    assert store.class_index.tolist() == [index[labels[i]] for i in store.image_ids]
    assert store.attrs["class_source"] == "true"
    paths = pd.read_csv(manifest_path).set_index("image_id")["path"]
    transform = lite0.preprocessing.transform("squash")
    batch = torch.stack([transform(read_image(paths[i])) for i in store.image_ids])
    logits = lite0.network(batch)
    assert store.top5.tolist() == logits.topk(5, dim=1).indices.tolist()
    expected = sensitivity(lite0, batch, "class", "mean", classes=torch.as_tensor(store.class_index)).maps
    pooled = torch.nn.functional.avg_pool2d(expected[:, None], 4)[:, 0].numpy()
    np.testing.assert_allclose(store.read(0, 3), pooled, rtol=2e-3, atol=1e-3 * pooled.max())


def test_classifier_accuracy_counts_top1_and_top5_per_split(true_class_store, imagenet_root, tmp_path) -> None:
    manifest_path, split_path, store_path = true_class_store
    store = MapStore(store_path)
    table = classifier_accuracy(manifest_path, split_path, [store_path], imagenet_root / "LOC_synset_mapping.txt",
                                tmp_path / "classifier.csv").set_index("split")
    hit1 = store.top5[:, 0] == store.class_index
    hit5 = (store.top5 == store.class_index[:, None]).any(axis=1)
    split = pd.read_csv(split_path).set_index("image_id")["split"]
    for name in ("train", "val", "test"):
        (k,) = np.flatnonzero(split[store.image_ids].to_numpy() == name)
        assert table.loc[name, "n_images"] == 1
        assert table.loc[name, ["top1", "top5"]].tolist() == [100.0 * hit1[k], 100.0 * hit5[k]]
    assert table.loc["all", "top1"] == pytest.approx(100 * hit1.mean())
    assert table.loc["all", "top5"] == pytest.approx(100 * hit5.mean())
    assert pd.read_csv(tmp_path / "classifier.csv")["split"].tolist() == ["train", "val", "test", "all"]


def test_classifier_accuracy_names_labels_outside_the_mapping(true_class_store, tmp_path) -> None:
    manifest_path, split_path, store_path = true_class_store
    mapping = tmp_path / "mapping.txt"
    mapping.write_text("n00000001 something\n")
    with pytest.raises(ValueError, match="labels not in"):
        classifier_accuracy(manifest_path, split_path, [store_path], mapping, tmp_path / "out.csv")


@pytest.mark.slow
def test_sample_config_runs_end_to_end(imagenet_root, tmp_path) -> None:
    """`results/imagenet_corloc.csv` from configs/imagenet_sample.yaml, on a 60-image copy of the sample
    in the same layout (the full sample is the documented run; this keeps the suite fast)."""
    from test_workflow import copy_project

    project = copy_project(tmp_path / "project")
    (project / "configs").mkdir()
    shutil.copy2(REPO / "configs" / "imagenet_sample.yaml", project / "configs")
    sample = tmp_path / "shared" / "data" / "imagenet_loc"  # ../shared/data/imagenet_loc seen from the project
    manifest, _ = read_imagenet(imagenet_root, "val")
    keep = manifest.sort_values("image_id")["image_id"].head(60).tolist()
    for folder in ("Data", "Annotations"):
        (sample / "ILSVRC" / folder / "CLS-LOC" / "val").mkdir(parents=True)
        for image_id in keep:
            suffix = ".JPEG" if folder == "Data" else ".xml"
            name = f"{image_id}{suffix}"
            shutil.copy2(imagenet_root / "ILSVRC" / folder / "CLS-LOC" / "val" / name,
                         sample / "ILSVRC" / folder / "CLS-LOC" / "val" / name)
    shutil.copy2(imagenet_root / "LOC_synset_mapping.txt", sample)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "results/imagenet_corloc.csv",
               "--configfile", "demo_fast.yaml", "configs/imagenet_sample.yaml"]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]

    table = pd.read_csv(project / "results" / "imagenet_corloc.csv")
    assert table["class"].tolist()[-2:] == ["Average", "All images"]
    predictions = pd.read_csv(project / "results" / "imagenet_predictions.csv")
    assert table["n_images"].iloc[-1] == len(predictions) > 0
    for method in ("regression", "heuristic", "centre"):
        assert table[f"corloc_{method}"].iloc[-1] == pytest.approx(100 * predictions[f"{method}_correct"].mean())
    accuracy = pd.read_csv(project / "results" / "imagenet_classifier.csv").set_index("split")
    assert accuracy.loc["all", "n_images"] == 60 and accuracy.loc["all", "top1"] > 50
    markdown = (project / "results" / "imagenet_corloc.md").read_text()
    assert "Classifier top-1" in markdown and "**All images**" in markdown


@pytest.mark.slow
def test_maxboxacc_of_true_class_maps_on_genuine_images_stays_in_its_band(imagenet_root, lite0) -> None:
    """MaxBoxAccV2 (τ chosen on these same images, as wsolevaluation does) of three map methods on the first 96
    sample images, pinned: Grad-CAM 66.7 %, CAM 66.7 %, the paper's gradient map 56.9 % when measured."""
    import torch

    from sensitivity.images import read_image
    from sensitivity.map_methods import compute_maps
    from sensitivity.maps import pool_maps
    from sensitivity.metrics import maxboxacc

    manifest, _ = read_imagenet(imagenet_root, "val")
    rows = manifest.sort_values("image_id").head(96)
    index = synset_to_index(imagenet_root / "LOC_synset_mapping.txt")
    transform = lite0.preprocessing.transform("squash")
    images = torch.stack([transform(read_image(path)) for path in rows["path"]])
    classes = torch.tensor([index[label] for label in rows["label"]])
    boxes = [np.asarray(json.loads(b)) for b in rows["boxes"]]
    scores = {}
    for method in ("gradient", "gradcam", "cam"):
        maps = torch.cat([compute_maps(lite0, images[i:i + 16], method, target="class", aggregate="mean",
                                       classes=classes[i:i + 16]).maps for i in range(0, len(images), 16)])
        scores[method] = maxboxacc(pool_maps(maps, 56).numpy(), boxes)["mean"]
    assert 0.63 <= scores["gradcam"] <= 0.70, scores
    assert 0.53 <= scores["gradient"] <= 0.61, scores
    assert abs(scores["cam"] - scores["gradcam"]) <= 0.02, scores  # the same map up to ReLU and scale on Lite0
