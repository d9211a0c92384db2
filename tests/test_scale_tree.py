"""benchmarks/make_scale_tree.py: box transforms by hand and on drawn pixels, determinism, the download layout
read by the project's ImageNet reader, and the ImageNet workflow end to end on a small generated tree."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sensitivity.datasets import read_imagenet

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("make_scale_tree", REPO / "benchmarks" / "make_scale_tree.py")
make_scale_tree = sys.modules["make_scale_tree"] = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(make_scale_tree)
transform_box = make_scale_tree.transform_box


@pytest.mark.parametrize(
    ("box", "crop", "size", "flip", "expected", "inside"),
    [
        # crop at (10, 20), 100×100 → 200×200 (×2): edges [10, 30) × [20, 60) → [0, 40) × [0, 80)
        ((10, 20, 29, 59), (10, 20, 110, 120), (200, 200), False, (0, 0, 39, 79), 1.0),
        # the same, mirrored: [0, 40) → [160, 200)
        ((10, 20, 29, 59), (10, 20, 110, 120), (200, 200), True, (160, 0, 199, 79), 1.0),
        # half the box left of the crop: [0, 20) clipped to [10, 20) → [0, 10), half its area inside
        ((0, 0, 19, 9), (10, 0, 110, 100), (100, 100), False, (0, 0, 9, 9), 0.5),
        # anisotropic: crop 200×100 → 100×100 (x ×0.5, y ×1): [40, 80) × [10, 30) → [20, 40) × [10, 30)
        ((40, 10, 79, 29), (0, 0, 200, 100), (100, 100), False, (20, 10, 39, 29), 1.0),
        # anisotropic and mirrored: [20, 40) → [60, 80)
        ((40, 10, 79, 29), (0, 0, 200, 100), (100, 100), True, (60, 10, 79, 29), 1.0),
        # entirely outside the crop
        ((0, 0, 9, 9), (50, 50, 100, 100), (50, 50), False, None, 0.0),
    ],
)
def test_transform_box_by_hand(box, crop, size, flip, expected, inside) -> None:
    moved, share = transform_box(box, crop, size, flip)
    assert share == pytest.approx(inside)
    if expected is not None:
        assert moved == expected


@pytest.mark.parametrize("flip", [False, True])
def test_transformed_box_matches_the_transformed_pixels(flip) -> None:
    """A white rectangle drawn at the box, cropped, resized and mirrored as the generator does, lands on the
    transformed box (within one pixel of resampling blur)."""
    box, crop, size = (30, 40, 89, 69), (20, 10, 170, 110), (300, 250)
    canvas = np.zeros((120, 180, 3), dtype=np.uint8)
    canvas[box[1] : box[3] + 1, box[0] : box[2] + 1] = 255
    image = Image.fromarray(canvas).crop(crop).resize(size, Image.Resampling.BICUBIC)
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    ys, xs = np.nonzero(np.asarray(image)[..., 0] > 127)
    moved, share = transform_box(box, crop, size, flip)
    assert share == 1.0
    assert np.abs(np.array(moved) - [xs.min(), ys.min(), xs.max(), ys.max()]).max() <= 1


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tree(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale") / "imagenet"
    make_scale_tree.make_tree(60, out, seed=3, workers=2, source_root=shared_data / "imagenet_loc")
    return out


@pytest.mark.shared
def test_tree_is_deterministic_from_the_seed_whatever_the_workers(tree, shared_data, tmp_path) -> None:
    source = shared_data / "imagenet_loc"
    make_scale_tree.make_tree(60, tmp_path / "again", seed=3, workers=1, source_root=source)
    assert tree_digest(tmp_path / "again") == tree_digest(tree)
    make_scale_tree.make_tree(60, tmp_path / "other", seed=4, workers=1, source_root=source)
    assert tree_digest(tmp_path / "other") != tree_digest(tree)


@pytest.mark.shared
def test_tree_reads_as_the_download_with_classes_kept(tree, shared_data) -> None:
    by_xml, skipped = read_imagenet(tree, "train", layout="xml")
    by_csv, _ = read_imagenet(tree, "train", layout="csv")
    assert skipped.empty and len(by_xml) == by_xml["image_id"].nunique() == 60
    pd.testing.assert_frame_equal(by_xml, by_csv)
    # class kept: each id's synset prefix is its label, and the folder it lives in
    assert (by_xml["image_id"].str.split("_").str[0] == by_xml["label"]).all()
    assert all(Path(path).parent.name == label for path, label in zip(by_xml["path"], by_xml["label"]))
    genuine, _ = read_imagenet(shared_data / "imagenet_loc", "val")
    assert set(by_xml["label"]) <= set(genuine["label"])
    # ImageNet-typical sizes: long side 400-500 px
    assert by_xml[["width", "height"]].max(axis=1).between(400, 500).all()
    for row in by_xml.head(5).itertuples():
        with Image.open(row.path) as img:
            assert img.size == (row.width, row.height)
    assert (tree / "LOC_synset_mapping.txt").read_bytes() == (shared_data / "imagenet_loc" / "LOC_synset_mapping.txt").read_bytes()
    listed = (tree / "ILSVRC" / "ImageSets" / "CLS-LOC" / "train_loc.txt").read_text().split("\n")[:-1]
    assert sorted(line.split()[0].split("/")[1] for line in listed) == sorted(by_xml["image_id"])


@pytest.mark.shared
@pytest.mark.slow
def test_imagenet_workflow_on_a_generated_tree(shared_data, tmp_path) -> None:
    """`results/imagenet_corloc.csv` on a 40-image generated train part, with the stage benchmarks."""
    from test_workflow import copy_project

    project = copy_project(tmp_path / "project")
    make_scale_tree.make_tree(40, project / "data" / "imagenet", seed=0, workers=2,
                              source_root=shared_data / "imagenet_loc")
    shutil.copy2(REPO / "tests" / "workflow_configs" / "scale_small.yaml", project)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "results/imagenet_corloc.csv",
               "--configfile", "demo_fast.yaml", "scale_small.yaml"]
    result = subprocess.run(command, check=False, cwd=project, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]

    manifest = pd.read_csv(project / "results" / "imagenet" / "manifest.csv")
    assert len(manifest) == 40 and manifest["path"].str.contains("/train/").all()
    predictions = pd.read_csv(project / "results" / "imagenet_predictions.csv")
    split = pd.read_csv(project / "results" / "imagenet" / "split.csv")
    assert len(predictions) == (split["split"] == "test").sum() > 0
    table = pd.read_csv(project / "results" / "imagenet_corloc.csv")
    assert table["n_images"].iloc[-1] == len(predictions)
    accuracy = pd.read_csv(project / "results" / "imagenet_classifier.csv").set_index("split")
    assert accuracy.loc["all", "n_images"] == 40
    benchmarks = sorted(p.relative_to(project / "results" / "benchmarks" / "imagenet").as_posix()
                        for p in (project / "results" / "benchmarks" / "imagenet").rglob("*.tsv"))
    assert benchmarks == ["classifier.tsv", "evaluate.tsv", "extract/1-of-2.tsv", "extract/2-of-2.tsv", "fit.tsv",
                          "manifest.tsv", "skipped.tsv", "split.tsv"]
