"""Tests for `sensitivity localize` (sensitivity.cli) and the library behind it (sensitivity.localize).

Real photos from data/demo and the embedded efficientnet_lite0 weights; everything runs on the CPU.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sensitivity import cli
from sensitivity.cli import main

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
KANGAROOS = [DEMO / "kangaroo" / "images" / name for name in ("00013.jpg", "00014.jpg")]
RACCOON = DEMO / "raccoon" / "images" / "raccoon-12.jpg"  # small (259x194): quick
WALLABY = 104
DEFAULT_NOTE = "boxes come from the shipped box model (guided_backprop maps of efficientnet_lite0"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: the suite shares 2 cores with other processes, and oversubscribed OpenMP
    threads spin-wait (10-50x slower passes); results do not depend on the thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process → (exit code, stdout, stderr); argparse exits become exit codes."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def read_rows(out_dir: Path) -> list[dict[str, str]]:
    with open(out_dir / "boxes.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == cli.LOCALIZE_COLUMNS
        return list(reader)


def check_row(row: dict[str, str], out_dir: Path) -> None:
    """Box inside the image in pixels, sensible score, a valid non-empty PNG figure."""
    width, height = int(row["width"]), int(row["height"])
    x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, row
    assert 0 < float(row["score"]) <= 1
    assert 0 <= int(row["class_index"]) < 1000 and row["class_name"]
    figure = out_dir / row["figure"]
    assert figure.suffix == ".png" and figure.stat().st_size > 0
    with Image.open(figure) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 100
        image.verify()


@pytest.fixture(scope="module")
def basic(tmp_path_factory):
    """One in-process run on two kangaroo photos and a raccoon photo, shared by several tests."""
    out_dir = tmp_path_factory.mktemp("basic") / "out"
    images = [str(p) for p in [*KANGAROOS, RACCOON]]
    code, stdout, stderr = run(["localize", *images, "--out", str(out_dir), "--device", "cpu"])
    return images, out_dir, code, stdout, stderr


def test_localize_outputs(basic):
    images, out_dir, code, stdout, stderr = basic
    assert code == 0, stderr
    assert stderr.count(DEFAULT_NOTE) == 1
    assert "error" not in stderr
    lines = stdout.splitlines()
    assert len(lines) == 3
    rows = read_rows(out_dir)
    assert [r["path"] for r in rows] == images
    assert sorted(p.name for p in out_dir.iterdir()) == ["00013.png", "00014.png", "boxes.csv", "raccoon-12.png"]
    for line, row, image_path in zip(lines, rows, images):
        path, index, name, score, box, method = line.split("\t")
        assert (path, index, name, method) == (image_path, row["class_index"], row["class_name"], "regression")
        assert float(score) == pytest.approx(float(row["score"]), abs=1e-4)
        assert [float(v) for v in box.split()] == pytest.approx(
            [float(row[k]) for k in ("x1", "y1", "x2", "y2")], abs=0.06
        )
        with Image.open(image_path) as original:
            assert (int(row["width"]), int(row["height"])) == original.size
        check_row(row, out_dir)
    # both kangaroo photos are confidently wallabies for this network
    assert [int(r["class_index"]) for r in rows[:2]] == [WALLABY, WALLABY]
    assert rows[0]["class_name"] == "wallaby"


def kangaroo_overlaps(rows: list[dict[str, str]]) -> list[float]:
    """Best IoU of each kangaroo row's box with the annotated animals or the box around all of them."""
    import xml.etree.ElementTree as ET

    from sensitivity.boxes import iou_matrix

    overlaps = []
    for row in rows:
        root = ET.parse(DEMO / "kangaroo" / "annotations" / (Path(row["path"]).stem + ".xml")).getroot()
        truth = np.array([[float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                          for b in root.iter("bndbox")])
        pred = np.array([[float(row[k]) for k in ("x1", "y1", "x2", "y2")]])
        union = np.r_[truth[:, :2].min(axis=0), truth[:, 2:].max(axis=0)][None]
        overlaps.append(float(iou_matrix(pred, np.vstack([truth, union])).max()))
    return overlaps


def test_default_boxes_cover_the_kangaroos(basic):
    """The default box (thresholded Grad-CAM) must overlap the annotated animals (a box from a wrong or
    mirrored map would not)."""
    _, out_dir, _, _, _ = basic
    assert min(kangaroo_overlaps(read_rows(out_dir)[:2])) > 0.3


def test_heuristic_box_on_request(tmp_path):
    """`--box heuristic` is the paper's box (σ, top fraction), here on the paper's gradient map."""
    out_dir = tmp_path / "out"
    code, stdout, stderr = run(["localize", *map(str, KANGAROOS), "--box", "heuristic", "--method", "gradient",
                                "--out", str(out_dir), "--device", "cpu"])
    assert code == 0, stderr
    assert ("boxes come from the heuristic on the gradient map (Gaussian σ=8 pixels of a 224-pixel side, top 20% "
            "pixels)") in stderr
    assert [line.split("\t")[-1] for line in stdout.splitlines()] == ["heuristic", "heuristic"]
    assert min(kangaroo_overlaps(read_rows(out_dir))) > 0.3


def test_bad_files_are_reported_and_skipped(tmp_path):
    data = KANGAROOS[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "empty.jpg"
    empty.touch()
    missing = tmp_path / "missing.jpg"
    out_dir = tmp_path / "out"
    argv = ["localize", str(truncated), str(KANGAROOS[0]), str(empty), str(missing), str(RACCOON),
            "--out", str(out_dir), "--batch-size", "2"]
    code, stdout, stderr = run(argv)
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert errors[0].startswith(f"error: {truncated}: ") and "decode" in errors[0]
    assert errors[1].startswith(f"error: {empty}: ") and "empty" in errors[1]
    assert errors[2] == f"error: {missing}: file not found"
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [str(KANGAROOS[0]), str(RACCOON)]
    assert f"3 of 5 inputs failed (rows with an error in {out_dir / 'boxes.csv'})" in stderr
    rows = read_rows(out_dir)  # every input, in input order, the failures with their error only
    assert [r["path"] for r in rows] == argv[1:6]
    for row, error in zip([rows[0], rows[2], rows[3]], errors):
        assert error == f"error: {row['path']}: {row['error']}"
        assert all(row[k] == "" for k in cli.LOCALIZE_COLUMNS if k not in ("path", "error")), row
    for row in (rows[1], rows[4]):
        assert row["error"] == ""
        check_row(row, out_dir)
    assert not (out_dir / "truncated.png").exists() and not (out_dir / "empty.png").exists()


def test_odd_image_formats(tmp_path):
    """Grayscale, CMYK, RGBA and an EXIF-rotated JPEG all work; rotation swaps the reported size."""
    with Image.open(KANGAROOS[0]) as photo:
        photo = photo.convert("RGB").resize((300, 200))
    paths = {
        "grey": tmp_path / "grey.png",
        "cmyk": tmp_path / "cmyk.jpg",
        "rgba": tmp_path / "rgba.png",
        "rotated": tmp_path / "rotated.jpg",
    }
    photo.convert("L").save(paths["grey"])
    photo.convert("CMYK").save(paths["cmyk"])
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    rgba.save(paths["rgba"])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    # large enough to be decoded at reduced size: the reported size must still be the full one
    photo.resize((1000, 900)).save(paths["rotated"], exif=exif)
    out_dir = tmp_path / "out"
    code, _, stderr = run(["localize", *map(str, paths.values()), "--out", str(out_dir)])
    assert code == 0, stderr
    rows = {Path(r["path"]).stem: r for r in read_rows(out_dir)}
    assert set(rows) == set(paths)
    for name, row in rows.items():
        expected = (900, 1000) if name == "rotated" else (300, 200)
        assert (int(row["width"]), int(row["height"])) == expected, name
        check_row(row, out_dir)
    with Image.open(out_dir / "rotated.png") as figure:  # the figure shows the upright (portrait) image
        assert figure.height > figure.width * 0.5


def test_regressor_gives_regression_boxes(tmp_path):
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(0)
    maps = rng.random((12, 224, 224), dtype=np.float32)
    corners = np.sort(rng.random((12, 2, 2)), axis=1)  # (n, [min, max], [x, y])
    boxes = np.column_stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]])
    model_file = tmp_path / "regressor.npz"
    BoxRegressor(pool=8, alpha=10.0).fit(maps, boxes).save(model_file)
    out_dir = tmp_path / "out"
    code, stdout, stderr = run(["localize", str(KANGAROOS[1]), str(RACCOON), "--regressor", str(model_file),
                                "--out", str(out_dir)])
    assert code == 0, stderr
    assert "no --regressor given" not in stderr
    assert [line.split("\t")[-1] for line in stdout.splitlines()] == ["regression", "regression"]
    rows = read_rows(out_dir)
    assert [r["method"] for r in rows] == ["regression", "regression"]
    for row in rows:
        width, height = int(row["width"]), int(row["height"])
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height


