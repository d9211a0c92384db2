"""The example figure's rows: a bounded number of seeded classes, whatever the number of classes in the test split."""

from __future__ import annotations

import pandas as pd

from sensitivity.pipeline.report import choose_examples


def predictions(n_classes: int, per_class: int) -> pd.DataFrame:
    return pd.DataFrame({"label": [f"c{c:03d}" for c in range(n_classes) for _ in range(per_class)],
                         "image_id": [f"c{c:03d}_{i}" for c in range(n_classes) for i in range(per_class)]})


def test_examples_come_from_at_most_max_classes_seeded() -> None:
    table = predictions(500, 6)
    chosen = choose_examples(table, per_class=4, seed=0, max_classes=12)
    assert chosen["label"].nunique() == 12 and len(chosen) == 48
    assert chosen["label"].is_monotonic_increasing
    assert chosen.equals(choose_examples(table, per_class=4, seed=0, max_classes=12))
    assert set(choose_examples(table, 4, seed=1, max_classes=12)["label"]) != set(chosen["label"])


def test_fewer_classes_than_the_cap_are_all_shown_as_without_a_cap() -> None:
    table = predictions(3, 6)
    assert choose_examples(table, 2, seed=0, max_classes=12).equals(choose_examples(table, 2, seed=0))
    assert choose_examples(table, 2, seed=0)["label"].tolist() == ["c000", "c000", "c001", "c001", "c002", "c002"]
