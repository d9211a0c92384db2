"""Dataset readers: real data in ../shared/data, conventions and bad input on fixtures built here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sensitivity.boxes import correct_localizations
from sensitivity.datasets import (
    MANIFEST_COLUMNS,
    DatasetError,
    discover_datasets,
    list_split,
    parse_voc_xml,
    read_csv_boxes,
    read_folder_dataset,
    read_imagenet,
    read_manifest,
    read_synset_mapping,
    read_voc2007,
    synset_to_index,
    validate_manifest,
    write_manifest,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason="../shared/data not present (fresh clone without the shared folder)"
)
WALLABY = "n01877812"


# --------------------------------------------------------------------------- fixture builders


def photo(dest: Path, i: int = 0) -> tuple[int, int]:
    """Put a real kangaroo photo at ``dest`` (a generated one without ../shared); return its size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    real = sorted((SHARED / "kangaroo" / "images").glob("*.jpg"))[:8] if SHARED.exists() else []
    if real:
        shutil.copyfile(real[i % len(real)], dest)
    else:
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (120 + 4 * i, 160 + 8 * i, 3), dtype=np.uint8)).save(dest)
    with Image.open(dest) as img:
        return img.size


def blank(dest: Path, size: tuple[int, int]) -> None:
    """A plain JPEG of an exact size (for hand-computed numbers)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 60)).save(dest)


def voc_xml(dest: Path, size: tuple[int, int], objects: list[tuple]) -> None:
    """Write a VOC-style XML; ``objects`` are ``(name, (xmin, ymin, xmax, ymax)[, difficult])``."""
    parts = [
        "<annotation><folder>images</folder>",
        f"<filename>{dest.stem}.jpg</filename>",
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>",
    ]
    for name, box, *difficult in objects:
        coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(
            f"<object><name>{name}</name><difficult>{int(bool(difficult and difficult[0]))}</difficult>"
            f"<bndbox>{coords}</bndbox></object>"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("".join(parts) + "</annotation>\n")


def folder_dataset(root: Path, n: int = 3) -> list[tuple[int, int]]:
    """``root/images`` + ``root/annotations`` with ``n`` real photos, one box each."""
    sizes = []
    for i in range(n):
        w, h = photo(root / "images" / f"img{i}.jpg", i)
        voc_xml(root / "annotations" / f"img{i}.xml", (w, h), [(root.name, (1 + i, 2, w // 2, h - 1))])
        sizes.append((w, h))
    return sizes


def boxes(df: pd.DataFrame, label: str | None = None) -> list[list[float]]:
    rows = df if label is None else df[df["label"] == label]
    return [b for s in rows["boxes"] for b in json.loads(s)]


def n_boxes(df: pd.DataFrame) -> pd.Series:
    return df["boxes"].map(lambda s: len(json.loads(s)))


# --------------------------------------------------------------------------- real data


@needs_shared
def test_real_raccoon_and_kangaroo_as_one_folder_dataset(tmp_path: Path) -> None:
    roots = [SHARED / "raccoon", SHARED / "kangaroo"]
    df, skipped = read_folder_dataset(roots)
    assert list(df.columns) == MANIFEST_COLUMNS and skipped.empty
    assert df["image_id"].is_unique and len(df) == 274
    assert df["label"].value_counts().to_dict() == {"raccoon": 150, "kangaroo": 124}
    per_class = n_boxes(df).groupby(df["label"])
    assert per_class.sum().to_dict() == {"raccoon": 161, "kangaroo": 207}
    assert (n_boxes(df)[df["label"] == "raccoon"] == 1).sum() == 140
    assert (n_boxes(df)[df["label"] == "kangaroo"] == 1).sum() == 77
    assert df["difficult_dropped"].sum() == 0
    assert df.loc[df["image_id"] == "raccoon/raccoon-1", "path"].item() == str(
        SHARED / "raccoon" / "images" / "raccoon-1.jpg"
    )
    # the XML <name> agrees with the folder name everywhere
    pd.testing.assert_frame_equal(read_folder_dataset(roots, class_from="xml")[0], df)
    write_manifest(df, tmp_path / "m.csv")
    pd.testing.assert_frame_equal(read_manifest(tmp_path / "m.csv"), df)


VOC_SAMPLE_IDS = ("000342", "001763", "003123", "004545", "008591")  # all five in the official test list


@pytest.mark.shared
@needs_shared
def test_real_voc2007_test_sample() -> None:
    voc = (SHARED / "voc2007").absolute()
    test_list = voc / "ImageSets" / "Main" / "test.txt"
    with pytest.raises(DatasetError, match=r"test\.txt: id 000001: missing JPEGImages/000001\.jpg and "
                                           r"Annotations/000001\.xml \(4947 of its 4952 ids"):
        read_voc2007(SHARED / "voc2007", "test")
    df, skipped = read_voc2007(SHARED / "voc2007", "test", on_bad_input="skip")
    assert len(skipped) == 4947 and set(skipped["path"]) == {str(test_list)}
    assert skipped["reason"].iloc[0] == "id 000001: missing JPEGImages/000001.jpg and Annotations/000001.xml"
    assert set(df["image_id"]) == {f"voc2007/{i}" for i in VOC_SAMPLE_IDS}
    # 5 difficult boxes: 4 are a class's only boxes in their image (those pairs go), 1 is a second horse
    assert len(df) == 12 and n_boxes(df).sum() == 29 and df["difficult_dropped"].sum() == 1
    assert df.set_index(["image_id", "label"]).loc[("voc2007/004545", "horse"), "difficult_dropped"] == 1
    full, _ = read_voc2007(SHARED / "voc2007", "test", on_bad_input="skip", use_difficult=True)
    assert len(full) == 16 and n_boxes(full).sum() == 34
    assert n_boxes(full).groupby(full["label"]).sum().to_dict() == {
        "bottle": 4, "car": 1, "cat": 1, "chair": 2, "diningtable": 2,
        "dog": 2, "horse": 2, "person": 17, "sofa": 1, "tvmonitor": 2,
    }  # fmt: skip
    # 000342: tvmonitor (difficult) xmin=2 ymin=97 xmax=427 ymax=341 in a 500x375 image
    tv = boxes(full[full["image_id"] == "voc2007/000342"], "tvmonitor")
    np.testing.assert_allclose(tv, [[1 / 500, 96 / 375, 427 / 500, 341 / 375]])


@pytest.mark.shared
@needs_shared
def test_real_voc2007_official_lists_decide_the_splits() -> None:
    """train.txt / val.txt / test.txt → train / val / test; the sample's 5 images are all test images."""
    voc = (SHARED / "voc2007").absolute()
    with pytest.raises(DatasetError, match=r"ImageSets/Main/train\.txt: id 000012: missing .*2501 of its 2501"):
        read_voc2007(SHARED / "voc2007")  # the official lists, in order train, val, test
    df, skipped = read_voc2007(SHARED / "voc2007", on_bad_input="skip")
    assert len(df) == 12 and df["image_id"].nunique() == 5
    per_list = skipped["path"].map(lambda p: Path(p).name).value_counts().to_dict()
    assert per_list == {"train.txt": 2501, "val.txt": 2510, "test.txt": 4947}
    assert skipped["reason"].str.fullmatch(r"id (\d{6}): missing JPEGImages/\1\.jpg and Annotations/\1\.xml").all()
    # one row per image and class it contains: 004545 holds a horse, two people, a dog and a car
    assert df.loc[df["image_id"] == "voc2007/004545", "label"].tolist() == ["car", "dog", "horse", "person"]
    assert n_boxes(df[df["image_id"] == "voc2007/004545"]).tolist() == [1, 1, 1, 2]

    official = {"train": "train", "val": "val", "test": "test"}
    split = list_split(df, voc, official, needed=["test"])
    assert split.to_dict() == {f"voc2007/{i}": "test" for i in VOC_SAMPLE_IDS}
    with pytest.raises(ValueError, match=r"train\.txt: the train split is empty: none of the 2501 ids.*fit_on_test"):
        list_split(df, voc, official)
    # a list per split: naming one list for two splits, or an image in two lists, is an error
    with pytest.raises(ValueError, match=r"test\.txt: id 000001 is also in the val list"):
        list_split(df, voc, {"train": "train", "val": "test", "test": "test"}, needed=["test"])
    with pytest.raises(ValueError, match="distinct"):
        read_voc2007(voc, ["test", "test"])


