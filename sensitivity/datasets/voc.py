"""Pascal VOC in the devkit layout: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<set>.txt``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import pandas as pd

from .manifest import BadInput, DatasetError, OnBadInput, make_manifest
from .voc_xml import xml_image_rows

_VOC_SUBDIRS = ("Annotations", "JPEGImages", "ImageSets/Main")


def find_voc_root(path: str | os.PathLike[str], year: str = "2007") -> Path | None:
    """The VOC folder at ``path`` itself, or its ``VOC<year>`` child (a VOCdevkit folder); else None."""
    for candidate in (Path(path), Path(path) / f"VOC{year}"):
        if all((candidate / sub).is_dir() for sub in _VOC_SUBDIRS):
            return candidate
    return None


def read_voc2007(
    root: str | os.PathLike[str],
    image_set: str = "trainval",
    *,
    missing: Literal["error", "ignore"] = "error",
    use_difficult: bool = False,
    on_bad_input: OnBadInput = "fail",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the images of ``ImageSets/Main/<image_set>.txt`` into ``(manifest, skipped)``.

    ``root`` is the VOC2007 folder or the VOCdevkit holding it. Listed ids with
    neither image nor XML raise :class:`DatasetError` unless ``missing="ignore"``,
    which leaves them out silently (for partial copies); an id with only one of
    the two files is bad input. ``image_id`` is ``<voc folder name, lower-cased>/<id>``.
    """
    if missing not in ("error", "ignore"):
        raise ValueError(f"missing must be 'error' or 'ignore', got {missing!r}")
    voc = find_voc_root(root)
    if voc is None:
        raise DatasetError(root, "not a VOC folder: needs " + ", ".join(f"{s}/" for s in _VOC_SUBDIRS))
    voc = voc.absolute()
    set_file = voc / "ImageSets" / "Main" / f"{image_set}.txt"
    if not set_file.is_file():
        raise DatasetError(set_file, f"image set {image_set!r} not found")
    ids = [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]

    def files(voc_id: str) -> tuple[Path, Path]:
        return voc / "Annotations" / f"{voc_id}.xml", voc / "JPEGImages" / f"{voc_id}.jpg"

    absent = [i for i in ids if not any(p.exists() for p in files(i))]
    if absent and missing == "error":
        raise DatasetError(
            set_file,
            f"{len(absent)} of {len(ids)} listed ids have neither image nor annotation under {voc} "
            f"(first: {', '.join(absent[:3])}); pass missing='ignore' to read only those present",
        )
    bad = BadInput(on_bad_input)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    absent_ids = set(absent)
    for voc_id in (i for i in ids if i not in absent_ids):
        try:
            if voc_id in seen:
                raise DatasetError(set_file, f"image {voc_id} listed twice")
            seen.add(voc_id)
            xml, image = files(voc_id)
            rows += xml_image_rows(
                xml, image, f"{voc.name.lower()}/{voc_id}", one_based=True, use_difficult=use_difficult
            )
        except DatasetError as err:
            bad(err)
    return make_manifest(rows), bad.frame()
