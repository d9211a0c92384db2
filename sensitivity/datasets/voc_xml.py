"""Parse one Pascal-VOC-style annotation XML (VOC, ILSVRC, labelImg, raccoon, kangaroo)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from .manifest import DatasetError, PixelBox, check_size, image_rows, normalise_box


@dataclass(frozen=True)
class VocObject:
    """One annotated box: class ``name``, pixel ``box`` (xmin, ymin, xmax, ymax), ``difficult`` flag."""

    name: str
    box: PixelBox
    difficult: bool


@dataclass(frozen=True)
class VocAnnotation:
    """The declared image size and the objects of one XML file."""

    width: int
    height: int
    objects: list[VocObject]


def _text(elem: ET.Element, tag: str, path: str) -> str:
    value = elem.findtext(tag)
    if value is None or not value.strip():
        raise DatasetError(path, f"malformed XML: missing <{tag}>")
    return value.strip()


def _number(elem: ET.Element, tag: str, path: str) -> float:
    value = _text(elem, tag, path)
    try:
        return float(value)
    except ValueError:
        raise DatasetError(path, f"malformed XML: <{tag}> is not a number: {value!r}") from None


def parse_voc_xml(path: str | os.PathLike[str]) -> VocAnnotation:
    """Read ``<size>`` and every ``<object>`` (name, bndbox, difficult) of a VOC-style XML.

    Coordinates are returned as written (pixels, not converted). Raises
    :class:`DatasetError` for a missing file or malformed XML.
    """
    src = str(path)
    if not os.path.isfile(src):
        raise DatasetError(src, "missing annotation file")
    try:
        root = ET.parse(src).getroot()
    except ET.ParseError as err:
        raise DatasetError(src, f"malformed XML: {err}") from err
    size = root.find("size")
    if size is None:
        raise DatasetError(src, "malformed XML: missing <size>")
    width, height = _number(size, "width", src), _number(size, "height", src)
    if width <= 0 or height <= 0 or not (width.is_integer() and height.is_integer()):
        raise DatasetError(src, f"malformed XML: invalid <size> {width:g}x{height:g}")
    objects = []
    for obj in root.findall("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(src, "malformed XML: <object> without <bndbox>")
        box = tuple(_number(bndbox, t, src) for t in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append(VocObject(_text(obj, "name", src), box, difficult))  # type: ignore[arg-type]
    return VocAnnotation(int(width), int(height), objects)


def xml_image_rows(
    xml_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    image_id: str,
    *,
    one_based: bool,
    use_difficult: bool,
    label: str | None = None,
) -> list[dict[str, object]]:
    """Manifest rows of one image from its XML; every box gets ``label`` if given, else its ``<name>``.

    Checks the declared size against the image header and converts the boxes
    (see :func:`~sensitivity.datasets.manifest.normalise_box`).
    """
    ann = parse_voc_xml(xml_path)
    size = (ann.width, ann.height)
    check_size(image_path, size, str(xml_path))
    objects = [
        (
            label or obj.name,
            normalise_box(obj.box, *size, one_based=one_based, source=str(xml_path)),
            obj.difficult,
        )
        for obj in ann.objects
    ]
    return image_rows(image_id, image_path, size, objects, use_difficult)
