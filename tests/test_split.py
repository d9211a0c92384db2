"""Stratified, seeded train/val/test split of manifest images."""

from __future__ import annotations

import pandas as pd
import pytest

from sensitivity.datasets import MANIFEST_COLUMNS, split_manifest


def manifest(per_class: dict[str, int], extra: list[tuple[str, str]] = ()) -> pd.DataFrame:
    """One row per image of each class (ids ``<class>/<k>``), plus ``(image_id, label)`` extra rows."""
    pairs = [(f"{c}/{k:03d}", c) for c, n in per_class.items() for k in range(n)] + list(extra)
    return pd.DataFrame(
        [(i, f"/img/{i}.jpg", 64, 48, label, "[[0.0, 0.0, 1.0, 1.0]]", 0) for i, label in pairs],
        columns=MANIFEST_COLUMNS,
    )


def counts(split: pd.Series) -> dict[str, dict[str, int]]:
    """``{class: {split: n}}`` where an image's class is its id prefix."""
    table = split.groupby([split.index.str.split("/").str[0], split]).size()
    return {c: table[c].to_dict() for c in table.index.levels[0]}


def test_deterministic_and_seed_dependent() -> None:
    df = manifest({"a": 40, "b": 24})
    first = split_manifest(df, seed=3)
    shuffled_rows = split_manifest(df.sample(frac=1, random_state=1), seed=3)
    pd.testing.assert_series_equal(first, shuffled_rows.loc[first.index])
    pd.testing.assert_series_equal(first, split_manifest(df, seed=3))
    assert not first.equals(split_manifest(df, seed=4))
    assert first.name == "split" and first.index.name == "image_id"
    assert first.index.tolist() == df["image_id"].tolist()


def test_fractions_per_class() -> None:
    split = split_manifest(manifest({"a": 40, "b": 40, "c": 10, "d": 8}))
    assert counts(split) == {
        "a": {"train": 30, "val": 5, "test": 5},
        "b": {"train": 30, "val": 5, "test": 5},
        "c": {"train": 8, "val": 1, "test": 1},  # 7.5 / 1.25 / 1.25, largest remainder
        "d": {"train": 6, "val": 1, "test": 1},
    }
    other = split_manifest(manifest({"a": 40}), fractions=(0.5, 0.25, 0.25))
    assert counts(other) == {"a": {"train": 20, "val": 10, "test": 10}}


def test_small_classes_get_val_and_test_when_possible() -> None:
    split = split_manifest(manifest({"three": 3, "four": 4}))
    assert counts(split) == {
        "three": {"train": 1, "val": 1, "test": 1},
        "four": {"train": 2, "val": 1, "test": 1},
    }
    assert set(split_manifest(manifest({"a": 5}), fractions=(1.0, 0.0, 0.0))) == {"train"}


def test_classes_of_one_or_two_images_draw_their_split_in_the_expected_shares() -> None:
    """As in an ImageNet val sample (1-6 images per class): tiny classes are not all put in train."""
    sizes = {f"c{k:04d}": 1 + k % 2 for k in range(3000)}  # 1500 classes of 1 image, 1500 of 2
    split = split_manifest(manifest(sizes), seed=5)
    shares = split.value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.75, abs=0.02)
    assert shares["val"] == pytest.approx(0.125, abs=0.015)
    assert shares["test"] == pytest.approx(0.125, abs=0.015)
    pd.testing.assert_series_equal(split, split_manifest(manifest(sizes), seed=5))
    assert not split.equals(split_manifest(manifest(sizes), seed=6))
    # a zero fraction is never drawn
    assert set(split_manifest(manifest(sizes), fractions=(0.9, 0.1, 0.0))) == {"train", "val"}


def test_multi_class_images_share_one_split_and_stratify_by_first_label() -> None:
    extra = [(f"b/{k:03d}", "a") for k in range(8)] + [(f"b/{k:03d}", "c") for k in range(8, 16)]
    df = manifest({"a": 8, "b": 16}, extra)
    split = split_manifest(df)
    assert split.index.is_unique and len(split) == 24
    assert df["image_id"].map(split).groupby(df["image_id"]).nunique().max() == 1
    # b/000..b/007 carry labels {a, b}: class "a" now holds 16 images, class "b" the other 8
    by_class = split.groupby([split.index.map(lambda i: "a" if i < "b/008" else "b"), split]).size()
    assert by_class["a"].to_dict() == {"train": 12, "val": 2, "test": 2}
    assert by_class["b"].to_dict() == {"train": 6, "val": 1, "test": 1}


def test_adding_a_class_keeps_the_other_classes_split() -> None:
    before = split_manifest(manifest({"cat": 20, "dog": 13}), seed=7)
    after = split_manifest(manifest({"aardvark": 9, "cat": 20, "dog": 13}), seed=7)
    pd.testing.assert_series_equal(after.loc[before.index], before)


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.8, 0.3, 0.1), (1.2, -0.1, -0.1)])
def test_bad_fractions(fractions: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        split_manifest(manifest({"a": 4}), fractions=fractions)
