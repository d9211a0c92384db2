"""Checks for sensitivity.metrics: hand-worked boxes and scores, and agreement with an independent
re-implementation of wsolevaluation's box evaluation in integer pixels."""

import cv2
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sensitivity.boxes import iou_matrix
from sensitivity.metrics import (
    accuracy_at,
    best_ious,
    box_accuracy_curves,
    choose_thresholds,
    fixed_box_accuracy,
    fixed_box_ious,
    maxboxacc,
    normalize_maps,
    threshold_box,
    threshold_boxes,
)

THRESHOLDS = np.arange(0, 1, 0.01)


def _sorted_rows(boxes):
    return boxes[np.lexsort(boxes.T[::-1])]


# --- Boxes of one map, by hand ----------------------------------------------


def test_one_rectangle_gives_exactly_its_pixels():
    m = np.zeros((8, 10))
    m[2:5, 1:7] = 1.0  # rows 2-4, columns 1-6
    for boxes in threshold_boxes(m, [0.0, 0.5, 0.99]):
        np.testing.assert_array_equal(boxes, [[1 / 10, 2 / 8, 7 / 10, 5 / 8]])


def test_two_blobs_give_two_boxes_and_v1_keeps_the_larger():
    m = np.zeros((8, 8))
    m[1:3, 1:3] = 1.0
    m[4:8, 3:8] = 1.0  # touches the bottom-right border: its box ends at 1.0, not clipped
    (v2,) = threshold_boxes(m, [0.5])
    np.testing.assert_array_equal(_sorted_rows(v2), np.array([[1, 1, 3, 3], [3, 4, 8, 8]]) / 8)
    (v1,) = threshold_boxes(m, [0.5], multi_contour=False)
    np.testing.assert_array_equal(v1, [[3 / 8, 4 / 8, 1.0, 1.0]])


def test_v1_ranks_by_contour_area_so_a_long_line_loses_to_a_2x2_blob():
    # cv2.contourArea is the polygon through the boundary pixels' centres: the 8-pixel line has area 0,
    # the 4-pixel square area 1.
    m = np.zeros((8, 8))
    m[0, :] = 1.0
    m[4:6, 4:6] = 1.0
    (v1,) = threshold_boxes(m, [0.5], multi_contour=False)
    np.testing.assert_array_equal(v1, [[4 / 8, 4 / 8, 6 / 8, 6 / 8]])


def test_a_ring_gives_its_outer_box_and_its_hole_grown_by_one_pixel():
    # RETR_TREE also returns the hole's contour. OpenCV traces it through the ring pixels that border
    # the hole (rows/columns 2 and 5 around the hole's rows/columns 3-4), so its box is [2, 6) x [2, 6).
    m = np.zeros((8, 8))
    m[1:7, 1:7] = 1.0
    m[3:5, 3:5] = 0.0
    (v2,) = threshold_boxes(m, [0.5])
    np.testing.assert_array_equal(_sorted_rows(v2), np.array([[1, 1, 7, 7], [2, 2, 6, 6]]) / 8)
    (v1,) = threshold_boxes(m, [0.5], multi_contour=False)
    np.testing.assert_array_equal(v1, [[1 / 8, 1 / 8, 7 / 8, 7 / 8]])


