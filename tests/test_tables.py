"""The CorLoc table as people read it: units, Wilson intervals, a word on small counts, Markdown and HTML."""

from __future__ import annotations

import pandas as pd
import pytest

from sensitivity.evaluation import corloc_table
from sensitivity.tables import (
    corloc_display,
    small_count_note,
    to_html,
    wilson_interval,
)


def test_wilson_interval_matches_hand_values() -> None:
    # Wilson 95 % by hand (z = 1.96): 5/10 → 23.66-76.34 %, 0/10 → 0-27.75 %, 7/7 → 64.57-100 %
    assert wilson_interval(5, 10) == pytest.approx((23.66, 76.34), abs=0.01)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 27.75), abs=0.01)
    assert wilson_interval(7, 7) == pytest.approx((64.57, 100.0), abs=0.01)


@pytest.fixture
def table() -> pd.DataFrame:
    predictions = pd.DataFrame({"label": ["a"] * 7 + ["b"] * 40,
                                "box_correct": [True] * 4 + [False] * 3 + [True] * 30 + [False] * 10})
    return corloc_table(predictions, ["box"])


def test_corloc_display_has_units_and_intervals(table) -> None:
    shown = corloc_display(table, {"box": "learned box"})
    assert list(shown.columns) == ["class", "test images", "learned box, %"]
    low, high = wilson_interval(4, 7)
    assert shown["learned box, %"].tolist() == [
        f"57.1 [{low:.1f}, {high:.1f}]", "75.0 [59.8, 85.8]",
        f"{(100 * 4 / 7 + 75) / 2:.1f}",  # Average: a mean over classes, no binomial interval
        f"{100 * 34 / 47:.1f} [{wilson_interval(34, 47)[0]:.1f}, {wilson_interval(34, 47)[1]:.1f}]"]
    assert "one image moves a class's CorLoc by 100/n points (14.3 for a's 7)" in small_count_note(table)
    large = table.assign(n_images=[30, 40, 70, 70])
    assert "Few test images" not in small_count_note(large)


def test_html_table_is_escaped_ascii(table) -> None:
    text = to_html(corloc_display(table, {"box": "learned <box>"}), "CorLoc", "α = 10\n\nsecond")
    assert text.isascii() and "learned &lt;box&gt;, %" in text and "<p>&#945; = 10</p>" in text
    assert text.count("<tr>") == 5 and "<p>second</p>" in text
