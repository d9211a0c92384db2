"""A synthetic ImageNet localisation download of N images, made from the 910 genuine ILSVRC-2012 val images.

Writes the exact layout of the Kaggle "ImageNet Object Localization" download's train part::

    OUT/LOC_synset_mapping.txt
    OUT/LOC_train_solution.csv                      ImageId,PredictionString ("wnid xmin ymin xmax ymax" ...)
    OUT/ILSVRC/Data/CLS-LOC/train/<wnid>/<wnid>_<k>.JPEG
    OUT/ILSVRC/Annotations/CLS-LOC/train/<wnid>/<wnid>_<k>.xml
    OUT/ILSVRC/ImageSets/CLS-LOC/train_loc.txt      "<wnid>/<wnid>_<k> <n>"

Image i is a copy of a genuine source image (each source used ⌊N/910⌋ or ⌈N/910⌉ times, in a seeded order)
with its class kept: the 227×227 source is brought back to its original aspect ratio (``<original_size>`` of
its XML), cropped (each side 75-100 % of the image), scaled so that the long side is 400-500 px (ImageNet's
typical 500×375 / 500×333), mirrored with probability 1/2 and re-encoded as JPEG quality 90. Its boxes
get the same crop, scale and flip; a box with less than half its area inside the crop is dropped, and a crop
that would drop every box is replaced by the whole image. Everything is drawn from ``numpy``'s generator
seeded by ``(seed, i)``, so the tree is the same whatever the number of worker processes. Run from the
repository root:

    python benchmarks/make_scale_tree.py 2000 /tmp/imagenet_2k [--seed 0] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sensitivity.datasets import parse_voc_xml

SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet_loc"
LONG_SIDE = (400, 500)
CROP_SHARE = (0.75, 1.0)
KEEP_AREA = 0.5
QUALITY = 90
PixelBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class Source:
    """One genuine image: path, synset, size of the file and of the original photo, and boxes (0-based
    inclusive pixels of the file)."""

    path: str
    wnid: str
    file_size: tuple[int, int]
    original_size: tuple[int, int]
    boxes: tuple[PixelBox, ...]


@dataclass(frozen=True)
class Plan:
    """How image ``image_id`` is made from ``source``: crop (x0, y0, x1, y1) of the source file, output
    size, flip, and the transformed boxes."""

    image_id: str
    source: Source
    crop: tuple[int, int, int, int]
    size: tuple[int, int]
    flip: bool
    boxes: tuple[PixelBox, ...]


def transform_box(
    box: PixelBox, crop: tuple[int, int, int, int], size: tuple[int, int], flip: bool
) -> tuple[PixelBox, float]:
    """An inclusive pixel box after cropping to ``crop`` (x0, y0, x1, y1, exclusive end), resizing the crop to
    ``size`` (W, H) and an optional horizontal flip; with the share of the box's area inside the crop.

    Edges are treated as continuous (a box ``xmin..xmax`` covers ``[xmin, xmax + 1)``), clipped to the crop,
    mapped, and rounded back to inclusive pixels.
    """
    x0, y0, x1, y1 = crop
    width, height = size
    sx, sy = width / (x1 - x0), height / (y1 - y0)
    left, top, right, bottom = box[0], box[1], box[2] + 1, box[3] + 1
    cl, ct, cr, cb = max(left, x0), max(top, y0), min(right, x1), min(bottom, y1)
    inside = max(cr - cl, 0) * max(cb - ct, 0) / ((right - left) * (bottom - top))
    nl, nr = (cl - x0) * sx, (cr - x0) * sx
    if flip:
        nl, nr = width - nr, width - nl
    nt, nb = (ct - y0) * sy, (cb - y0) * sy
    return (round(nl), round(nt), round(nr) - 1, round(nb) - 1), inside


def read_sources(root: Path) -> list[Source]:
    """The genuine val images of ``root`` in id order, with their boxes and original sizes."""
    sources = []
    for xml in sorted((root / "ILSVRC" / "Annotations" / "CLS-LOC" / "val").glob("*.xml")):
        annotation = parse_voc_xml(xml)
        original = ET.parse(xml).getroot().find("original_size")
        size = (
            (int(original.findtext("width")), int(original.findtext("height")))
            if original is not None
            else (annotation.width, annotation.height)
        )
        wnids = {obj.name for obj in annotation.objects}
        if len(wnids) != 1:
            raise ValueError(f"{xml}: expected one synset per image, got {sorted(wnids)}")
        boxes = tuple(tuple(int(v) for v in obj.box) for obj in annotation.objects)
        image = root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{xml.stem}.JPEG"
        with Image.open(image) as img:
            file_size = img.size
        sources.append(Source(str(image), wnids.pop(), file_size, size, boxes))  # type: ignore[arg-type]
    if not sources:
        raise ValueError(f"{root}: no ILSVRC val annotations")
    return sources


def plan_image(index: int, image_id: str, source: Source, seed: int) -> Plan:
    """The crop, size, flip and boxes of image ``index``, drawn from the generator seeded by (seed, index)."""
    rng = np.random.default_rng([seed, index])
    file_w, file_h = source.file_size
    shares = rng.uniform(*CROP_SHARE, size=2)
    crop_w, crop_h = max(2, round(file_w * shares[0])), max(2, round(file_h * shares[1]))
    x0, y0 = int(rng.integers(0, file_w - crop_w + 1)), int(rng.integers(0, file_h - crop_h + 1))
    long_side = int(rng.integers(LONG_SIDE[0], LONG_SIDE[1] + 1))
    flip = bool(rng.random() < 0.5)
    for crop in ((x0, y0, x0 + crop_w, y0 + crop_h), (0, 0, file_w, file_h)):
        # the crop's shape in the original photo's geometry
        aspect = (crop[2] - crop[0]) * source.original_size[0] / file_w
        aspect /= (crop[3] - crop[1]) * source.original_size[1] / file_h
        size = (
            (long_side, max(1, round(long_side / aspect)))
            if aspect >= 1
            else (max(1, round(long_side * aspect)), long_side)
        )
        moved = [transform_box(box, crop, size, flip) for box in source.boxes]
        boxes = tuple(box for box, inside in moved if inside >= KEEP_AREA and box[2] > box[0] and box[3] > box[1])
        if boxes:
            return Plan(image_id, source, crop, size, flip, boxes)
    raise ValueError(f"{source.path}: no box survives even the whole image")


def plan_tree(sources: list[Source], n: int, seed: int) -> list[Plan]:
    """N plans: source order a seeded permutation repeated; ids ``<wnid>_<k>`` numbered per synset."""
    order = np.random.default_rng(seed).permutation(len(sources))
    counts: dict[str, int] = {}
    plans = []
    for i in range(n):
        source = sources[order[i % len(sources)]]
        counts[source.wnid] = counts.get(source.wnid, 0) + 1
        plans.append(plan_image(i, f"{source.wnid}_{counts[source.wnid]}", source, seed))
    return plans


def annotation_xml(plan: Plan) -> str:
    """The ILSVRC train annotation of one image (``<folder>`` is the synset, as in the download)."""
    wnid = plan.source.wnid
    objects = "".join(
        f"\t<object>\n\t\t<name>{wnid}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for b in plan.boxes
    )
    return (
        f"<annotation>\n\t<folder>{wnid}</folder>\n\t<filename>{plan.image_id}</filename>\n"
        "\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{plan.size[0]}</width>\n\t\t<height>{plan.size[1]}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
    )


def write_image(plan: Plan, out: Path) -> int:
    """Write the JPEG and the XML of one plan; returns the JPEG's size in bytes."""
    wnid = plan.source.wnid
    image_path = out / "ILSVRC" / "Data" / "CLS-LOC" / "train" / wnid / f"{plan.image_id}.JPEG"
    xml_path = out / "ILSVRC" / "Annotations" / "CLS-LOC" / "train" / wnid / f"{plan.image_id}.xml"
    with Image.open(plan.source.path) as img:
        image = img.convert("RGB").crop(plan.crop).resize(plan.size, Image.Resampling.BICUBIC)
    if plan.flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image.save(image_path, "JPEG", quality=QUALITY)
    xml_path.write_text(annotation_xml(plan))
    return image_path.stat().st_size