def test_thresholds_cut_the_uint8_image_strictly_above_int_tau_times_max():
    # Normalised values 0, 0.5, 1 quantise to 0, 127, 255; τ = 0.5 cuts at int(127.5) = 127 and keeps
    # only the 255 pixels; τ = 0.49 cuts at int(124.95) = 124 and keeps the 127 pixels too.
    m = np.array([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
    low, half = threshold_boxes(m, [0.49, 0.5])
    np.testing.assert_array_equal(low, [[0.0, 0.5, 1.0, 1.0]])
    np.testing.assert_array_equal(half, [[0.5, 0.5, 1.0, 1.0]])


def test_normalize_maps_is_min_max_per_map():
    maps = np.array([[[1.0, 3.0], [5.0, 9.0]], [[-2.0, -1.0], [-1.0, 0.0]]])
    np.testing.assert_array_equal(normalize_maps(maps), [[[0, 0.25], [0.5, 1]], [[0, 0.5], [0.5, 1]]])
    assert normalize_maps(maps).dtype == np.float64


def test_zero_constant_and_nan_maps_become_zeros_with_no_box():
    maps = np.stack([np.zeros((8, 8)), np.full((8, 8), 3.0), np.ones((8, 8))])
    maps[2, 4, 4] = np.nan
    norm = normalize_maps(maps)
    np.testing.assert_array_equal(norm, np.zeros((3, 8, 8)))
    for boxes in threshold_boxes(norm[0], [0.0, 0.5]):
        np.testing.assert_array_equal(boxes, [[0.0, 0.0, 0.0, 0.0]])
    # The ground-truth pixel at the origin: the reference's [0, 0, 0, 0] box (1 pixel under its +1
    # convention) would score IoU 1 here; our zero-area box scores 0.
    gt = [np.array([[0.0, 0.0, 1 / 8, 1 / 8]])] * 3
    np.testing.assert_array_equal(best_ious(maps, gt, [0.0, 0.5]), np.zeros((3, 2)))
    assert maxboxacc(maps, gt) == {
        "mean": 0.0,
        "per_iou": {30: 0.0, 50: 0.0, 70: 0.0},
        "threshold": {30: 0.0, 50: 0.0, 70: 0.0},
    }


# --- Scores, by hand -----------------------------------------------------------


def _tiny_case():
    """Three 4 x 4 maps whose boxes at τ = 0 and τ = 0.5 and whose IoUs are worked out below."""
    a = np.array([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 2, 0], [0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 2, 2], [1, 1, 2, 2]], dtype=float)
    # Boxes: a at τ=0 [.25, .25, .75, .75], at τ=.5 [.5, .5, .75, .75]; b at τ=0 [0, .5, 1, 1], at τ=.5
    # [.5, .5, 1, 1].
    gt = [
        np.array([[0.25, 0.25, 0.75, 0.75]]),  # a: IoU 1 at τ=0, 1/4 at τ=.5
        np.array([[0.5, 0.5, 1.0, 1.0]]),  # b: IoU 4/8 = 0.5 at τ=0 (a tie), 1 at τ=.5
        np.array([[0.5, 0.5, 0.75, 0.75]]),  # a again: IoU 1/4 at τ=0, 1 at τ=.5
    ]
    return np.stack([a, b, a]), gt


def test_tiny_maxboxacc_by_hand():
    maps, gt = _tiny_case()
    np.testing.assert_array_equal(best_ious(maps, gt, [0.0, 0.5]), [[1.0, 0.25], [0.5, 1.0], [0.25, 1.0]])
    # δ=30: τ=0 2/3, τ=.5 2/3 -> τ=0 (first on ties); δ=50 the same, counting b's tie at 0.5;
    # δ=70: τ=0 1/3, τ=.5 2/3 -> τ=.5.
    np.testing.assert_array_equal(
        box_accuracy_curves(best_ious(maps, gt, [0.0, 0.5])), [[2 / 3, 2 / 3], [2 / 3, 2 / 3], [1 / 3, 2 / 3]]
    )
    result = maxboxacc(maps, gt, thresholds=[0.0, 0.5])
    assert result == {
        "mean": pytest.approx(2 / 3, abs=1e-15),
        "per_iou": {30: 2 / 3, 50: 2 / 3, 70: 2 / 3},
        "threshold": {30: 0.0, 50: 0.0, 70: 0.5},
    }


def test_fixed_box_accuracy_by_hand():
    pred = [[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]]
    gt = [
        np.array([[0.0, 0.0, 0.5, 1.0]]),  # IoU 1
        np.array([[0.25, 0.0, 0.75, 1.0]]),  # IoU 1/3
        np.array([[0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.8, 0.75]]),  # best IoU 0.6, from the second box
    ]
    np.testing.assert_allclose(fixed_box_ious(pred, gt), [1.0, 1 / 3, 0.6], rtol=0, atol=1e-15)
    result = fixed_box_accuracy(pred, gt)
    assert result["per_iou"] == {30: 1.0, 50: 2 / 3, 70: 1 / 3}
    assert result["mean"] == pytest.approx(2 / 3, abs=1e-15)


def test_an_iou_of_exactly_one_half_counts_at_50_even_when_rounding_puts_it_below():
    # Pixel columns [1, 4) against [1, 7) of 7: IoU 3/6 exactly, 0.49999999999999994 in floats.
    pred, gt = [[1 / 7, 0.0, 4 / 7, 1.0]], [np.array([[1 / 7, 0.0, 1.0, 1.0]])]
    assert iou_matrix(pred, gt[0])[0, 0] < 0.5
    assert fixed_box_accuracy(pred, gt, iou_levels=(50, 51))["per_iou"] == {50: 1.0, 51: 0.0}


# --- Random cases ---------------------------------------------------------------------


def _random_gt_px(rng, height, width, n):
    """1-3 random inclusive pixel boxes [x0, y0, x1, y1] per image, at least 2 x 2 pixels."""
    out = []
    for _ in range(n):
        boxes = []
        for _ in range(rng.integers(1, 4)):
            x0, y0 = rng.integers(0, width - 1), rng.integers(0, height - 1)
            boxes.append([x0, y0, rng.integers(x0 + 1, width), rng.integers(y0 + 1, height)])
        out.append(np.array(boxes))
    return out


def _normalised(gt_px, height, width):
    """Inclusive pixel boxes [a, b, c, d] -> normalised [a/W, b/H, (c+1)/W, (d+1)/H] (difference 2)."""
    return [(g + np.array([0, 0, 1, 1])) / np.array([width, height, width, height]) for g in gt_px]


def _random_maps(rng, kind, n, height, width):
    if kind == "smooth":
        return gaussian_filter(rng.random((n, height, width)), sigma=(0, height / 8, width / 8))
    if kind == "noise":
        return rng.random((n, height, width))
    # "levels": few distinct values, so many pixels tie and many thresholds share a cut; map 0 is
    # constant and map 1 has a NaN (both become all zeros).
    maps = rng.integers(0, 4, (n, height, width)).astype(float)
    maps[0] = 2.0
    maps[1, 0, 0] = np.nan
    return maps


# --- Thresholds chosen on one split, reported on another -----------------------------


def test_accuracy_at_a_threshold_chosen_elsewhere_reads_the_other_split_curve():
    rng = np.random.default_rng(3)
    maps = _random_maps(rng, "smooth", 40, 16, 16)
    gt = _normalised(_random_gt_px(rng, 16, 16, 40), 16, 16)
    best = best_ious(maps, gt, THRESHOLDS)
    chosen = choose_thresholds(box_accuracy_curves(best[:20]), THRESHOLDS)
    test_curves = box_accuracy_curves(best[20:])
    expected = {d: test_curves[k, list(THRESHOLDS).index(chosen[d])] for k, d in enumerate((30, 50, 70))}
    result = accuracy_at(best[20:], THRESHOLDS, chosen)
    assert result["per_iou"] == expected
    assert result["mean"] == pytest.approx(np.mean(list(expected.values())), abs=1e-15)
    assert result["mean"] <= maxboxacc(maps[20:], gt[20:])["mean"]
    # Chosen on the same split it is MaxBoxAccV2 itself.
    whole = maxboxacc(maps, gt)
    assert accuracy_at(best, THRESHOLDS, whole["threshold"]) == {k: whole[k] for k in ("mean", "per_iou")}


def test_best_ious_equal_threshold_boxes_scored_one_threshold_at_a_time():
    rng = np.random.default_rng(4)
    maps = _random_maps(rng, "levels", 6, 12, 20)
    gt = _normalised(_random_gt_px(rng, 12, 20, 6), 12, 20)
    for multi_contour in (True, False):
        best = best_ious(maps, gt, THRESHOLDS, multi_contour)
        for i, scoremap in enumerate(normalize_maps(maps)):
            boxes = threshold_boxes(scoremap, THRESHOLDS, multi_contour)
            np.testing.assert_array_equal(best[i], [iou_matrix(b, gt[i]).max() for b in boxes])


# --- The reference, re-implemented in integer pixels -----------------------------
#
# Written from the description of clovaai/wsolevaluation evaluation.py (MIT): normalize_scoremap,
# compute_bboxes_from_scoremaps, calculate_multiple_iou and BoxEvaluator.accumulate / compute, in its
# own terms: inclusive integer pixel boxes, the +1 area convention, accuracies in percent. It shares
# nothing with sensitivity.metrics but OpenCV. ONE documented change (difference 2 in the module
# docstring): a contour's box ends at its last pixel, x + w - 1 and y + h - 1, instead of the
# reference's x + w and y + h; ``off_by_one=True`` restores the reference's line.


def _ref_normalize_scoremap(cam):
    cam = np.array(cam, dtype=np.float64)
    if np.isnan(cam).any():
        return np.zeros_like(cam)
    if cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def _ref_compute_bboxes_from_scoremaps(scoremap, scoremap_threshold_list, multi_contour_eval, off_by_one):
    height, width = scoremap.shape
    scoremap_image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    estimated_boxes_at_each_thr, number_of_box_list = [], []
    for threshold in scoremap_threshold_list:
        _, thr_gray_heatmap = cv2.threshold(
            src=scoremap_image,
            thresh=int(threshold * np.max(scoremap_image)),
            maxval=255,
            type=cv2.THRESH_BINARY,
        )
        contours = cv2.findContours(
            image=thr_gray_heatmap, mode=cv2.RETR_TREE, method=cv2.CHAIN_APPROX_SIMPLE
        )[0]
        if len(contours) == 0:
            estimated_boxes_at_each_thr.append(np.asarray([[0, 0, 0, 0]]))
            number_of_box_list.append(1)
            continue
        if not multi_contour_eval:
            contours = [max(contours, key=cv2.contourArea)]
        estimated_boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if off_by_one:  # the reference
                x1, y1 = min(x + w, width - 1), min(y + h, height - 1)
            else:  # the one change
                x1, y1 = min(x + w - 1, width - 1), min(y + h - 1, height - 1)
            estimated_boxes.append([x, y, x1, y1])
        estimated_boxes_at_each_thr.append(np.asarray(estimated_boxes))
        number_of_box_list.append(len(contours))
    return estimated_boxes_at_each_thr, number_of_box_list


def _ref_calculate_multiple_iou(box_a, box_b):
    """IoU of inclusive integer boxes (num_a, 4) and (num_b, 4): (num_a, num_b)."""
    a, b = box_a[:, None, :], box_b[None, :, :]
    inter_w = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    inter_h = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    area_intersect = inter_w * inter_h
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    denominator = area_a + area_b - area_intersect
    degenerate = denominator <= 0
    ious = area_intersect / np.where(degenerate, 1, denominator)
    ious[degenerate] = 0
    return ious


class _RefBoxEvaluator:
    def __init__(self, cam_threshold_list, iou_threshold_list, multi_contour_eval, off_by_one=False):
        self.cam_threshold_list = cam_threshold_list
        self.iou_threshold_list = iou_threshold_list
        self.multi_contour_eval = multi_contour_eval
        self.off_by_one = off_by_one
        self.cnt = 0
        self.num_correct = {t: np.zeros(len(cam_threshold_list)) for t in iou_threshold_list}

    def accumulate(self, scoremap, gt_bboxes):
        boxes_at_thresholds, number_of_box_list = _ref_compute_bboxes_from_scoremaps(
            scoremap, self.cam_threshold_list, self.multi_contour_eval, self.off_by_one
        )
        multiple_iou = _ref_calculate_multiple_iou(np.concatenate(boxes_at_thresholds, axis=0), gt_bboxes)
        idx = 0
        sliced_multiple_iou = []
        for nr_box in number_of_box_list:
            sliced_multiple_iou.append(max(multiple_iou.max(1)[idx : idx + nr_box]))
            idx += nr_box
        for iou_threshold in self.iou_threshold_list:
            correct = np.where(np.asarray(sliced_multiple_iou) >= (iou_threshold / 100))[0]
            self.num_correct[iou_threshold][correct] += 1
        self.cnt += 1

    def compute(self):
        """MaxBoxAcc per IoU level in percent, and the index of its best threshold."""
        accuracies = [self.num_correct[t] * 100.0 / float(self.cnt) for t in self.iou_threshold_list]
        return [acc.max() for acc in accuracies], [int(np.argmax(acc)) for acc in accuracies]


def _reference(maps, gt_px, multi_contour, off_by_one=False):
    evaluator = _RefBoxEvaluator(THRESHOLDS, [30, 50, 70], multi_contour, off_by_one)
    for cam, gt in zip(maps, gt_px):
        evaluator.accumulate(_ref_normalize_scoremap(cam), gt)
    return evaluator


CASES = [
    pytest.param("smooth", 30, 16, 16, id="smooth-16"),
    pytest.param("noise", 20, 16, 16, id="noise-16"),
    pytest.param("smooth", 30, 56, 56, id="smooth-56"),
    pytest.param("noise", 4, 56, 56, id="noise-56"),
    pytest.param("levels", 20, 12, 20, id="levels-12x20"),
]


@pytest.mark.parametrize("multi_contour", [True, False], ids=["V2", "V1"])
@pytest.mark.parametrize(("kind", "n", "height", "width"), CASES)
def test_maxboxacc_equals_the_reference_without_its_off_by_one(kind, n, height, width, multi_contour):
    rng = np.random.default_rng([n, height, width, len(kind)])
    maps = _random_maps(rng, kind, n, height, width)
    gt_px = _random_gt_px(rng, height, width, n)
    reference = _reference(maps, gt_px, multi_contour)
    ref_max, ref_best = reference.compute()

    best = best_ious(maps, _normalised(gt_px, height, width), THRESHOLDS, multi_contour)
    curves = box_accuracy_curves(best)
    for k, level in enumerate((30, 50, 70)):
        np.testing.assert_array_equal(np.rint(curves[k] * n), reference.num_correct[level])
    result = maxboxacc(maps, _normalised(gt_px, height, width), multi_contour=multi_contour)
    assert result["threshold"] == {d: THRESHOLDS[j] for d, j in zip((30, 50, 70), ref_best)}
    assert result["per_iou"] == pytest.approx(
        {d: acc / 100 for d, acc in zip((30, 50, 70), ref_max)}, rel=0, abs=1e-12
    )
    assert result["mean"] == pytest.approx(np.mean(ref_max) / 100, rel=0, abs=1e-12)
    assert 0 < result["mean"] < 1  # a case that can tell right from wrong


def test_the_reference_off_by_one_changes_the_result():
    # The reference's boxes, one pixel too wide and tall, on the cases above (V2): noise 16 x 16
    # MaxBoxAcc(30, 50, 70) 85 / 35 / 5 % -> 100 / 60 / 5 %, MaxBoxAccV2 41.7 % -> 55.0 %; smooth 16 x 16
    # 16.7 % -> 18.9 %; levels 12 x 20 35.0 % -> 41.7 %; no change on the few 56 x 56 cases (V1: at most
    # +1.7 points).
    rng = np.random.default_rng([20, 16, 16, len("noise")])
    maps = _random_maps(rng, "noise", 20, 16, 16)
    gt_px = _random_gt_px(rng, 16, 16, 20)
    ours = maxboxacc(maps, _normalised(gt_px, 16, 16))
    assert [ours["per_iou"][d] for d in (30, 50, 70)] == pytest.approx([0.85, 0.35, 0.05], abs=1e-12)
    with_off_by_one, _ = _reference(maps, gt_px, True, off_by_one=True).compute()
    np.testing.assert_allclose(with_off_by_one, [100.0, 60.0, 5.0])


# --- Input validation --------------------------------------------------------------

MAPS = np.random.default_rng(0).random((2, 4, 4))
GT = [np.array([[0.0, 0.0, 0.5, 0.5]])] * 2


@pytest.mark.parametrize(
    ("function", "args", "message"),
    [
        pytest.param(maxboxacc, (MAPS[0], GT), r"maps must be a non-empty \(N, H, W\)", id="2-d"),
        pytest.param(maxboxacc, (np.zeros((0, 4, 4)), []), r"maps must be a non-empty", id="no-maps"),
        pytest.param(maxboxacc, (MAPS * np.inf, GT), r"maps contain infinite values", id="inf"),
        pytest.param(maxboxacc, (MAPS, GT[:1]), r"gt_boxes has 1 entries for 2 images", id="n"),
        pytest.param(maxboxacc, (MAPS, [GT[0], np.zeros((0, 4))]), r"gt_boxes\[1\] is empty", id="gt-empty"),
        pytest.param(maxboxacc, (MAPS, [GT[0], [0, 0, 1, 1]]), r"gt_boxes\[1\] must have shape", id="gt-shape"),
        pytest.param(maxboxacc, (MAPS, [GT[0], [[0.5, 0, 0.2, 1]]]), r"gt_boxes\[1\] has an inv", id="gt-inv"),
        pytest.param(maxboxacc, (MAPS, GT, [0.5, 1.0]), r"must lie in \[0, 1\), got 1.0", id="tau=1"),
        pytest.param(maxboxacc, (MAPS, GT, [-0.1]), r"must lie in \[0, 1\), got -0.1", id="tau<0"),
        pytest.param(maxboxacc, (MAPS, GT, []), r"thresholds must be a non-empty 1-D", id="no-tau"),
        pytest.param(maxboxacc, (MAPS, GT, THRESHOLDS, (0,)), r"iou_levels must be whole", id="delta=0"),
        pytest.param(maxboxacc, (MAPS, GT, THRESHOLDS, (101,)), r"iou_levels must be whole", id="delta=101"),
        pytest.param(maxboxacc, (MAPS, GT, THRESHOLDS, (50.5,)), r"iou_levels must be whole", id="delta=50.5"),
        pytest.param(maxboxacc, (MAPS, GT, THRESHOLDS, ()), r"iou_levels must be whole", id="no-delta"),
        pytest.param(threshold_boxes, (MAPS[0] * 2, [0.5]), r"scoremap must be .* in \[0, 1\]", id="map>1"),
        pytest.param(threshold_boxes, (MAPS, [0.5]), r"scoremap must be a non-empty \(H, W\)", id="map-3-d"),
        pytest.param(box_accuracy_curves, (np.zeros((0, 3)),), r"best_iou must be a non-empty", id="no-iou"),
        pytest.param(choose_thresholds, (np.zeros((3, 2)), [0.5]), r"curves must have shape", id="curves"),
        pytest.param(accuracy_at, (np.zeros((2, 2)), [0.5], {50: 0.5}), r"2 columns for 1 thr", id="columns"),
        pytest.param(accuracy_at, (np.zeros((2, 1)), [0.5], {50: 0.4}), r"0.4 for IoU level 50", id="tau-off"),
        pytest.param(fixed_box_accuracy, ([0, 0, 1, 1], GT[:1]), r"pred_boxes must have shape", id="pred-1-d"),
        pytest.param(fixed_box_accuracy, (np.zeros((0, 4)), []), r"zero images", id="no-pred"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(function, args, message):
    with pytest.raises(ValueError, match=message):
        function(*args)


def test_threshold_box_is_the_largest_region_of_the_normalised_map_at_any_scale():
    scoremap = np.zeros((8, 10))
    scoremap[1:3, 1:3] = 5.0   # small, strong
    scoremap[4:8, 4:9] = 3.0   # large, weaker: above τ = 0.5 of the normalised map
    np.testing.assert_allclose(threshold_box(scoremap, 0.5), [4 / 10, 4 / 8, 9 / 10, 8 / 8])
    np.testing.assert_allclose(threshold_box(scoremap * 1e-6 + 2.0, 0.5), [4 / 10, 4 / 8, 9 / 10, 8 / 8])
    np.testing.assert_allclose(threshold_box(scoremap, 0.7), [1 / 10, 1 / 8, 3 / 10, 3 / 8])  # only the strong one