@pytest.mark.shared
@needs_shared
def test_real_voc2007_difficult_objects_are_ignored_for_corloc() -> None:
    """VOC protocol: a difficult object is not ground truth. A box on it alone is not correct, and an
    image whose objects of a class are all difficult is not counted for that class."""
    df, _ = read_voc2007(SHARED / "voc2007", "test", on_bad_input="skip")
    rows = df.set_index(["image_id", "label"])
    # tvmonitor is difficult in both images that have one, chair in both: no row, nothing to find
    assert "tvmonitor" not in set(df["label"]) and "chair" not in set(df["label"])
    # 004545 horse: one plain horse (213 69 427 375) and one difficult (170 135 203 170), 500x375
    gt = np.asarray(json.loads(rows.loc[("voc2007/004545", "horse"), "boxes"]))
    on_plain = [212 / 500, 68 / 375, 427 / 500, 1.0]
    on_difficult = [169 / 500, 134 / 375, 203 / 500, 170 / 375]
    assert correct_localizations(np.array([on_plain, on_difficult]), [gt, gt]).tolist() == [True, False]
    with_difficult, _ = read_voc2007(SHARED / "voc2007", "test", on_bad_input="skip", use_difficult=True)
    gt_all = np.asarray(json.loads(with_difficult.set_index(["image_id", "label"]).loc[
        ("voc2007/004545", "horse"), "boxes"]))
    assert correct_localizations(np.array([on_difficult]), [gt_all]).tolist() == [True]


