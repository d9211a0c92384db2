"""ImageNet (ILSVRC CLS-LOC) boxes in the Kaggle "ImageNet Object Localization" layout.

``ILSVRC/Annotations/CLS-LOC/<split>/[<wnid>/]<id>.xml`` or ``LOC_<split>_solution.csv``
(``ImageId,PredictionString`` with ``wnid xmin ymin xmax ymax`` repeated), and images in
``ILSVRC/Data/CLS-LOC/<split>/[<wnid>/]<id>.JPEG`` (train: per-synset folders; val: flat).
Boxes are 0-based inclusive pixels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pandas as pd

from .manifest import (
    BadInput,
    DatasetError,
    OnBadInput,
    PixelBox,
    image_rows,
    image_size,
    make_manifest,
    normalise_box,
)
from .voc_xml import xml_image_rows

_WNID = re.compile(r"n\d{8}")


def is_imagenet_root(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like the Kaggle ImageNet localization download."""
    return (Path(path) / "ILSVRC" / "Data" / "CLS-LOC").is_dir() or any(
        Path(path).glob("LOC_*_solution.csv")
    )


def read_synset_mapping(path: str | os.PathLike[str]) -> list[str]:
    """The wnids of ``LOC_synset_mapping.txt`` in file order (line k = classifier output index k)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DatasetError(path, f"cannot read synset mapping ({err})") from err
    wnids = [line.split(maxsplit=1)[0] for line in lines if line.strip()]
    bad = next((w for w in wnids if not _WNID.fullmatch(w)), None)
    if bad is not None:
        raise DatasetError(path, f"not a synset id: {bad!r}")
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(path, "synset mapping is empty or lists a synset twice")
    return wnids


def synset_to_index(mapping: str | os.PathLike[str] | Sequence[str]) -> dict[str, int]:
    """``{wnid: output index}`` from a mapping file or a list of wnids in index order."""
    wnids = mapping if isinstance(mapping, Sequence) and not isinstance(mapping, str) else None
    return {w: i for i, w in enumerate(wnids if wnids is not None else read_synset_mapping(mapping))}


def _csv_image_path(data_dir: Path, image_id: str) -> Path:
    """Train images live in ``<wnid>/`` folders named by the id's prefix; val/test images are flat."""
    nested = data_dir / image_id.split("_")[0] / f"{image_id}.JPEG"
    return nested if nested.exists() else data_dir / f"{image_id}.JPEG"


def _read_xml_layout(
    ann_dir: Path, data_dir: Path, use_difficult: bool, bad: BadInput
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    seen: dict[str, Path] = {}
    for xml in sorted(ann_dir.rglob("*.xml")):
        try:
            if xml.stem in seen:
                raise DatasetError(xml, f"image {xml.stem} listed twice (also {seen[xml.stem]})")
            seen[xml.stem] = xml
            image = data_dir / xml.relative_to(ann_dir).with_suffix(".JPEG")
            rows += xml_image_rows(xml, image, xml.stem, one_based=False, use_difficult=use_difficult)
        except DatasetError as err:
            bad(err)
    return rows


def _parse_prediction(text: str) -> list[tuple[str, PixelBox]]:
    """``wnid xmin ymin xmax ymax`` repeated, as ``[(wnid, box)]``; ValueError if malformed."""
    tokens = text.split()
    if not tokens or len(tokens) % 5:
        raise ValueError(f"{len(tokens)} fields, expected a positive multiple of 5")
    parsed = []
    for i in range(0, len(tokens), 5):
        xmin, ymin, xmax, ymax = (float(t) for t in tokens[i + 1 : i + 5])
        parsed.append((tokens[i], (xmin, ymin, xmax, ymax)))
    return parsed


def _read_csv_layout(csv_path: Path, data_dir: Path, bad: BadInput) -> list[dict[str, object]]:
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DatasetError(csv_path, f"cannot read solution CSV ({err})") from err
    if list(table.columns[:2]) != ["ImageId", "PredictionString"]:
        raise DatasetError(csv_path, f"expected columns ImageId,PredictionString, got {list(table.columns)}")
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for line, (image_id, prediction) in enumerate(zip(table["ImageId"], table["PredictionString"]), 2):
        image = _csv_image_path(data_dir, image_id)
        try:
            if image_id in seen:
                raise DatasetError(image, f"image listed twice in {csv_path} (line {line})")
            seen.add(image_id)
            try:
                boxes = _parse_prediction(prediction)
            except ValueError as err:
                reason = f"malformed PredictionString in {csv_path} line {line} ({err})"
                raise DatasetError(image, reason) from None
            size = image_size(image)
            objects = [
                (wnid, normalise_box(box, *size, one_based=False, source=str(image)), False)
                for wnid, box in boxes
            ]
            rows += image_rows(image_id, image, size, objects, use_difficult=False)
        except DatasetError as err:
            bad(err)
    return rows


def read_imagenet(
    root: str | os.PathLike[str],
    split: str = "val",
    layout: Literal["auto", "xml", "csv"] = "auto",
    *,
    use_difficult: bool = False,
    on_bad_input: OnBadInput = "fail",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the boxed images of one split into ``(manifest, skipped)``; labels are wnids.

    ``layout="auto"`` uses the XML annotations when present, else the solution CSV.
    ``image_id`` is the ILSVRC id (e.g. ``ILSVRC2012_val_00000001``). Only images
    that have boxes are listed.
    """
    root = Path(root).absolute()
    ann_dir = root / "ILSVRC" / "Annotations" / "CLS-LOC" / split
    data_dir = root / "ILSVRC" / "Data" / "CLS-LOC" / split
    csv_path = root / f"LOC_{split}_solution.csv"
    if layout not in ("auto", "xml", "csv"):
        raise ValueError(f"layout must be 'auto', 'xml' or 'csv', got {layout!r}")
    if layout == "auto":
        if not ann_dir.is_dir() and not csv_path.is_file():
            raise DatasetError(root, f"no ImageNet {split!r} annotations: neither {ann_dir} nor {csv_path}")
        layout = "xml" if ann_dir.is_dir() else "csv"
    source = ann_dir if layout == "xml" else csv_path
    if not source.exists():
        raise DatasetError(source, f"no ImageNet {split!r} annotations in the {layout} layout")
    bad = BadInput(on_bad_input)
    if layout == "xml":
        rows = _read_xml_layout(ann_dir, data_dir, use_difficult, bad)
    else:
        rows = _read_csv_layout(csv_path, data_dir, bad)
    return make_manifest(rows), bad.frame()
