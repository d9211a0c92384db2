"""Pascal VOC in the devkit layout: ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/<set>.txt``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .manifest import BadInput, DatasetError, OnBadInput, make_manifest
from .voc_xml import xml_image_rows

_VOC_SUBDIRS = ("Annotations", "JPEGImages", "ImageSets/Main")
#: The official image lists, in the order they are read: each becomes the split of the same name.
OFFICIAL_IMAGE_SETS = ("train", "val", "test")


def find_voc_root(path: str | os.PathLike[str], year: str = "2007") -> Path | None:
    """The VOC folder at ``path`` itself, or its ``VOC<year>`` child (a VOCdevkit folder); else None."""
    for candidate in (Path(path), Path(path) / f"VOC{year}"):
        if all((candidate / sub).is_dir() for sub in _VOC_SUBDIRS):
            return candidate
    return None


def _voc_folder(root: str | os.PathLike[str]) -> Path:
    voc = find_voc_root(root)
    if voc is None:
        raise DatasetError(root, "not a VOC folder: needs " + ", ".join(f"{s}/" for s in _VOC_SUBDIRS))
    return voc.absolute()


def read_image_set(root: str | os.PathLike[str], image_set: str) -> tuple[Path, list[str]]:
    """``(list file, ids)`` of ``ImageSets/Main/<image_set>.txt`` (first word of each non-empty line)."""
    set_file = _voc_folder(root) / "ImageSets" / "Main" / f"{image_set}.txt"
    if not set_file.is_file():
        raise DatasetError(set_file, f"image set {image_set!r} not found")
    return set_file, [line.split()[0] for line in set_file.read_text().splitlines() if line.strip()]


def read_voc2007(
    root: str | os.PathLike[str],
    image_sets: str | Sequence[str] = OFFICIAL_IMAGE_SETS,
    *,
    use_difficult: bool = False,
    on_bad_input: OnBadInput = "fail",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the images of the ``ImageSets/Main/<set>.txt`` lists into ``(manifest, skipped)``.

    ``root`` is the VOC2007 folder or the VOCdevkit holding it; ``image_sets`` one list name or
    several (by default the official train, val and test lists). Every listed id needs
    ``JPEGImages/<id>.jpg`` and ``Annotations/<id>.xml``: an id lacking either, an id listed twice
    (in one list or in two) and a bad annotation or image are bad input, raised as
    :class:`DatasetError` naming the list file and the id under ``on_bad_input="fail"``, and listed
    in ``skipped`` under ``"skip"``. Nothing is left out silently.

    One row per image and class it contains. ``difficult`` boxes are dropped (and counted in
    ``difficult_dropped``) unless ``use_difficult``; a class whose boxes in an image are all
    difficult gives that image no row for the class. ``image_id`` is
    ``<voc folder name, lower-cased>/<id>``.
    """
    names = [image_sets] if isinstance(image_sets, str) else list(image_sets)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"image_sets must be distinct list names, got {names}")
    voc = _voc_folder(root)
    lists = [read_image_set(voc, name) for name in names]

    def files(voc_id: str) -> tuple[Path, Path]:
        return voc / "JPEGImages" / f"{voc_id}.jpg", voc / "Annotations" / f"{voc_id}.xml"

    def lacking(voc_id: str) -> list[str]:
        return [str(p.relative_to(voc)) for p in files(voc_id) if not p.is_file()]

    bad = BadInput(on_bad_input)
    rows: list[dict[str, object]] = []
    listed_in: dict[str, Path] = {}
    for set_file, ids in lists:
        for voc_id in ids:
            try:
                if voc_id in listed_in:
                    where = "twice" if listed_in[voc_id] == set_file else f"in {listed_in[voc_id]} too"
                    raise DatasetError(set_file, f"id {voc_id} listed {where}")
                listed_in[voc_id] = set_file
                if missing := lacking(voc_id):
                    reason = f"id {voc_id}: missing {' and '.join(missing)}"
                    if on_bad_input == "fail":  # say how many more there are: a partial copy, or a wrong root?
                        n = sum(bool(lacking(i)) for i in ids)
                        reason += (f" ({n} of its {len(ids)} ids lack their image or annotation; "
                                   "on_bad_input 'skip' reads the others and lists these)")
                    raise DatasetError(set_file, reason)
                image, xml = files(voc_id)
                rows += xml_image_rows(
                    xml, image, f"{voc.name.lower()}/{voc_id}", one_based=True, use_difficult=use_difficult
                )
            except DatasetError as err:
                bad(err)
    return make_manifest(rows), bad.frame()