@needs_shared
def test_real_imagenet_val_xml_and_csv_layouts_agree() -> None:
    root = SHARED / "imagenet_loc"
    via_xml, skipped_xml = read_imagenet(root, "val", layout="xml")
    via_csv, skipped_csv = read_imagenet(root, "val", layout="csv")
    assert skipped_xml.empty and skipped_csv.empty
    pd.testing.assert_frame_equal(via_xml, via_csv)
    pd.testing.assert_frame_equal(read_imagenet(root, "val")[0], via_xml)
    assert len(via_xml) == 910 and via_xml["image_id"].is_unique
    assert n_boxes(via_xml).sum() == 1379 and (n_boxes(via_xml) == 1).sum() == 740
    assert via_xml["label"].nunique() == 595
    assert set(via_xml["width"]) == set(via_xml["height"]) == {227}
    listed = (root / "ILSVRC" / "ImageSets" / "CLS-LOC" / "val.txt").read_text().split()[::2]
    assert sorted(listed) == list(via_xml["image_id"])
    counts = pd.read_csv(root / "class_counts.csv").set_index("synset")
    mine = via_xml.assign(n=n_boxes(via_xml)).groupby("label")["n"].agg(["size", "sum"])
    assert mine["size"].to_dict() == counts["images"].to_dict()
    assert mine["sum"].to_dict() == counts["objects"].to_dict()
    index = synset_to_index(root / "LOC_synset_mapping.txt")
    assert {index[w] for w in counts.index} == set(counts["class_index"])
    # ILSVRC2012_val_00000347 (227x227): first box n02951358 9 106 50 177, 0-based inclusive
    first = boxes(via_xml[via_xml["image_id"] == "ILSVRC2012_val_00000347"])[0]
    np.testing.assert_allclose(first, [9 / 227, 106 / 227, 51 / 227, 178 / 227])


