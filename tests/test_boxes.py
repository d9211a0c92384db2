"""Hand-computed checks for sensitivity.boxes."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.ndimage import gaussian_filter
from sklearn.exceptions import NotFittedError

from sensitivity.boxes import (
    DEFAULT_FRACTION,
    DEFAULT_SIGMA,
    SIGMA_REFERENCE_SIDE,
    CentreBoxBaseline,
    average_corloc,
    corloc,
    corloc_per_class,
    correct_localizations,
    from_pixels,
    heuristic_box,
    heuristic_boxes,
    iou,
    iou_matrix,
    largest_box,
    to_pixels,
)

# --- IoU -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        pytest.param((0.1, 0.2, 0.6, 0.9), (0.1, 0.2, 0.6, 0.9), 1.0, id="identical"),
        pytest.param((0.0, 0.0, 0.2, 0.2), (0.5, 0.5, 0.9, 0.9), 0.0, id="disjoint"),
        pytest.param((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0), 0.0, id="touching-side"),
        pytest.param((0.0, 0.0, 0.5, 1.0), (0.25, 0.0, 0.75, 1.0), 1 / 3, id="half-overlap"),
        pytest.param((0.0, 0.0, 1.0, 1.0), (0.25, 0.25, 0.75, 0.75), 0.25, id="contained"),
    ],
)
def test_iou_hand_cases(a, b, expected):
    assert iou(a, b) == pytest.approx(expected, abs=1e-15)
    assert iou(b, a) == pytest.approx(expected, abs=1e-15)


def test_iou_half_overlap_is_exactly_one_third():
    assert iou((0.0, 0.0, 0.5, 1.0), (0.25, 0.0, 0.75, 1.0)) == 1 / 3


def test_iou_single_boxes_give_a_float_and_arrays_give_arrays():
    assert isinstance(iou((0, 0, 1, 1), (0, 0, 1, 1)), float)
    out = iou([[0, 0, 1, 1], [0, 0, 0.5, 1]], [[0, 0, 1, 1], [0.5, 0, 1, 1]])
    assert out.shape == (2,) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 0.0])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param((0.3, 0.3, 0.3, 0.3), (0.3, 0.3, 0.3, 0.3), id="both-points"),
        pytest.param((0.2, 0.1, 0.2, 0.9), (0.2, 0.1, 0.2, 0.9), id="both-zero-width"),
        pytest.param((0.1, 0.5, 0.9, 0.5), (0.0, 0.0, 1.0, 1.0), id="zero-height-in-box"),
    ],
)
def test_iou_degenerate_boxes_are_zero_without_warnings(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert iou(a, b) == 0.0
        np.testing.assert_array_equal(iou_matrix([a], [b]), [[0.0]])


def test_iou_matrix_agrees_with_elementwise_iou():
    rng = np.random.default_rng(0)
    xy = rng.random((5, 2, 2))
    a = np.sort(xy, axis=1).transpose(0, 2, 1).reshape(5, 4)[:, [0, 2, 1, 3]]
    xy = rng.random((3, 2, 2))
    b = np.sort(xy, axis=1).transpose(0, 2, 1).reshape(3, 4)[:, [0, 2, 1, 3]]
    m = iou_matrix(a, b)
    assert m.shape == (5, 3)
    assert np.any(m > 0)
    for i in range(5):
        for j in range(3):
            assert m[i, j] == iou(a[i], b[j])


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        pytest.param((0, 0, 1), (0, 0, 1, 1), r"a must have shape", id="short"),
        pytest.param([[[0, 0, 1, 1]]], [[[0, 0, 1, 1]]], r"a must have shape", id="3-d"),
        pytest.param((0, 0, 1, 1), (0.6, 0, 0.4, 1), r"b has an inverted box.*index 0", id="x-inverted"),
        pytest.param((0, 0.8, 1, 0.2), (0, 0, 1, 1), r"a has an inverted box", id="y-inverted"),
        pytest.param((0, np.nan, 1, 1), (0, 0, 1, 1), r"a contains NaN", id="nan"),
        pytest.param([[0, 0, 1, 1]] * 2, [[0, 0, 1, 1]] * 3, r"same shape", id="length-mismatch"),
    ],
)
def test_iou_rejects_bad_input(a, b, message):
    with pytest.raises(ValueError, match=message):
        iou(a, b)


def test_iou_matrix_requires_2d():
    with pytest.raises(ValueError, match=r"a must have shape \(N, 4\)"):
        iou_matrix((0, 0, 1, 1), [[0, 0, 1, 1]])


# --- CorLoc ----------------------------------------------------------------


def test_iou_of_exactly_half_is_not_correct_but_slightly_above_is():
    pred = [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    gt = [np.array([[0.0, 0.0, 0.5, 1.0]]), np.array([[0.0, 0.0, 0.5 + 1e-9, 1.0]])]
    assert iou(pred[0], gt[0][0]) == 0.5
    np.testing.assert_array_equal(correct_localizations(pred, gt), [False, True])
    assert corloc(pred, gt) == 0.5


def test_any_ground_truth_box_can_match():
    pred = [[0.5, 0.5, 1.0, 1.0]]
    gt = [np.array([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 0.95, 1.0]])]
    assert correct_localizations(pred, gt).tolist() == [True]
    assert correct_localizations(pred, [gt[0][:1]]).tolist() == [False]


def test_threshold_is_used():
    pred = [[0.0, 0.0, 0.5, 1.0]]
    gt = [np.array([[0.25, 0.0, 0.75, 1.0]])]  # IoU 1/3
    assert corloc(pred, gt, threshold=0.3) == 1.0
    assert corloc(pred, gt, threshold=0.5) == 0.0


def test_image_without_ground_truth_is_an_error_naming_it():
    pred = [[0, 0, 1, 1], [0, 0, 1, 1]]
    with pytest.raises(ValueError, match=r"gt_boxes\[1\] is empty"):
        correct_localizations(pred, [np.array([[0, 0, 1, 1]]), np.zeros((0, 4))])


def test_correct_localizations_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match=r"pred has 2 boxes but gt_boxes has 1"):
        correct_localizations([[0, 0, 1, 1]] * 2, [np.array([[0, 0, 1, 1]])])


def test_correct_localizations_names_the_bad_ground_truth():
    with pytest.raises(ValueError, match=r"gt_boxes\[0\] has an inverted box"):
        correct_localizations([[0, 0, 1, 1]], [np.array([[0.9, 0, 0.1, 1]])])


def test_corloc_of_no_images_is_an_error():
    with pytest.raises(ValueError, match="zero images"):
        corloc(np.zeros((0, 4)), [])


def test_corloc_per_class_and_average():
    df = corloc_per_class(np.array([True, False, True]), ["a", "a", "b"])
    assert list(df.columns) == ["class", "n_images", "corloc"]
    assert df["class"].tolist() == ["a", "b"]
    assert df["n_images"].tolist() == [2, 1]
    assert df["corloc"].tolist() == [0.5, 1.0]
    assert average_corloc(df) == 0.75


def test_corloc_per_class_is_sorted_by_class_and_unweighted():
    df = corloc_per_class([True, True, True, False], ["zebra", "cat", "cat", "cat"])
    assert df["class"].tolist() == ["cat", "zebra"]
    assert average_corloc(df) == pytest.approx((2 / 3 + 1.0) / 2)


@pytest.mark.parametrize(
    ("correct", "classes", "message"),
    [
        pytest.param([1, 0], ["a", "b"], "bool", id="not-bool"),
        pytest.param([True, False], ["a"], "same shape", id="length-mismatch"),
        pytest.param(np.array([], dtype=bool), [], "zero images", id="empty"),
    ],
)
def test_corloc_per_class_rejects_bad_input(correct, classes, message):
    with pytest.raises(ValueError, match=message):
        corloc_per_class(correct, classes)


def test_average_corloc_rejects_empty_table():
    with pytest.raises(ValueError, match="corloc"):
        average_corloc(pd.DataFrame({"class": [], "n_images": [], "corloc": []}))


# --- Centre-box baseline ---------------------------------------------------


def test_centre_box_baseline_uses_mean_size_centred():
    y = np.array([[0.0, 0.0, 0.2, 0.4], [0.5, 0.3, 0.9, 0.9]])  # widths 0.2/0.4, heights 0.4/0.6
    model = CentreBoxBaseline().fit(np.zeros((2, 7)), y)
    np.testing.assert_allclose(model.box_, [0.35, 0.25, 0.65, 0.75])
    pred = model.predict(np.zeros((3, 7)))
    assert pred.shape == (3, 4)
    np.testing.assert_array_equal(pred, np.tile(model.box_, (3, 1)))


def test_centre_box_baseline_score_is_corloc():
    y_train = np.array([[0.25, 0.25, 0.75, 0.75]] * 2)
    model = CentreBoxBaseline().fit(np.zeros(2), y_train)
    y_test = np.array([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.1, 0.1], [0.2, 0.2, 0.8, 0.8]])
    assert model.score(np.zeros(3), y_test) == pytest.approx(2 / 3)


def test_centre_box_baseline_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        CentreBoxBaseline().predict(np.zeros((2, 3)))


def test_centre_box_baseline_checks_lengths():
    with pytest.raises(ValueError, match="X has 3 samples but y has 2 boxes"):
        CentreBoxBaseline().fit(np.zeros(3), [[0, 0, 1, 1]] * 2)


# --- Heuristic baseline ----------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def input_sigma(map_sigma: float, side: int) -> float:
    """The ``sigma`` of :func:`heuristic_box` (input pixels) that smooths a map of ``side`` pixels by
    ``map_sigma`` map pixels."""
    return map_sigma * SIGMA_REFERENCE_SIDE / side


def test_heuristic_box_single_pixel_gives_its_edges():
    m = np.zeros((4, 4))
    m[0, 0] = 1.0
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=0.01), [0, 0, 0.25, 0.25])
    m = np.zeros((4, 8))
    m[2, 5] = 1.0
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=1 / 32), [5 / 8, 0.5, 6 / 8, 0.75])


def test_heuristic_box_block_of_exactly_twenty_percent():
    m = np.zeros((10, 10))
    m[2:6, 3:8] = 1.0  # 4 x 5 = 20 pixels
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=0.2), [0.3, 0.2, 0.8, 0.6])


def test_heuristic_box_keeps_ceil_fraction_pixels_with_raster_tie_break():
    m = np.ones((10, 10))
    # 0.07 * 100 = 7.000000000000001 in float: exactly 7 pixels, the first row's first 7.
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=0.07), [0, 0, 0.7, 0.1])
    # ceil(0.15 * 10) = 2 pixels of a 1 x 10 map
    np.testing.assert_array_equal(heuristic_box(np.ones((1, 10)), sigma=0, fraction=0.15), [0, 0, 0.2, 1])
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=1.0), [0, 0, 1, 1])
    # 100 tied pixels on even rows/columns; the first 20 in raster order lie in rows 0 and 2
    grid = np.zeros((20, 20))
    grid[::2, ::2] = 1.0
    np.testing.assert_array_equal(heuristic_box(grid, sigma=0, fraction=0.05), [0, 0, 0.95, 0.15])


def test_heuristic_box_smoothing_keeps_box_centred_on_blob():
    rows, cols = np.mgrid[0:40, 0:40]
    blob = np.exp(-((rows - 12) ** 2 + (cols - 25) ** 2) / (2 * 3.0**2))
    box = heuristic_box(blob, sigma=input_sigma(2.0, 40), fraction=0.05)
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert abs(centre_x - 25.5 / 40) <= 1 / 40
    assert abs(centre_y - 12.5 / 40) <= 1 / 40
    assert 0 < box[2] - box[0] < 0.5


def test_heuristic_box_smoothing_suppresses_isolated_spike():
    m = np.zeros((20, 20))
    m[10:15, 10:15] = 3.0
    m[3, 3] = 10.0
    fraction = 25 / 400
    # without smoothing: the spike plus the first 24 block pixels
    np.testing.assert_array_equal(heuristic_box(m, sigma=0, fraction=fraction), [0.15, 0.15, 0.75, 0.75])
    # smoothing spreads the spike thin, so only the block is kept
    np.testing.assert_array_equal(heuristic_box(m, sigma=input_sigma(2.0, 20), fraction=fraction),
                                  [0.5, 0.5, 0.75, 0.75])


@pytest.mark.parametrize(("shape", "map_sigma"), [((56, 56), 2.0), ((224, 224), 8.0), ((28, 56), (1.0, 2.0))])
def test_heuristic_box_sigma_is_in_pixels_of_a_224_pixel_side(shape, map_sigma):
    """σ = 8 smooths the workflow's 56² maps by 2 map pixels (its σ when σ was in map pixels: the same
    boxes), 224² maps by 8, and other maps per axis; the old value, σ = 2, read in this unit gives other boxes."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    blob = np.exp(-(((cols / shape[1] - 0.6) / 0.12) ** 2 + ((rows / shape[0] - 0.4) / 0.15) ** 2) / 2)
    m = blob + 3 * rng.random(shape) ** 30  # a blob and sparse spikes: the box depends on the smoothing
    expected = heuristic_box(gaussian_filter(m, map_sigma), sigma=0, fraction=0.1)
    np.testing.assert_array_equal(heuristic_box(m, sigma=8, fraction=0.1), expected)
    np.testing.assert_array_equal(heuristic_boxes(m[None], sigma=8, fraction=0.1), expected[None])
    assert not np.array_equal(heuristic_box(m, sigma=2, fraction=0.1), expected)


