"""What `sensitivity localize` delivers with no box flags, pinned in bands: a quality regression of the default path
(maps, shipped box model, threshold box) fails here, on genuine photos with hand-drawn boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sensitivity.boxes import correct_localizations
from sensitivity.datasets import read_manifest
from sensitivity.localize import localize_images
from sensitivity.pipeline.prepare import build_manifest

REPO = Path(__file__).resolve().parents[1]


def photos_with_boxes(roots: list[Path], tmp_path: Path) -> tuple[list[str], list[np.ndarray]]:
    """The readable photos of folder datasets and their ground-truth boxes (normalised), via the workflow's reader."""
    spec = {"kind": "folder", "roots": [str(r) for r in roots], "on_bad_input": "skip"}
    build_manifest(spec, tmp_path / "manifest.csv", tmp_path / "skipped.csv")
    manifest = read_manifest(tmp_path / "manifest.csv")
    return manifest["path"].tolist(), [np.asarray(json.loads(b)) for b in manifest["boxes"]]


def corloc_percent(paths: list[str], truth: list[np.ndarray], model, unreadable: int = 0, **options) -> float:
    """CorLoc (%) of `localize_images` on the readable photos; ``unreadable`` of them may fail to decode."""
    found, failed = localize_images(paths, model, **options)
    assert len(failed) == unreadable, failed
    by_path = dict(zip(paths, truth))
    boxes = np.stack([f.box_normalised for f in found])
    return 100 * correct_localizations(boxes, [by_path[f.path] for f in found], 0.5).mean()


@pytest.mark.slow
def test_default_boxes_on_the_demo_photos_stay_in_their_band(lite0, tmp_path) -> None:
    """The 120 demo photos (raccoons, kangaroos: no ImageNet class, never seen by the shipped box model)."""
    paths, truth = photos_with_boxes([REPO / "data" / "demo" / "raccoon", REPO / "data" / "demo" / "kangaroo"],
                                     tmp_path)
    assert len(paths) == 120
    learned = corloc_percent(paths, truth, lite0)
    threshold = corloc_percent(paths, truth, lite0, box="threshold")
    assert LEARNED_DEMO[0] <= learned <= LEARNED_DEMO[1], learned
    assert THRESHOLD_DEMO[0] <= threshold <= THRESHOLD_DEMO[1], threshold


@pytest.mark.slow
def test_default_boxes_on_the_shared_photos_stay_in_their_band(lite0, shared_data, tmp_path) -> None:
    """The 273 readable raccoon and kangaroo photos of ../shared (docs/RESULTS.md: 71.8 %)."""
    paths, truth = photos_with_boxes([shared_data / "raccoon", shared_data / "kangaroo"], tmp_path)
    assert len(paths) == 274  # kangaroo/00090.jpg has a readable header but is truncated
    learned = corloc_percent(paths, truth, lite0, unreadable=1)
    assert LEARNED_SHARED[0] <= learned <= LEARNED_SHARED[1], learned


#: Measured on 2026-12-01 (Lite0, CPU: 85 and 59 of the 120 demo photos, 196 of the 273 shared ones, with the box
#: model fitted with the Huber loss on the class's Grad-CAM; 84 and 190 by least squares, 80 and 183 with the Gestalt
#: Total's Grad-CAM), ± two photos, so float noise passes and a real change of the default path does not.
LEARNED_DEMO = (100 * 83 / 120, 100 * 87 / 120)
THRESHOLD_DEMO = (100 * 57 / 120, 100 * 61 / 120)
LEARNED_SHARED = (100 * 194 / 273, 100 * 198 / 273)
