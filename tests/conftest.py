"""Shared fixtures: demo photos shipped in the repository, the optional ../shared data, real networks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGES = REPO / "data" / "demo" / "kangaroo" / "images"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
WALLABY = 104  # ImageNet-1k class index of "wallaby"


@pytest.fixture(scope="session")
def demo_image_paths() -> list[Path]:
    """The kangaroo photos shipped in the repository (present on a fresh clone)."""
    paths = sorted(DEMO_IMAGES.glob("*.jpg"))
    assert len(paths) == 60, f"expected the 60 shipped demo photos in {DEMO_IMAGES}, found {len(paths)}"
    return paths


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ../shared/data folder of the project, or a skip when this checkout has none (a failure under CI,
    which has it: a test that skips there proves nothing)."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data folder {SHARED_DATA} is absent, and CI is set")
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lite0():
    """The embedded EfficientNet-Lite0 with its real weights (loaded once per test session)."""
    from sensitivity.models import load_model

    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def demo_batch(lite0, demo_image_paths) -> torch.Tensor:
    """Four real photos, squash-preprocessed for EfficientNet-Lite0: (4, 3, 224, 224)."""
    from sensitivity.images import read_image

    transform = lite0.preprocessing.transform("squash")
    return torch.stack([transform(read_image(path)) for path in demo_image_paths[:4]])


@pytest.fixture(scope="session")
def make_demo_subset():
    """Builds small folder datasets from the shipped demo photos.

    ``make(dest, per_class)`` copies the first ``per_class`` annotated photos of each demo class into
    ``dest/<class>/{images,annotations}`` and returns the class roots (kangaroo, raccoon).
    """
    import shutil

    def make(dest: Path, per_class: int, classes: tuple[str, ...] = ("kangaroo", "raccoon")) -> list[Path]:
        roots = []
        for name in classes:
            source, root = REPO / "data" / "demo" / name, Path(dest) / name
            (root / "images").mkdir(parents=True)
            (root / "annotations").mkdir()
            for xml in sorted((source / "annotations").glob("*.xml"))[:per_class]:
                (image,) = (source / "images").glob(f"{xml.stem}.*")
                shutil.copy2(xml, root / "annotations" / xml.name)
                shutil.copy2(image, root / "images" / image.name)
            roots.append(root)
        return roots

    return make
