"""Bring-your-own datasets: ``<root>/images/`` + ``<root>/annotations/*.xml`` folders, box CSVs,
and discovery of dataset folders by their layout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from .imagenet import is_imagenet_root
from .manifest import (
    BadInput,
    DatasetError,
    OnBadInput,
    check_size,
    image_rows,
    make_manifest,
    normalise_box,
)
from .voc import find_voc_root
from .voc_xml import xml_image_rows

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
CSV_COLUMNS = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]


def is_folder_dataset(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` has the ``images/`` + ``annotations/`` layout."""
    return (Path(root) / "images").is_dir() and (Path(root) / "annotations").is_dir()


def discover_datasets(parent: str | os.PathLike[str]) -> dict[str, str]:
    """Map each sub-folder of ``parent`` with a known layout to ``"folder"``, ``"voc"`` or ``"imagenet"``."""
    found = {}
    for sub in sorted(p for p in Path(parent).iterdir() if p.is_dir()):
        if is_folder_dataset(sub):
            found[sub.name] = "folder"
        elif find_voc_root(sub) is not None:
            found[sub.name] = "voc"
        elif is_imagenet_root(sub):
            found[sub.name] = "imagenet"
    return found


def _images_by_stem(images_dir: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for p in sorted(images_dir.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            index.setdefault(p.stem, []).append(p)
    return index


def read_folder_dataset(
    roots: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    class_from: Literal["folder", "xml"] = "folder",
    *,
    use_difficult: bool = False,
    on_bad_input: OnBadInput = "fail",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read folder datasets into ``(manifest, skipped)``.

    Each root holds ``images/<stem>.<ext>`` and ``annotations/<stem>.xml`` (1-based
    VOC-style boxes); images without an XML are ignored. ``image_id`` is
    ``<root name>/<stem>``; the label is the root's folder name (``class_from="folder"``)
    or each object's ``<name>`` (``"xml"``). ``roots`` may be a single folder.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    if class_from not in ("folder", "xml"):
        raise ValueError(f"class_from must be 'folder' or 'xml', got {class_from!r}")
    bad = BadInput(on_bad_input)
    rows: list[dict[str, object]] = []
    seen: dict[str, Path] = {}
    for root in [Path(r).absolute() for r in roots]:
        if not root.is_dir():
            raise DatasetError(root, "no such folder (the dataset root does not exist)")
        if not is_folder_dataset(root):
            raise DatasetError(root, "not a folder dataset: needs images/ and annotations/ sub-folders")
        images = _images_by_stem(root / "images")
        for xml in sorted((root / "annotations").glob("*.xml")):
            image_id = f"{root.name}/{xml.stem}"
            try:
                if image_id in seen:
                    raise DatasetError(xml, f"image {image_id!r} listed twice (also {seen[image_id]})")
                seen[image_id] = xml
                found = images.get(xml.stem, [])
                if len(found) != 1:
                    problem = "missing image file" if not found else "several image files"
                    raise DatasetError(xml, f"{problem} images/{xml.stem}.* for this annotation")
                label = root.name if class_from == "folder" else None
                rows += xml_image_rows(
                    xml, found[0], image_id, one_based=True, use_difficult=use_difficult, label=label
                )
            except DatasetError as err:
                bad(err)
    return make_manifest(rows), bad.frame()


def read_csv_boxes(
    csv_path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    on_bad_input: OnBadInput = "fail",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a box CSV (``filename,width,height,class,xmin,ymin,xmax,ymax``, one row per box, 1-based).

    Images are ``images_dir/<filename>``; ``image_id`` is ``<name>/<stem>`` with
    ``name`` defaulting to the folder holding ``images_dir`` (as in :func:`read_folder_dataset`).
    Bad input is reported against the image path.
    """
    images_dir = Path(images_dir).absolute()
    name = name or images_dir.parent.name
    try:
        table = pd.read_csv(csv_path, dtype={"filename": str, "class": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(csv_path, f"cannot read box CSV ({err})") from err
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(csv_path, f"box CSV lacks columns {missing}")
    bad = BadInput(on_bad_input)
    rows: list[dict[str, object]] = []
    seen_ids: dict[str, str] = {}
    for filename, group in table.groupby("filename", sort=True):
        path = images_dir / str(filename)
        image_id = f"{name}/{path.stem}"
        lines = ", ".join(str(i + 2) for i in group.index[:5])
        try:
            if image_id in seen_ids:
                raise DatasetError(path, f"image {image_id!r} listed twice (also as {seen_ids[image_id]})")
            seen_ids[image_id] = str(filename)
            nums = group[CSV_COLUMNS[1:3] + CSV_COLUMNS[4:]].apply(pd.to_numeric, errors="coerce")
            if nums.isna().any(axis=None):
                raise DatasetError(path, f"non-numeric size or box in {csv_path} line(s) {lines}")
            if (group["class"].str.strip() == "").any():
                raise DatasetError(path, f"empty class in {csv_path} line(s) {lines}")
            sizes = set(zip(nums["width"], nums["height"]))
            if len(sizes) != 1:
                raise DatasetError(path, f"conflicting sizes {sorted(sizes)} in {csv_path} line(s) {lines}")
            w, h = sizes.pop()
            size = (int(w), int(h))
            check_size(path, size, str(path))
            objects = [
                (str(label), normalise_box(tuple(box), *size, one_based=True, source=str(path)), False)
                for label, box in zip(group["class"], nums[["xmin", "ymin", "xmax", "ymax"]].to_numpy())
            ]
            rows += image_rows(image_id, path, size, objects, use_difficult=False)
        except DatasetError as err:
            bad(err)
    return make_manifest(rows), bad.frame()