def make_tree(n: int, out: Path, seed: int = 0, workers: int = 1, source_root: Path = SOURCE) -> list[Plan]:
    """Write the tree of ``n`` images under ``out`` (which must not exist); returns the plans."""
    if n < 1:
        raise ValueError(f"N must be positive, got {n}")
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new folder")
    plans = plan_tree(read_sources(source_root), n, seed)
    for wnid in sorted({plan.source.wnid for plan in plans}):
        for kind in ("Data", "Annotations"):
            (out / "ILSVRC" / kind / "CLS-LOC" / "train" / wnid).mkdir(parents=True)
    (out / "ILSVRC" / "ImageSets" / "CLS-LOC").mkdir(parents=True)
    shutil.copy2(source_root / "LOC_synset_mapping.txt", out / "LOC_synset_mapping.txt")
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_image, plans, [out] * n, chunksize=max(1, min(64, n // (4 * workers)))))
    ordered = sorted(plans, key=lambda plan: plan.image_id)
    solution = ["ImageId,PredictionString"] + [
        f"{p.image_id}," + "".join(f"{p.source.wnid} {b[0]} {b[1]} {b[2]} {b[3]} " for b in p.boxes) for p in ordered
    ]
    (out / "LOC_train_solution.csv").write_text("\n".join(solution) + "\n")
    lines = [f"{p.source.wnid}/{p.image_id} {k}" for k, p in enumerate(ordered, 1)]
    (out / "ILSVRC" / "ImageSets" / "CLS-LOC" / "train_loc.txt").write_text("\n".join(lines) + "\n")
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int, help="number of images")
    parser.add_argument("out", type=Path, help="folder to create (the download's root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes re-encoding images")
    parser.add_argument("--source", type=Path, default=SOURCE, help="the genuine imagenet_loc folder")
    args = parser.parse_args()
    start = time.perf_counter()
    plans = make_tree(args.n, args.out, args.seed, args.workers, args.source)
    seconds = time.perf_counter() - start
    print(
        f"{len(plans)} images of {len({p.source.wnid for p in plans})} synsets, "
        f"{sum(len(p.boxes) for p in plans)} boxes, in {args.out} ({seconds:.1f} s, {len(plans) / seconds:.0f} images/s)"
    )


if __name__ == "__main__":
    main()
