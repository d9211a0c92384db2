"""The evaluation core shared by the workflow's stages and the paper's study, on hand-worked numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sensitivity.evaluation import (
    ALL,
    AVERAGE,
    average_corloc,
    choose,
    corloc_table,
    labelled_rows,
    prediction_columns,
    ranked,
    ranking,
    score_boxes,
)
from sensitivity.tables import numeric_columns, to_markdown, write_table

HALF = [0.0, 0.0, 0.5, 1.0]  # the left half of the image


def _rows() -> pd.DataFrame:
    """Three rows: one box (the whole image), two boxes (left and right half), one box (left half)."""
    gt = [np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([HALF, [0.5, 0.0, 1.0, 1.0]]), np.array([HALF])]
    return pd.DataFrame({"image_id": ["a/1", "a/2", "b/1"], "label": ["a", "a", "b"], "gt": gt,
                         "path": "", "width": 10, "height": 10, "boxes": [json.dumps(g.tolist()) for g in gt]})


def test_labelled_rows_read_boxes_targets_and_split(tmp_path):
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"image_id": ["x/1", "x/1", "y/2"], "path": ["p1", "p1", "p2"], "width": 10, "height": 10,
                  "label": ["cat", "dog", "cat"],
                  "boxes": ["[[0, 0, 0.5, 0.5], [0, 0, 1, 0.9]]", "[[0.1, 0.1, 0.2, 0.2]]", "[[0, 0, 1, 1]]"],
                  "difficult_dropped": 0}).to_csv(manifest, index=False)
    rows = labelled_rows(manifest)
    assert "split" not in rows and rows["gt"][0].shape == (2, 4)
    np.testing.assert_array_equal(rows["target_box"][0], [0, 0, 1, 0.9])  # the larger of the two
    (tmp_path / "split.csv").write_text("image_id,split\nx/1,train\ny/2,test\n")
    assert labelled_rows(manifest, tmp_path / "split.csv")["split"].tolist() == ["train", "train", "test"]
    (tmp_path / "partial.csv").write_text("image_id,split\nx/1,train\n")
    with pytest.raises(ValueError, match="'y/2' has no split"):
        labelled_rows(manifest, tmp_path / "partial.csv")


def test_prediction_columns_take_the_best_box_and_a_strict_threshold():
    rows = _rows().set_index(pd.Index([7, 8, 9]))
    boxes = np.array([HALF, HALF, [0.0, 0.0, 0.25, 1.0]])
    out = prediction_columns(rows, {"m": boxes}, threshold=0.5)
    assert out.index.tolist() == [7, 8, 9]  # the rows' index is kept
    assert list(out.columns[-6:]) == ["m_x1", "m_y1", "m_x2", "m_y2", "m_iou", "m_correct"]
    # IoU: half of the whole image 0.5; the left half itself 1; a quarter strip inside the left half 0.5
    np.testing.assert_allclose(out["m_iou"], [0.5, 1.0, 0.5])
    assert out["m_correct"].tolist() == [False, True, False]  # IoU must be above 0.5, not equal
    assert "m_correct" not in prediction_columns(rows, {"m": boxes}, None, keep=("image_id",))


def test_corloc_table_averages_over_classes_and_over_rows():
    predictions = pd.DataFrame({"label": ["a", "a", "a", "b"], "m_correct": [True, False, False, True]})
    table = corloc_table(predictions, ["m"]).set_index("class")
    assert table.index.tolist() == ["a", "b", AVERAGE, ALL]
    assert table.loc["a", "corloc_m"] == pytest.approx(100 / 3)
    assert table.loc[AVERAGE, "corloc_m"] == pytest.approx((100 / 3 + 100) / 2)  # classes weigh alike
    assert table.loc[ALL, "corloc_m"] == 50.0 and table.loc[ALL, "n_images"] == 4
    assert average_corloc(predictions["m_correct"], predictions["label"]) == pytest.approx(200 / 3)
    assert np.isnan(average_corloc(np.array([], dtype=bool), []))


def test_score_boxes_summarises_one_method():
    scores = score_boxes(np.array([HALF, HALF, HALF]), _rows(), 0.5)
    np.testing.assert_allclose(scores.iou, [0.5, 1.0, 1.0])
    assert scores.correct.tolist() == [False, True, True]
    assert scores.micro == pytest.approx(2 / 3) and scores.mean_iou == pytest.approx(2.5 / 3)
    assert scores.corloc == pytest.approx((50 + 100) / 2)


def test_one_choice_rule_breaks_ties_by_the_second_score_then_order():
    assert choose([0.5, 0.6, 0.6]) == 1  # ties: the earlier
    assert choose([0.5, 0.6, 0.6, 0.6], [0.9, 0.1, 0.2, 0.2]) == 2  # then the higher tie-break, then earlier
    assert ranking([0.5, 0.6, 0.6, 0.6], [0.9, 0.1, 0.2, 0.2]) == [2, 3, 1, 0]
    rows = _rows()
    scored = [score_boxes(np.array(boxes), rows, 0.5) for boxes in ([HALF] * 3, [[0, 0, 1, 1]] * 3, [HALF] * 3)]
    assert ranked(scored) == [0, 2, 1]  # 2 of 3 correct beat 1 of 3; equal scores keep their order
    with pytest.raises(ValueError, match="no candidate"):
        choose([])
    with pytest.raises(ValueError, match="tie-break"):
        ranking([0.1, 0.2], [0.3])


def test_markdown_renderer_styles():
    table = pd.DataFrame({"class": ["a|b", AVERAGE], "note": ["x", "y"], "value": [1.234, np.nan]})
    assert to_markdown(table, "T", digits=1) == (
        "## T\n\n| class | note | value |\n|---|---:|---:|\n| a\\|b | x | 1.2 |\n| **Average** | **y** | **** |\n")
    paper = to_markdown(table, "T", note="n", level=3, right=numeric_columns(table))
    assert paper.startswith("### T\n\n| class | note | value |\n|---|---|---:|\n") and paper.endswith("\n\nn\n")


def test_write_table_writes_csv_and_markdown(tmp_path):
    table = pd.DataFrame({"class": ["a"], "value": [0.123456]})
    write_table(table, tmp_path / "out" / "t.csv", tmp_path / "out" / "t.md", "T", digits=3)
    assert (tmp_path / "out" / "t.csv").read_text() == "class,value\na,0.1235\n"
    assert (tmp_path / "out" / "t.md").read_text().endswith("| a | 0.123 |\n")