def test_regressor_fitted_on_stored_workflow_maps(tmp_path):
    """The workflow fits on 56x56 stored maps: localize pools its 224x224 maps the same way first."""
    from sensitivity.localize import localize_images
    from sensitivity.maps import pool_maps
    from sensitivity.models import load_model
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(2)
    corners = np.sort(rng.random((20, 2, 2)), axis=1)
    boxes = np.column_stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]])
    regressor = BoxRegressor(pool=7, alpha=1.0).fit(rng.random((20, 56, 56)), boxes)
    model = load_model("efficientnet_lite0")
    results, failures = localize_images([KANGAROOS[0]], model, target="gestalt", aggregate="max", regressor=regressor)
    assert not failures and results[0].method == "regression"
    pooled = pool_maps(torch.from_numpy(results[0].map)[None], 56).numpy()
    np.testing.assert_allclose(results[0].box_normalised, regressor.predict(pooled)[0], rtol=1e-5, atol=1e-6)


def test_regressor_ensemble_gives_the_mean_box_of_its_members(tmp_path, lite0):
    """`--regressor` takes an ensemble's file too: its box is the mean of its members' boxes on the map."""
    from sensitivity.box_model import BoxEnsemble
    from sensitivity.localize import localize_images
    from sensitivity.maps import pool_maps
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(4)
    maps = rng.random((30, 56, 56))
    corners = np.sort(rng.random((30, 2, 2)), axis=1)
    boxes = np.column_stack([corners[:, 0, 0], corners[:, 0, 1], corners[:, 1, 0], corners[:, 1, 1]])
    ensemble = BoxEnsemble([BoxRegressor(pool=7, alpha=1.0), BoxRegressor(pool=14, normalize="max", alpha=10.0,
                                                                          target="centre_size")]).fit(maps, boxes)
    ensemble.provenance_ = {"model": "efficientnet_lite0", "target": "gestalt", "aggregate": "max",
                            "method": "gradient", "method_settings": {}}
    path = tmp_path / "ensemble.npz"
    ensemble.save(path)
    csv_path = tmp_path / "boxes.csv"
    code, stdout, stderr = run(["localize", str(RACCOON), "--regressor", str(path), "--boxes-csv", str(csv_path)])
    assert code == 0, stderr
    assert stdout.splitlines()[0].split("\t")[-1] == "regression"
    with open(csv_path, newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    (result,), _ = localize_images([RACCOON], lite0, target="gestalt", aggregate="max", regressor=ensemble)
    pooled = pool_maps(torch.from_numpy(result.map)[None], 56).numpy()
    mean_box = np.mean([member.predict(pooled)[0] for member in ensemble.members_], axis=0)
    np.testing.assert_allclose(result.box_normalised, mean_box, rtol=1e-5, atol=1e-6)
    width, height = int(row["width"]), int(row["height"])
    np.testing.assert_allclose([float(row[k]) for k in ("x1", "y1", "x2", "y2")],
                               mean_box * [width, height, width, height], atol=0.01)


def test_unusable_regressor_is_a_usage_error(tmp_path):
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(1)
    small = tmp_path / "small.npz"
    BoxRegressor(pool=5).fit(rng.random((8, 30, 30)), np.tile([0.1, 0.1, 0.9, 0.9], (8, 1))).save(small)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a regressor")
    not_a_model = "not a box model (not an .npz archive); a box model is the .npz that the workflow's fit stage"
    for bad, expected in [(small, "30x30"), (garbage, f"garbage.npz: {not_a_model}"), (RACCOON, not_a_model),
                          (tmp_path / "none.npz", "none.npz: no such file")]:
        code, stdout, stderr = run(["localize", str(RACCOON), "--regressor", str(bad), "--out", str(tmp_path / "o")])
        assert code == 2 and expected in stderr and stdout == "", stderr
        assert stderr.startswith("sensitivity localize: error: --regressor: ") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "o").exists()