def test_heuristic_defaults_are_one_sigma_in_one_unit():
    """The library's defaults are the workflow's (config.yaml and its schema), and Table 3's sweep holds them."""
    config = yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text(encoding="utf-8"))["properties"]
    documented = schema["evaluation"]["properties"]["heuristic"]["properties"]
    assert config["evaluation"]["heuristic"] == {"sigma": DEFAULT_SIGMA, "fraction": DEFAULT_FRACTION}
    assert (documented["sigma"]["default"], documented["fraction"]["default"]) == (DEFAULT_SIGMA, DEFAULT_FRACTION)
    assert config["paper"]["sigma"] == schema["paper"]["properties"]["sigma"]["default"] == [0, 4, 8, 16, 32]
    m = np.random.default_rng(3).random((56, 56))
    np.testing.assert_array_equal(heuristic_box(m), heuristic_box(m, sigma=DEFAULT_SIGMA, fraction=DEFAULT_FRACTION))


def test_heuristic_boxes_matches_heuristic_box():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 8, 6))
    out = heuristic_boxes(maps, sigma=1.0, fraction=0.3)
    assert out.shape == (3, 4)
    for box, m in zip(out, maps):
        np.testing.assert_array_equal(box, heuristic_box(m, sigma=1.0, fraction=0.3))
    assert heuristic_boxes(np.zeros((0, 4, 4))).shape == (0, 4)