@needs_shared
def test_real_synset_mapping_and_discovery() -> None:
    wnids = read_synset_mapping(SHARED / "imagenet_loc" / "LOC_synset_mapping.txt")
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    assert synset_to_index(wnids)[WALLABY] == wnids.index(WALLABY)
    found = discover_datasets(SHARED)
    expected = {"raccoon": "folder", "kangaroo": "folder", "voc2007": "voc", "imagenet_loc": "imagenet"}
    assert expected.items() <= found.items()


# --------------------------------------------------------------------------- conventions on fixtures


def test_voc_one_based_convention_hand_computed(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    blank(root / "images" / "a.jpg", (200, 100))
    voc_xml(
        root / "annotations" / "a.xml",
        (200, 100),
        [("sq", (1, 1, 200, 100)), ("sq", (11, 21, 60, 70)), ("sq", (0, 1, 201, 101)), ("x", (5, 5, 6, 6))],
    )
    df, _ = read_folder_dataset([root], class_from="xml")
    assert df[["image_id", "label", "width", "height"]].values.tolist() == [
        ["shapes/a", "sq", 200, 100],
        ["shapes/a", "x", 200, 100],
    ]
    np.testing.assert_allclose(boxes(df, "sq"), [[0, 0, 1, 1], [0.05, 0.2, 0.3, 0.7], [0, 0, 1, 1]])
    np.testing.assert_allclose(boxes(df, "x"), [[0.02, 0.04, 0.03, 0.06]])
    assert read_folder_dataset(root)[0]["label"].tolist() == ["shapes"]


def test_imagenet_zero_based_convention_train_layout(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    data = root / "ILSVRC" / "Data" / "CLS-LOC" / "train" / WALLABY
    ann = root / "ILSVRC" / "Annotations" / "CLS-LOC" / "train" / WALLABY
    blank(data / f"{WALLABY}_1.JPEG", (200, 100))
    voc_xml(ann / f"{WALLABY}_1.xml", (200, 100), [(WALLABY, (0, 0, 199, 99)), (WALLABY, (10, 20, 59, 69))])
    csv_rows = [f"{WALLABY}_1,{WALLABY} 0 0 199 99 {WALLABY} 10 20 59 69"]
    for i in range(2, 4):
        w, h = photo(data / f"{WALLABY}_{i}.JPEG", i)
        voc_xml(ann / f"{WALLABY}_{i}.xml", (w, h), [(WALLABY, (i, 0, w - 1, h - 2))])
        csv_rows.append(f"{WALLABY}_{i},{WALLABY} {i} 0 {w - 1} {h - 2} ")
    solution = "ImageId,PredictionString\n" + "\n".join(csv_rows[::-1]) + "\n"
    (root / "LOC_train_solution.csv").write_text(solution)

    via_xml, _ = read_imagenet(root, "train", layout="xml")
    via_csv, _ = read_imagenet(root, "train", layout="csv")
    pd.testing.assert_frame_equal(via_xml, via_csv)
    assert via_xml["image_id"].tolist() == [f"{WALLABY}_{i}" for i in (1, 2, 3)]
    assert set(via_xml["label"]) == {WALLABY}
    assert via_xml["path"].iloc[0] == str(data / f"{WALLABY}_1.JPEG")
    np.testing.assert_allclose(boxes(via_xml)[:2], [[0, 0, 1, 1], [0.05, 0.2, 0.3, 0.7]])
    shutil.rmtree(root / "ILSVRC" / "Annotations")  # auto falls back to the CSV
    pd.testing.assert_frame_equal(read_imagenet(root, "train")[0], via_xml)
    with pytest.raises(DatasetError, match="LOC_val_solution.csv"):
        read_imagenet(root, "val")


def test_synset_mapping_file(tmp_path: Path) -> None:
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text(f"n01440764 tench, Tinca tinca\n{WALLABY} wallaby, brush kangaroo\n")
    assert read_synset_mapping(mapping) == ["n01440764", WALLABY]
    assert synset_to_index(mapping) == {"n01440764": 0, WALLABY: 1}
    mapping.write_text("n01440764 tench\nn01440764 tench again\n")
    with pytest.raises(DatasetError, match="twice"):
        read_synset_mapping(mapping)
    mapping.write_text("tench n01440764\n")
    with pytest.raises(DatasetError, match="not a synset"):
        read_synset_mapping(mapping)


def test_vocdevkit_layout_with_difficult_and_missing_ids(tmp_path: Path) -> None:
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("000005\n000007\n000009\n")
    sizes = [photo(voc / "JPEGImages" / f"{i}.jpg", k) for k, i in enumerate(("000005", "000007"))]
    (w, h), (w2, h2) = sizes
    voc_xml(
        voc / "Annotations" / "000005.xml",
        (w, h),
        [("chair", (1, 1, 10, 10)), ("chair", (2, 2, 20, 20), 1), ("person", (5, 5, w, h))],
    )
    voc_xml(voc / "Annotations" / "000007.xml", (w2, h2), [("car", (3, 3, 30, 30), 1)])
    # a listed id without its files is bad input, named by list file and id: an error, or a skipped row
    with pytest.raises(DatasetError, match=r"trainval\.txt: id 000009: missing JPEGImages/000009\.jpg and "
                                           r"Annotations/000009\.xml \(1 of its 3 ids"):
        read_voc2007(tmp_path / "VOCdevkit", "trainval")
    df, skipped = read_voc2007(tmp_path / "VOCdevkit", "trainval", on_bad_input="skip")
    assert skipped.values.tolist() == [
        [str(main.absolute() / "trainval.txt"), "id 000009: missing JPEGImages/000009.jpg and Annotations/000009.xml"]
    ]
    assert df[["image_id", "label", "difficult_dropped"]].values.tolist() == [
        ["voc2007/000005", "chair", 1],
        ["voc2007/000005", "person", 0],
    ]  # 000007's only object is difficult: no row
    assert n_boxes(df).tolist() == [1, 1]
    full, _ = read_voc2007(voc, "trainval", on_bad_input="skip", use_difficult=True)
    assert full[["label", "difficult_dropped"]].values.tolist() == [["chair", 0], ["person", 0], ["car", 0]]
    assert n_boxes(full).tolist() == [2, 1, 1]
    # the image without its XML (or the XML without its image) is named the same way
    (voc / "Annotations" / "000007.xml").unlink()
    (main / "trainval.txt").write_text("000005\n000007\n")
    with pytest.raises(DatasetError, match=r"trainval\.txt: id 000007: missing Annotations/000007\.xml \("):
        read_voc2007(voc, "trainval")
    assert read_voc2007(voc, "trainval", on_bad_input="skip")[1]["reason"].tolist() == [
        "id 000007: missing Annotations/000007.xml"
    ]
    (main / "trainval.txt").write_text("000005\n000005\n")
    with pytest.raises(DatasetError, match="id 000005 listed twice"):
        read_voc2007(voc, "trainval")
    assert read_voc2007(voc, "trainval", on_bad_input="skip")[1]["reason"].str.contains("listed twice").all()
    (main / "trainval.txt").write_text("000005\n")
    (main / "test.txt").write_text("000005\n")  # an id in two lists
    with pytest.raises(DatasetError, match=r"test\.txt: id 000005 listed in .*trainval\.txt too"):
        read_voc2007(voc, ["trainval", "test"], on_bad_input="fail")
    with pytest.raises(DatasetError, match=r"image set 'train' not found"):
        read_voc2007(voc)  # the official train, val and test lists by default


def test_csv_boxes_match_xml_folder(tmp_path: Path) -> None:
    root = tmp_path / "roos"
    sizes = folder_dataset(root, 3)
    w, h = sizes[0]
    two_boxes = [("roos", (1, 2, w // 2, h - 1)), ("roos", (3, 4, 9, 9))]
    voc_xml(root / "annotations" / "img0.xml", (w, h), two_boxes)
    lines = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i, (w, h) in enumerate(sizes):
        lines.append(f"img{i}.jpg,{w},{h},roos,{1 + i},2,{w // 2},{h - 1}")
    lines.append(f"img0.jpg,{sizes[0][0]},{sizes[0][1]},roos,3,4,9,9")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    from_csv, skipped = read_csv_boxes(tmp_path / "labels.csv", root / "images")
    assert skipped.empty
    pd.testing.assert_frame_equal(from_csv, read_folder_dataset([root])[0])
    assert n_boxes(from_csv).tolist() == [2, 1, 1]
    assert read_csv_boxes(tmp_path / "labels.csv", root / "images", name="x")[0]["image_id"][0] == "x/img0"
    (tmp_path / "bad.csv").write_text("filename,class\nimg0.jpg,roos\n")
    with pytest.raises(DatasetError, match=r"bad\.csv.*lacks columns"):
        read_csv_boxes(tmp_path / "bad.csv", root / "images")


# --------------------------------------------------------------------------- bad input


def _break(kind: str, root: Path, other: Path) -> tuple[str, str]:
    """Damage ``img1`` of a 3-image folder dataset; return (file to be named, reason keyword)."""
    xml, image = root / "annotations" / "img1.xml", root / "images" / "img1.jpg"
    w, h = Image.open(image).size
    match kind:
        case "malformed XML":
            xml.write_text("<annotation><size><width>10</width>")
            return "img1.xml", "malformed XML"
        case "no size":
            xml.write_text("<annotation><object><name>a</name></object></annotation>")
            return "img1.xml", "missing <size>"
        case "missing image":
            image.unlink()
            return "img1.xml", "missing image"
        case "not an image":
            image.write_text("not a jpeg")
            return "img1.jpg", "unreadable image"
        case "zero-area box":
            voc_xml(xml, (w, h), [("a", (10, 10, 10, 40))])
            return "img1.xml", "zero-area"
        case "inverted box":
            voc_xml(xml, (w, h), [("a", (50, 10, 20, 40))])
            return "img1.xml", "inverted"
        case "box outside":
            voc_xml(xml, (w, h), [("a", (w + 5, 10, w + 50, 40))])
            return "img1.xml", "entirely outside"
        case "box far beyond edge":
            voc_xml(xml, (w, h), [("a", (10, 10, w + 10, 40))])
            return "img1.xml", "more than 2 px outside"
        case "size mismatch":
            voc_xml(xml, (w + 10, h), [("a", (10, 10, 20, 40))])
            return "img1.xml", "disagrees with the header"
        case "duplicate image":
            voc_xml(other / "annotations" / "img1.xml", (w, h), [("a", (10, 10, 20, 40))])
            photo(other / "images" / "img1.jpg", 1)
            return str(other / "annotations" / "img1.xml"), "listed twice"
    raise AssertionError(kind)


BAD_KINDS = [
    "malformed XML",
    "no size",
    "missing image",
    "not an image",
    "zero-area box",
    "inverted box",
    "box outside",
    "box far beyond edge",
    "size mismatch",
    "duplicate image",
]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_raises_or_is_skipped(tmp_path: Path, kind: str) -> None:
    root, other = tmp_path / "a" / "roos", tmp_path / "b" / "roos"
    folder_dataset(root, 3)
    (other / "annotations").mkdir(parents=True)
    (other / "images").mkdir()
    named, keyword = _break(kind, root, other)
    with pytest.raises(DatasetError, match=keyword) as info:
        read_folder_dataset([root, other])
    assert named in str(info.value)
    df, skipped = read_folder_dataset([root, other], on_bad_input="skip")
    kept = ["img0", "img1", "img2"] if kind == "duplicate image" else ["img0", "img2"]
    assert df["image_id"].tolist() == [f"roos/{k}" for k in kept]
    assert len(skipped) == 1 and named in skipped["path"].item() and keyword in skipped["reason"].item()


def test_slightly_outside_boxes_are_clipped(tmp_path: Path) -> None:
    root = tmp_path / "roos"
    folder_dataset(root, 1)
    w, h = Image.open(root / "images" / "img0.jpg").size
    voc_xml(root / "annotations" / "img0.xml", (w, h), [("a", (-1, 0, w + 2, h + 1))])
    np.testing.assert_allclose(boxes(read_folder_dataset([root])[0]), [[0, 0, 1, 1]])


def test_imagenet_csv_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "imagenet"
    data = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    for i in range(3):
        photo(data / f"ILSVRC2012_val_{i:08d}.JPEG", i)
    (root / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        f"ILSVRC2012_val_00000000,{WALLABY} 1 2 30 40 \n"
        f"ILSVRC2012_val_00000001,{WALLABY} 1 2 30\n"
        f"ILSVRC2012_val_00000000,{WALLABY} 1 2 30 40 \n"
        f"ILSVRC2012_val_00000002,{WALLABY} 1 2 x 40\n"
    )
    with pytest.raises(DatasetError, match=r"ILSVRC2012_val_00000001\.JPEG: malformed PredictionString"):
        read_imagenet(root, "val")
    df, skipped = read_imagenet(root, "val", on_bad_input="skip")
    assert df["image_id"].tolist() == ["ILSVRC2012_val_00000000"]
    assert skipped["reason"].str.extract(r"^(malformed|image listed twice)")[0].tolist() == [
        "malformed",
        "image listed twice",
        "malformed",
    ]


def test_parse_voc_xml_and_policy_arguments(tmp_path: Path) -> None:
    voc_xml(tmp_path / "a.xml", (30, 20), [("cat", (1.5, 2, 3, 4), 1), ("dog", (1, 1, 30, 20))])
    ann = parse_voc_xml(tmp_path / "a.xml")
    assert (ann.width, ann.height) == (30, 20)
    assert [(o.name, o.box, o.difficult) for o in ann.objects] == [
        ("cat", (1.5, 2.0, 3.0, 4.0), True),
        ("dog", (1.0, 1.0, 30.0, 20.0), False),
    ]
    with pytest.raises(DatasetError, match="missing annotation"):
        parse_voc_xml(tmp_path / "nope.xml")
    root = tmp_path / "roos"
    folder_dataset(root, 1)
    with pytest.raises(ValueError, match="on_bad_input"):
        read_folder_dataset([root], on_bad_input="error")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="class_from"):
        read_folder_dataset([root], class_from="name")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="not a folder dataset"):
        read_folder_dataset([tmp_path])
    with pytest.raises(DatasetError, match=r"roos_typo: no such folder \(the dataset root does not exist\)"):
        read_folder_dataset([tmp_path / "roos_typo"])


# --------------------------------------------------------------------------- manifest files and discovery


def test_manifest_round_trip_and_validation(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "image_id": ["voc2007/000342", "000017"],
            "path": ["/x/000342.jpg", "/x/000017.jpg"],
            "width": [500, 30],
            "height": [375, 20],
            "label": ["person", "NA"],
            "boxes": ["[[0.1, 0.2, 0.3, 0.4]]", "[[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.75, 1.0]]"],
            "difficult_dropped": [0, 2],
        }
    )
    write_manifest(df, tmp_path / "out" / "m.csv")
    back = read_manifest(tmp_path / "out" / "m.csv")
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["image_id"].tolist() == ["voc2007/000342", "000017"] and back["label"][1] == "NA"
    df.drop(columns="difficult_dropped").to_csv(tmp_path / "cols.csv", index=False)
    with pytest.raises(DatasetError, match=r"cols\.csv.*columns"):
        read_manifest(tmp_path / "cols.csv")
    with pytest.raises(DatasetError, match=r"missing\.csv"):
        read_manifest(tmp_path / "missing.csv")
    for bad in ("[]", "[[0.5, 0.2, 0.3, 0.4]]", "[[0, 0, 1.5, 1]]", "[0, 0, 1, 1]", '[["0", 0, 1, 1]]', "{}", "x"):
        with pytest.raises(DatasetError, match="boxes"):
            validate_manifest(df.assign(boxes=[bad, df["boxes"][1]]))
    with pytest.raises(DatasetError, match="more than once"):
        validate_manifest(pd.concat([df, df]))


BAD_BOXES = ["[]", "[[0.5, 0.2, 0.3, 0.4]]", "[[0, 0, 1.5, 1]]", "[0, 0, 1, 1]", '[["0", 0, 1, 1]]', "{}", "x",
             "[[true, 0, 1, 1]]", "[[null, 0, 1, 1]]", "[[NaN, 0, 1, 1]]", "[[0, 0, 1]]", "[[0, 0, 1, 1, 1]]",
             "[[[0, 0, 1, 1]]]", "[[0, 0, 1, 1]], [[0, 0, 1, 1]]", "[[0, 0, 1, 1]", "", "[[-0.1, 0, 1, 1]]",
             "[[0.2, 0.5, 0.4, 0.5]]", "[[0, 0, 1, 1], [0, 0, 1]]"]


@pytest.mark.parametrize("bad", BAD_BOXES)
def test_manifest_validation_names_the_bad_row_among_many(bad: str) -> None:
    """The whole-column check (one JSON parse) rejects what the per-row check rejects, and the error names
    the row, wherever it is among thousands of good ones."""
    n = 3000
    good = ["[[0.1, 0.2, 0.3, 0.4]]", "[[0, 0, 1, 1], [0.5, 0.05, 0.75, 1e-1]]"] * (n // 2)
    df = pd.DataFrame({"image_id": [f"i{k:05d}" for k in range(n)], "path": [f"/x/{k}.jpg" for k in range(n)],
                       "width": 10, "height": 10, "label": "a", "boxes": good, "difficult_dropped": 0})
    assert validate_manifest(df) is df
    with pytest.raises(DatasetError, match=r"boxes of \('i02345', 'a'\)|boxes of 'i02345'"):
        validate_manifest(df.assign(boxes=good[:2345] + [bad] + good[2346:]))


def test_manifest_validation_names_an_image_with_two_sizes() -> None:
    df = pd.DataFrame({"image_id": ["b", "a", "a", "b"], "path": ["/b", "/a", "/a", "/b"], "width": [1, 1, 1, 2],
                       "height": 1, "label": ["x", "x", "y", "y"], "boxes": "[[0, 0, 1, 1]]", "difficult_dropped": 0})
    with pytest.raises(DatasetError, match="image 'b' has rows with different path or size"):
        validate_manifest(df)
    assert validate_manifest(df.assign(width=1)) is not None


def test_discover_datasets_by_layout(tmp_path: Path) -> None:
    folder_dataset(tmp_path / "roos", 1)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / "devkit" / "VOC2007" / sub).mkdir(parents=True)
    (tmp_path / "inet" / "ILSVRC" / "Data" / "CLS-LOC").mkdir(parents=True)
    (tmp_path / "kaggle_csv_only").mkdir()
    (tmp_path / "kaggle_csv_only" / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")
    (tmp_path / "notes").mkdir()
    assert discover_datasets(tmp_path) == {
        "devkit": "voc",
        "inet": "imagenet",
        "kaggle_csv_only": "imagenet",
        "roos": "folder",
    }