def test_gestalt_max(tmp_path):
    out_dir = tmp_path / "out"
    code, _, stderr = run(["localize", str(KANGAROOS[1]), "--target", "gestalt", "--aggregate", "max",
                           "--out", str(out_dir)])
    assert code == 0, stderr
    (row,) = read_rows(out_dir)
    check_row(row, out_dir)
    assert int(row["class_index"]) == WALLABY  # the class still comes from the full network


def test_colliding_stems_do_not_overwrite(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(RACCOON, tmp_path / folder / "same.jpg")
    shutil.copy(KANGAROOS[0], tmp_path / "a" / "SAME.jpg")
    out_dir = tmp_path / "out"
    images = [str(tmp_path / "a" / "same.jpg"), str(tmp_path / "b" / "same.jpg"), str(tmp_path / "a" / "SAME.jpg")]
    code, _, stderr = run(["localize", *images, "--out", str(out_dir), "--batch-size", "1"])
    assert code == 0, stderr
    rows = read_rows(out_dir)
    assert [r["figure"] for r in rows] == ["same.png", "same-1.png", "SAME-2.png"]
    for row in rows:
        check_row(row, out_dir)


@pytest.mark.parametrize(
    "argv",
    [
        ["localize"],
        ["localize", "x.jpg", "--target", "logit"],
        ["localize", "x.jpg", "--aggregate", "sum"],
        ["localize", "x.jpg", "--fraction", "0"],
        ["localize", "x.jpg", "--sigma", "-1"],
        ["localize", "x.jpg", "--batch-size", "0"],
        ["localize", "x.jpg", "--device", "tpu"],
        [],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv, tmp_path):
    code, stdout, stderr = run(argv)
    assert code == 2 and "usage:" in stderr and stdout == ""


def test_unknown_model_and_bad_weights_exit_2(tmp_path):
    code, _, stderr = run(["localize", str(RACCOON), "--model", "no_such_net", "--out", str(tmp_path / "o")])
    assert code == 2 and "no_such_net" in stderr
    weights = tmp_path / "weights.pt"
    weights.write_text("nope")
    code, _, stderr = run(["localize", str(RACCOON), "--weights", str(weights), "--out", str(tmp_path / "o")])
    assert code == 2 and "weights.pt" in stderr


def test_weights_that_cannot_be_fetched_exit_2_in_one_line(tmp_path, monkeypatch):
    """--model vgg16 without network access (here: its download sent to a closed loopback port, TORCH_HOME
    empty): one line naming the weights, their URL, where they are cached and --weights; exit 2."""
    import socket

    import torch.hub
    from torchvision.models import VGG16_Weights

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    download = torch.hub.download_url_to_file

    def to_closed_port(url, dst, *args, **kwargs):
        return download(f"http://127.0.0.1:{port}/x.pth", dst, *args, **kwargs)

    monkeypatch.setattr(torch.hub, "download_url_to_file", to_closed_port)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, stdout, stderr = run(["localize", str(RACCOON), "--model", "vgg16", "--out", str(tmp_path / "o")])
    assert code == 2 and stdout == ""
    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert stderr.startswith(f"sensitivity localize: error: cannot fetch the vgg16 weights VGG16_Weights.IMAGENET1K_V1 "
                             f"from {url} (")
    assert f"they are cached as {cached} (torch.hub.get_dir(), under TORCH_HOME)" in stderr
    assert "--weights FILE" in stderr and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "o").exists()


def test_cli_defaults_match_the_library():
    from sensitivity import boxes, images, localize

    assert (cli.DEFAULT_SIGMA, cli.DEFAULT_FRACTION, cli.SIGMA_REFERENCE_SIDE) == (
        boxes.DEFAULT_SIGMA, boxes.DEFAULT_FRACTION, boxes.SIGMA_REFERENCE_SIDE)
    assert cli.IMAGE_SUFFIXES == localize.IMAGE_SUFFIXES
    assert cli.DEFAULT_MAX_PIXELS == images.MAX_PIXELS
    assert (cli.MAP_DEFAULTS, cli.BOXES) == (localize.MAP_DEFAULTS, localize.BOXES)
    assert cli.BOX_CHOICES == localize.BOX_CHOICES == ("learned", *localize.BOXES)


def test_shipped_box_model_gives_way_to_flags_it_was_not_fitted_on(tmp_path):
    """The shipped box model is the default; a map flag it was not fitted on falls back to the threshold box
    (with a note), unless the learned box was asked for: then it is an error naming both values."""
    csv_path = tmp_path / "boxes.csv"
    code, stdout, stderr = run(["localize", str(RACCOON), "--method", "gradcam", "--boxes-csv", str(csv_path)])
    assert code == 0, stderr
    assert stdout.rstrip().endswith("\tthreshold")
    assert "method='guided_backprop' (here 'gradcam'); use maps made the same way; boxes come from the gradcam map" in stderr
    code, stdout, stderr = run(["localize", str(RACCOON), "--box", "learned", "--method", "gradcam",
                                "--boxes-csv", str(csv_path)])
    assert code == 2 and stdout == ""
    assert "--box learned" in stderr and "method='guided_backprop' (here 'gradcam')" in stderr
    assert len(stderr.strip().splitlines()) == 1
    from sensitivity.localize import DEFAULT_BOX_MODEL

    code, _, stderr = run(["localize", str(RACCOON), "--regressor", str(DEFAULT_BOX_MODEL),
                           "--box", "heuristic", "--boxes-csv", str(csv_path)])
    assert code == 2 and "--box heuristic: --regressor gives a learned box" in stderr


def test_shipped_box_model_records_how_and_on_what_it_was_fitted(tmp_path):
    from sensitivity.localize import DEFAULT_BOX_MODEL, default_box_model

    model = default_box_model()
    made = model.provenance_
    assert (made["model"], made["method"], made["target"], made["aggregate"]) == (
        "efficientnet_lite0", "guided_backprop", "gestalt", "max")
    assert made["map_size"] == 56 and model.n_channels_ == 2 and model.n_embedding_ == 1280
    assert model.fitted_on_["dataset"] == "box_model" and model.fitted_on_["n_images"] == 910
    assert model.fitted_on_["splits"] == ["train", "val"] and 0.6 < model.fitted_on_["score"] < 0.75
    # the file is the canonical serialisation of the model: saving it again gives the same bytes
    model.save(tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == DEFAULT_BOX_MODEL.read_bytes()


def test_expand_image_paths(tmp_path):
    from sensitivity.localize import EMPTY_FOLDER, Failure, expand_image_paths

    for name in ("b.JPG", "a.png", "c.jpeg", "notes.txt", ".hidden.jpg", "sub/d.jpg", ".cache/e.jpg"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    photos = tmp_path / "photos"
    missing = [str(tmp_path / "gone") + os.sep, str(tmp_path / "gone"), str(tmp_path / "gone.jpg")]
    found, failed = expand_image_paths([photos, "x.gif", tmp_path / "empty", *missing])
    assert found == [str(photos / n) for n in ("a.png", "b.JPG", "c.jpeg")] + ["x.gif", missing[2]]
    assert failed == [Failure(str(tmp_path / "empty"), EMPTY_FOLDER), Failure(missing[0], "no such folder"),
                      Failure(missing[1], "no such file or folder")]
    found, _ = expand_image_paths([photos], recursive=True)
    assert found == [str(photos / n) for n in ("a.png", "b.JPG", "c.jpeg", "sub/d.jpg")]


@pytest.fixture(scope="module")
def fitted_regressor(tmp_path_factory, make_demo_subset, lite0):
    """A BoxRegressor fitted, as the workflow does, on real gestalt/max maps (pooled to 56²) of 10 demo photos
    (5 kangaroos, 5 raccoons) and their annotated boxes (the largest one per image)."""
    from sensitivity.boxes import largest_box
    from sensitivity.datasets import read_folder_dataset
    from sensitivity.localize import localize_images
    from sensitivity.maps import pool_maps
    from sensitivity.regress import BoxRegressor

    root = tmp_path_factory.mktemp("fit")
    manifest, _ = read_folder_dataset(make_demo_subset(root / "data", 5))
    done, failed = localize_images(manifest["path"], lite0, target="gestalt", aggregate="max", box="threshold",
                                   batch_size=10)
    assert not failed
    maps = pool_maps(torch.from_numpy(np.stack([d.map for d in done])), 56).numpy()
    targets = np.stack([largest_box(np.asarray(json.loads(b))) for b in manifest["boxes"]])
    path = root / "regressor.npz"
    BoxRegressor(pool=7, normalize="max", alpha=1.0).fit(maps, targets).save(path)
    return path


def test_folder_with_regressor_to_boxes_csv(fitted_regressor, lite0, tmp_path, monkeypatch):
    """`localize DIR --regressor FILE --boxes-csv OUT.csv`: one row per image of the folder (sorted), boxes in
    the original images' pixels, the CSV exactly at OUT.csv, and no figures (no --out)."""
    from sensitivity.localize import localize_images
    from sensitivity.regress import BoxRegressor

    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    held_out = [DEMO / "kangaroo" / "images" / "00182.jpg", DEMO / "raccoon" / "images" / "raccoon-98.jpg"]
    for source in held_out:
        shutil.copy(source, photos / source.name)
    shutil.copy(RACCOON, photos / "more" / RACCOON.name)
    (photos / "README.txt").write_text("not an image")
    monkeypatch.chdir(tmp_path)
    out_csv = tmp_path / "results" / "boxes" / "held_out.csv"
    argv = ["localize", str(photos), "--regressor", str(fitted_regressor), "--boxes-csv", str(out_csv),
            "--target", "gestalt", "--aggregate", "max", "--device", "cpu"]
    code, stdout, stderr = run(argv)
    assert code == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "results"]  # no figure folder
    assert [p.name for p in out_csv.parent.iterdir()] == ["held_out.csv"]
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected_paths = [str(photos / "00182.jpg"), str(photos / "raccoon-98.jpg")]
    assert [r["path"] for r in rows] == expected_paths and len(stdout.splitlines()) == 2
    assert [(r["method"], r["figure"]) for r in rows] == [("regression", ""), ("regression", "")]
    regressor = BoxRegressor.load(fitted_regressor)
    library, _ = localize_images(expected_paths, lite0, target="gestalt", aggregate="max", regressor=regressor)
    for row, loc, source in zip(rows, library, held_out):
        with Image.open(source) as original:
            assert (int(row["width"]), int(row["height"])) == original.size == (loc.width, loc.height)
        box = [float(row[k]) for k in ("x1", "y1", "x2", "y2")]
        w, h = loc.width, loc.height
        np.testing.assert_allclose(box, loc.box_normalised * [w, h, w, h], atol=0.01)
        assert row["class_name"] == loc.class_name

    # --recursive adds the sub-folder's image; with --out the figures are drawn there, the CSV stays put
    code, stdout, stderr = run([*argv, "--recursive", "--out", str(tmp_path / "figures")])
    assert code == 0, stderr
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    in_more = str(photos / "more" / RACCOON.name)  # sorted by path: photos/more/... before photos/raccoon-98.jpg
    assert [r["path"] for r in rows] == [expected_paths[0], in_more, expected_paths[1]]
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["00182.png", "raccoon-12.png",
                                                                      "raccoon-98.png"]
    for row in rows:
        check_row(row, tmp_path / "figures")


def test_folder_without_images_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    out_csv = tmp_path / "boxes.csv"
    code, stdout, stderr = run(["localize", str(tmp_path / "empty"), str(RACCOON), "--boxes-csv", str(out_csv)])
    assert code == 1
    assert f"error: {tmp_path / 'empty'}: folder holds no image file" in stderr and "1 of 2 inputs failed" in stderr
    assert stdout.startswith(f"{RACCOON}\t")
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = [(r["path"], r["error"]) for r in csv.DictReader(fh)]
    assert rows == [(str(tmp_path / "empty"), "folder holds no image file (sub-folders are read with --recursive)"),
                    (str(RACCOON), "")]
    code, _, stderr = run(["localize", str(RACCOON), "--boxes-csv", str(tmp_path)])
    assert code == 2 and "is a folder" in stderr


def test_missing_folder_and_too_large_image_are_failures(tmp_path):
    """A folder that does not exist is "no such folder"; --max-pixels refuses larger images (00013.jpg:
    600x451 = 270600 pixels); both are rows of the CSV, and the smaller image is still localized."""
    out_csv = tmp_path / "boxes.csv"
    missing = str(tmp_path / "no_photos") + os.sep
    code, stdout, stderr = run(["localize", missing, str(KANGAROOS[0]), str(RACCOON), "--max-pixels", "270599",
                                "--boxes-csv", str(out_csv)])
    assert code == 1
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [str(RACCOON)]
    with open(out_csv, newline="", encoding="utf-8") as fh:
        rows = [(r["path"], r["error"]) for r in csv.DictReader(fh)]
    too_large = "image is 600x451 = 270600 pixels, above the limit of 270599 (max_pixels, --max-pixels)"
    assert rows == [(missing, "no such folder"), (str(KANGAROOS[0]), too_large), (str(RACCOON), "")]
    assert f"error: {missing}: no such folder\n" in stderr and f"error: {KANGAROOS[0]}: {too_large}\n" in stderr


def test_no_readable_input_loads_no_model_and_writes_nothing(tmp_path, monkeypatch):
    """Nothing to localize: each input's error, then one line saying so; exit 2; no model loaded, no CSV."""
    import sensitivity.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(sensitivity.models, "load_model", no_model)
    (tmp_path / "empty").mkdir()
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    inputs = [str(tmp_path / "empty"), str(tmp_path / "gone") + os.sep, str(text), str(tmp_path / "gone.png")]
    code, stdout, stderr = run(["localize", *inputs, "--out", str(tmp_path / "out")])
    assert code == 2 and stdout == ""
    lines = stderr.splitlines()
    assert [line.split(": ")[1] for line in lines[:4]] == inputs
    assert lines[4] == ("sensitivity localize: error: none of the 4 inputs is a readable image: nothing localized, "
                        "nothing written")
    assert len(lines) == 5 and not (tmp_path / "out").exists()


def test_localize_images_library(tmp_path):
    """Results in input order, failures listed, maps independent of batching, pixel boxes consistent; the
    default box is the shipped box model's, as for the command."""
    from sensitivity.localize import localize_images
    from sensitivity.models import load_model

    model = load_model("efficientnet_lite0")
    paths = [KANGAROOS[1], tmp_path / "missing.png", RACCOON]
    done, failed = localize_images(paths, model, batch_size=1)
    assert failed == [(str(paths[1]), "file not found")]
    assert [loc.path for loc in done] == [str(KANGAROOS[1]), str(RACCOON)]
    together, _ = localize_images([KANGAROOS[1], RACCOON], model, batch_size=8)
    for single, batched in zip(done, together):
        assert single.map.shape == (224, 224) and single.map.dtype == np.float32
        np.testing.assert_allclose(single.map, batched.map, rtol=1e-3, atol=1e-6 * single.map.max())
        np.testing.assert_allclose(single.box_normalised, batched.box_normalised, atol=1 / 224)
        w, h = single.width, single.height
        np.testing.assert_allclose(single.box_pixels, single.box_normalised * [w, h, w, h])
        assert single.method == "regression" and single.image is None
    assert done[0].class_index == WALLABY and done[0].score > 0.5
    with pytest.raises(ValueError, match="fraction"):
        localize_images([RACCOON], model, fraction=0)


def test_choose_box_defaults_to_the_shipped_box_model():
    from sensitivity.localize import DEFAULT_BOX_MODEL, MAP_DEFAULTS, choose_box
    from sensitivity.regress import BoxRegressor

    choice = choose_box()
    assert (choice.box, choice.note) == ("learned", "")
    np.testing.assert_array_equal(choice.regressor.coef_, BoxRegressor.load(DEFAULT_BOX_MODEL).coef_)
    assert {k: choice.options[k] for k in MAP_DEFAULTS} == {
        "model": "efficientnet_lite0", "target": "gestalt", "aggregate": "max", "method": "guided_backprop"}
    for box in ("threshold", "heuristic"):
        choice = choose_box(box=box)
        assert (choice.box, choice.regressor, choice.note) == (box, None, "")
        assert {k: choice.options[k] for k in MAP_DEFAULTS} == MAP_DEFAULTS


@pytest.mark.parametrize(("given", "conflict"), [({"method": "gradcam"}, "method='guided_backprop' (here 'gradcam')"),
                                                 ({"model": "vgg16"}, "model='efficientnet_lite0' (here 'vgg16')"),
                                                 ({"target": "class"}, "target='gestalt' (here 'class')")])
def test_choose_box_gives_way_to_map_options_unless_the_learned_box_is_asked_for(given, conflict):
    """A map option the shipped box model was not fitted on: the threshold box with a note by default, an
    error naming both values with box="learned"."""
    from sensitivity.localize import MAP_DEFAULTS, choose_box

    choice = choose_box(**given)
    assert (choice.box, choice.regressor) == ("threshold", None)
    assert conflict in choice.note and "shipped box model" in choice.note
    assert {k: choice.options[k] for k in MAP_DEFAULTS} == MAP_DEFAULTS | given
    with pytest.raises(ValueError, match=re.escape(conflict)):
        choose_box(box="learned", **given)


def test_choose_box_refuses_a_regressor_with_another_box_and_unknown_boxes():
    from sensitivity.localize import choose_box, default_box_model

    with pytest.raises(ValueError, match="box='heuristic': a regressor gives a learned box"):
        choose_box(default_box_model(), "heuristic")
    with pytest.raises(ValueError, match="box must be one of"):
        choose_box(box="regression")


def test_localize_images_gives_way_with_a_warning_or_refuses_a_learned_box(lite0):
    """The library as the command: a map option the shipped box model was not fitted on gives the threshold
    box with a warning saying why, or, with box="learned", a ValueError naming both values."""
    from sensitivity.localize import localize_images

    conflict = "method='guided_backprop' (here 'gradcam')"
    with pytest.raises(ValueError, match=re.escape(conflict)):
        localize_images([RACCOON], lite0, method="gradcam", box="learned")
    with pytest.warns(UserWarning, match=re.escape(conflict) + ".*boxes come from the threshold box"):
        (done,), _ = localize_images([RACCOON], lite0, method="gradcam")
    assert done.method == "threshold"


def test_console_script_and_module(tmp_path):
    """The installed `sensitivity` script and `python -m sensitivity` both reach cli.main."""
    script = shutil.which("sensitivity", path=str(Path(sys.executable).parent)) or shutil.which("sensitivity")
    assert script, "console script `sensitivity` is not installed (pip install -e .)"
    out_dir = tmp_path / "out"
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "OMP_NUM_THREADS": "1"}  # σ in the note must not crash on an ASCII stream
    result = subprocess.run([script, "localize", str(RACCOON), str(tmp_path / "missing.jpg"), "--out", str(out_dir),
                             "--device", "auto"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"{RACCOON}\t") and result.stdout.rstrip().endswith("regression")
    assert f"error: {tmp_path / 'missing.jpg'}: file not found" in result.stderr
    assert "boxes come from the shipped box model" in result.stderr
    assert (out_dir / "raccoon-12.png").stat().st_size > 0
    result = subprocess.run([sys.executable, "-m", "sensitivity", "localize", "--help"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "--regressor" in result.stdout


def test_cuda_without_a_gpu_is_a_usage_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is available")
    code, stdout, stderr = run(["localize", str(RACCOON), "--device", "cuda", "--out", str(tmp_path / "o")])
    assert code == 2 and "no CUDA device" in stderr and stdout == ""


def test_shape_regressor_gets_the_attention_map_as_extraction_stores_it(tmp_path, make_demo_subset, lite0):
    """A regressor fitted on (map, attention) stacks, as the workflow's are: localize computes both from one
    backward pass and gets the same box as from the stack the extraction stage stores for that image."""
    import sensitivity.pipeline.extract as extract_module
    from sensitivity.boxes import largest_box
    from sensitivity.localize import localize_images
    from sensitivity.pipeline.extract import extract_shard
    from sensitivity.pipeline.prepare import build_manifest
    from sensitivity.regress import BoxRegressor
    from sensitivity.store import iter_maps

    roots = make_demo_subset(tmp_path / "data", 6)
    manifest = build_manifest({"kind": "folder", "roots": [str(r) for r in roots]}, tmp_path / "m.csv",
                              tmp_path / "s.csv")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "load_model", lambda *args, **kwargs: lite0)
        store = extract_shard(tmp_path / "m.csv", tmp_path / "maps.zarr", "1-of-1",
                              {"name": "efficientnet_lite0", "weights": None}, "gestalt", "max", 56,
                              device="cpu", num_workers=0)
    ids, stacks = next(iter_maps([store], attention=True))
    by_id = manifest.set_index("image_id")
    targets = np.stack([largest_box(np.asarray(json.loads(by_id.loc[i, "boxes"]))) for i in ids])
    regressor = BoxRegressor(features="shape", alpha=10.0).fit(stacks, targets)
    paths = [by_id.loc[i, "path"] for i in ids[:3]]
    results, failures = localize_images(paths, lite0, target="gestalt", aggregate="max", regressor=regressor)
    assert not failures and [r.method for r in results] == ["regression"] * 3
    np.testing.assert_allclose(np.stack([r.box_normalised for r in results]), regressor.predict(stacks[:3]),
                               atol=2e-3)  # the store keeps float16 maps


def test_regressor_provenance_gives_the_map_options_and_refuses_others(tmp_path, lite0):
    """A workflow regressor records how its maps were made: localize makes the same maps (here CAM maps of the
    Gestalt target) without being told, and a conflicting option is an error naming the file."""
    from sensitivity.localize import localize_images
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(0)
    regressor = BoxRegressor(pool=7, alpha=1.0).fit(rng.random((20, 56, 56)), np.tile([0.2, 0.2, 0.8, 0.8], (20, 1))
                                                   + 0.05 * rng.random((20, 4)))
    regressor.provenance_ = {"model": "efficientnet_lite0", "target": "gestalt", "aggregate": "max", "method": "cam",
                             "method_settings": {}}
    path = tmp_path / "cam.npz"
    regressor.save(path)
    csv_path = tmp_path / "boxes.csv"
    code, _, stderr = run(["localize", str(RACCOON), "--regressor", str(path), "--boxes-csv", str(csv_path)])
    assert code == 0, stderr
    with open(csv_path, newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    (expected,), _ = localize_images([RACCOON], lite0, target="gestalt", aggregate="max", regressor=regressor,
                                     method="cam")
    np.testing.assert_allclose([float(row[k]) for k in ("x1", "y1", "x2", "y2")], expected.box_pixels, atol=0.01)

    code, stdout, stderr = run(["localize", str(RACCOON), "--regressor", str(path), "--target", "class",
                                "--method", "gradient", "--boxes-csv", str(csv_path)])
    assert code == 2 and stdout == ""
    assert f"{path}: fitted on maps made with method='cam' (here 'gradient'), target='gestalt' (here 'class')" in stderr


def test_a_shape_model_fitted_on_the_gestalt_totals_grad_cam_is_refused_with_advice(tmp_path):
    """Box models fitted before ``attention_of`` existed on (map, attention) stacks of the Gestalt Total read that
    Total's own Grad-CAM, which localize no longer makes: refused in one line asking to refit; the same model on the
    map alone, or one that records the class's Grad-CAM, is accepted."""
    from sensitivity.regress import BoxRegressor

    rng = np.random.default_rng(0)
    boxes = np.tile([0.2, 0.2, 0.8, 0.8], (30, 1)) + 0.05 * rng.random((30, 4))
    made = {"model": "efficientnet_lite0", "target": "gestalt", "aggregate": "max", "method": "gradient",
            "method_settings": {}}
    for name, maps, provenance, refused in [
            ("old_stack", rng.random((30, 2, 56, 56)), made, True),
            ("old_map", rng.random((30, 56, 56)), made, False),
            ("new_stack", rng.random((30, 2, 56, 56)), made | {"attention_of": "class"}, False)]:
        regressor = BoxRegressor(features="shape", alpha=1.0).fit(maps, boxes)
        regressor.provenance_ = provenance
        regressor.save(tmp_path / f"{name}.npz")
        code, _, stderr = run(["localize", str(RACCOON), "--regressor", str(tmp_path / f"{name}.npz"),
                               "--boxes-csv", str(tmp_path / f"{name}.csv")])
        if refused:
            assert code == 2, stderr
            assert (f"{tmp_path / name}.npz: fitted on maps made with attention_of='gestalt' (here 'class'); refit it "
                    "with this version") in stderr
        else:
            assert code == 0, stderr


def test_unknown_map_method_is_a_usage_error(tmp_path):
    code, _, stderr = run(["localize", str(RACCOON), "--method", "saliency", "--out", str(tmp_path / "o")])
    assert code == 2 and "--method: unknown map method 'saliency'" in stderr


def readme_localize_examples() -> list[tuple[list[str], list[str]]]:
    """The README's `sensitivity localize` commands (``\\`` continuations joined) as argv for main(), each with
    the output lines shown under it ("#   " lines)."""
    examples = []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"^```bash\n(.*?)^```", readme, re.MULTILINE | re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if line.startswith(".venv/bin/sensitivity localize "):
                shown = []
                for output in lines[i + 1:]:
                    if not output.startswith("#   "):
                        break
                    shown.append(output.removeprefix("#   "))
                examples.append((shlex.split(line)[1:], shown))
    return examples


def test_readme_localize_examples_print_what_the_readme_shows(tmp_path, monkeypatch):
    """Each README `localize` example with output shown is run from a folder holding the repository's data/: it
    prints those lines (tab-separated path, class index and name, score, box, method; score and box as
    printed, within 0.002 and 0.2 pixels) and writes the figures and CSV the README names. Examples without
    output (they need the workflow's results/) must parse."""
    examples = readme_localize_examples()
    assert examples and any(shown for _, shown in examples), "no localize example with output in the README"
    (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.chdir(tmp_path)
    for argv, shown in examples:
        if not shown:
            assert "results/" in " ".join(argv), argv  # needs the workflow's outputs: parsed only
            cli.build_parser().parse_args(argv)
            continue
        code, stdout, stderr = run(argv)
        assert code == 0, stderr
        printed = stdout.splitlines()
        assert len(printed) == len(shown), (argv, printed)
        for got, expected in zip(printed, shown):
            got_fields, expected_fields = got.split("\t"), expected.split("\t")
            assert len(got_fields) == len(expected_fields) == 6, (got, expected)
            assert got_fields[:3] + got_fields[5:] == expected_fields[:3] + expected_fields[5:], (got, expected)
            assert float(got_fields[3]) == pytest.approx(float(expected_fields[3]), abs=0.002), (got, expected)
            got_box, expected_box = ([float(v) for v in f[4].split()] for f in (got_fields, expected_fields))
            assert got_box == pytest.approx(expected_box, abs=0.2), (got, expected)
        out = Path(argv[argv.index("--out") + 1])
        figures = [f"{Path(line.split(chr(9))[0]).stem}.png" for line in shown]
        assert sorted(p.name for p in out.iterdir()) == sorted([*figures, "boxes.csv"])