@pytest.mark.parametrize(
    ("m", "kwargs", "message"),
    [
        pytest.param(np.ones((2, 2)), {"fraction": 0.0}, r"fraction must be in \(0, 1\]", id="fraction-0"),
        pytest.param(np.ones((2, 2)), {"fraction": 1.5}, r"fraction must be in \(0, 1\]", id="fraction-big"),
        pytest.param(np.ones((2, 2)), {"sigma": -1.0}, "sigma must be", id="sigma-negative"),
        pytest.param(np.ones((2, 2)), {"sigma": np.nan}, "sigma must be", id="sigma-nan"),
        pytest.param(np.ones(4), {}, r"2-D \(H, W\)", id="1-d"),
        pytest.param(np.ones((0, 3)), {}, "non-empty", id="empty"),
        pytest.param(np.array([[1.0, np.nan]]), {}, "NaN", id="nan"),
    ],
)
def test_heuristic_box_rejects_bad_input(m, kwargs, message):
    with pytest.raises(ValueError, match=message):
        heuristic_box(m, **kwargs)


def test_heuristic_boxes_requires_3d():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        heuristic_boxes(np.ones((4, 4)))


# --- Pixel conversion and largest box --------------------------------------


def test_pixel_round_trip_and_clipping():
    boxes = np.array([[0.1, 0.2, 0.5, 1.0], [0.0, 0.0, 1.0, 0.5]])
    px = to_pixels(boxes, width=200, height=100)
    np.testing.assert_allclose(px, [[20, 20, 100, 100], [0, 0, 200, 50]])
    np.testing.assert_allclose(from_pixels(px, 200, 100), boxes)
    np.testing.assert_allclose(to_pixels((0.5, 0.5, 1, 1), 10, 20), [5, 10, 10, 20])
    np.testing.assert_array_equal(from_pixels((-5, 10, 250, 120), 200, 100), [0, 0.1, 1, 1])


def test_pixel_conversion_rejects_bad_size():
    with pytest.raises(ValueError, match="width and height must be > 0"):
        to_pixels((0, 0, 1, 1), 0, 10)
    with pytest.raises(ValueError, match="width and height must be > 0"):
        from_pixels((0, 0, 1, 1), 10, -1)


def test_largest_box_picks_largest_area_first_on_ties():
    boxes = np.array([[0, 0, 0.2, 0.2], [0, 0, 0.5, 0.25], [0.5, 0.25, 1.0, 0.5], [0, 0, 0.1, 0.9]])
    # boxes 1 and 2 both have area 0.125 exactly: the first wins
    np.testing.assert_array_equal(largest_box(boxes), [0, 0, 0.5, 0.25])
    np.testing.assert_array_equal(largest_box(boxes[[0, 3]]), [0, 0, 0.1, 0.9])
    with pytest.raises(ValueError, match="at least one box"):
        largest_box(np.zeros((0, 4)))
