"""Bounding boxes: IoU, CorLoc, the constant centre-box baseline and the heuristic baseline.

Box convention
--------------
A box is ``(x1, y1, x2, y2)`` in float, normalised to [0, 1] by the image width
(x) and height (y), with ``x1 <= x2`` and ``y1 <= y2``; ``(x1, y1)`` is the
top-left corner. Arrays of boxes have shape ``(N, 4)`` and dtype float64. A
degenerate box (``x1 == x2`` or ``y1 == y2``) has area 0 and IoU 0 with every
box. IoU is scale invariant, so the IoU functions also work on pixel boxes as
long as both arguments use the same units.

Validation (shape, NaN/inf, inverted boxes) happens here, at the edge; callers
that produce boxes by regression must order and clip their coordinates first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

#: σ of the heuristic box is in pixels of an image side this long ("input pixels", the default network's
#: 224² input), whatever the map's size: the filter's σ in map pixels is ``sigma * map side / 224`` per axis,
#: so one value smooths the same share of the image on 224² maps at the network's input and on the
#: workflow's 56² stored maps (a quarter as many map pixels there).
SIGMA_REFERENCE_SIDE = 224
#: The heuristic box's default σ (input pixels), measured in docs/RESULTS.md, Table 3 (56² gestalt-max maps,
#: 34 test photos of raccoons and kangaroos): with the paper's top 20 % (:data:`DEFAULT_FRACTION`) it was the
#: best, 50.9 % Average CorLoc, against 44.9 % at 4 (the old default of ``sensitivity localize``) and 34.4 %
#: at 16. Wider smoothing with the top 30 % scored up to 55.6 % there, on only 34 images.
DEFAULT_SIGMA = 8.0
#: The heuristic box's default share of the smoothed map's pixels kept: the paper's 20 %.
DEFAULT_FRACTION = 0.2


def _check_boxes(boxes: ArrayLike, name: str, ndims: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Return ``boxes`` as float64 of shape (4,) or (N, 4) after validating them."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim not in ndims or arr.shape[-1] != 4:
        shapes = " or ".join({1: "(4,)", 2: "(N, 4)"}[d] for d in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    flat = arr.reshape(-1, 4)
    inverted = np.flatnonzero((flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1]))
    if inverted.size:
        i = inverted[0]
        raise ValueError(
            f"{name} has an inverted box (need x1 <= x2 and y1 <= y2) at index {i}: {flat[i].tolist()}"
        )
    return arr


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of validated boxes, broadcasting over the leading axes; 0 where the union is 0."""
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0.0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0.0, None)
    inter = iw * ih
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def iou(a: ArrayLike, b: ArrayLike) -> np.ndarray | float:
    """Element-wise intersection over union.

    ``a`` and ``b`` have the same shape, (N, 4) or (4,). Returns float64 of shape
    (N,), or a float for single boxes. Boxes with zero union give 0.
    """
    a_arr, b_arr = _check_boxes(a, "a"), _check_boxes(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    out = _iou(a_arr, b_arr)
    return float(out) if a_arr.ndim == 1 else out


def iou_matrix(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (K, 4); float64 of shape (N, K)."""
    a_arr = _check_boxes(a, "a", ndims=(2,))
    b_arr = _check_boxes(b, "b", ndims=(2,))
    return _iou(a_arr[:, None, :], b_arr[None, :, :])


def correct_localizations(
    pred: ArrayLike, gt_boxes: Sequence[ArrayLike], threshold: float = 0.5
) -> np.ndarray:
    """PASCAL criterion per image: IoU of ``pred[i]`` with any box of ``gt_boxes[i]`` > threshold.

    ``pred`` is (N, 4); ``gt_boxes`` has length N, item i of shape (k_i, 4) with
    k_i >= 1 (a single (4,) box is also accepted). Returns bool of shape (N,).
    """
    pred_arr = _check_boxes(pred, "pred", ndims=(2,))
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if len(gt_boxes) != len(pred_arr):
        raise ValueError(
            f"pred has {len(pred_arr)} boxes but gt_boxes has {len(gt_boxes)} entries; need one per image"
        )
    correct = np.empty(len(pred_arr), dtype=bool)
    for i, (p, g) in enumerate(zip(pred_arr, gt_boxes)):
        if np.size(g) == 0:
            raise ValueError(f"gt_boxes[{i}] is empty: every image needs at least one ground-truth box")
        correct[i] = np.any(_iou(p, _check_boxes(g, f"gt_boxes[{i}]")) > threshold)
    return correct


def corloc(pred: ArrayLike, gt_boxes: Sequence[ArrayLike], threshold: float = 0.5) -> float:
    """CorLoc: fraction of images whose predicted box is correct (see :func:`correct_localizations`)."""
    correct = correct_localizations(pred, gt_boxes, threshold)
    if correct.size == 0:
        raise ValueError("CorLoc of zero images is undefined")
    return float(correct.mean())


def corloc_per_class(correct: ArrayLike, classes: ArrayLike) -> pd.DataFrame:
    """CorLoc per class from per-image correctness.

    ``correct`` is bool of shape (N,), ``classes`` the N class names. Returns a
    DataFrame with columns ``class``, ``n_images``, ``corloc``, sorted by class.
    """
    correct_arr, classes_arr = np.asarray(correct), np.asarray(classes)
    if correct_arr.dtype != bool or correct_arr.ndim != 1:
        raise ValueError(
            f"correct must be a 1-D bool array, got dtype {correct_arr.dtype} shape {correct_arr.shape}"
        )
    if classes_arr.shape != correct_arr.shape:
        raise ValueError(
            f"classes must have the same shape as correct, got {classes_arr.shape} and {correct_arr.shape}"
        )
    if correct_arr.size == 0:
        raise ValueError("CorLoc of zero images is undefined")
    frame = pd.DataFrame({"class": classes_arr.astype(str), "correct": correct_arr})
    return (
        frame.groupby("class", sort=True)["correct"]
        .agg(n_images="size", corloc="mean")
        .reset_index()
    )


def average_corloc(df: pd.DataFrame) -> float:
    """Unweighted mean of the ``corloc`` column over classes (the paper's "Average CorLoc")."""
    if "corloc" not in df.columns or len(df) == 0:
        raise ValueError("df must be a non-empty table with a 'corloc' column (see corloc_per_class)")
    return float(df["corloc"].mean())


class CentreBoxBaseline(BaseEstimator):
    """Predicts the same box for every image: mean training width and height, centred at (0.5, 0.5).

    ``X`` is ignored apart from its length. After ``fit``, ``box_`` holds the box (4,).
    """

    def fit(self, X: ArrayLike, y: ArrayLike) -> CentreBoxBaseline:
        """Fit on training boxes ``y`` of shape (N, 4), N >= 1 and ``len(X) == N``."""
        boxes = _check_boxes(y, "y", ndims=(2,))
        if len(X) != len(boxes):
            raise ValueError(f"X has {len(X)} samples but y has {len(boxes)} boxes")
        if len(boxes) == 0:
            raise ValueError("cannot fit CentreBoxBaseline on zero boxes")
        half_w = (boxes[:, 2] - boxes[:, 0]).mean() / 2
        half_h = (boxes[:, 3] - boxes[:, 1]).mean() / 2
        self.box_ = np.array([0.5 - half_w, 0.5 - half_h, 0.5 + half_w, 0.5 + half_h])
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Return ``box_`` repeated ``len(X)`` times, shape (len(X), 4)."""
        check_is_fitted(self)
        return np.tile(self.box_, (len(X), 1))

    def score(self, X: ArrayLike, y: ArrayLike) -> float:
        """CorLoc of the predictions against ``y`` (N, 4), one ground-truth box per image."""
        return corloc(self.predict(X), list(_check_boxes(y, "y", ndims=(2,))))


def heuristic_box(sensitivity_map: ArrayLike, sigma: float = DEFAULT_SIGMA,
                  fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """Heuristic baseline: bounding box of the top ``fraction`` of the smoothed map's pixels.

    The (H, W) map is smoothed with a Gaussian of standard deviation ``sigma``
    input pixels (:data:`SIGMA_REFERENCE_SIDE`): ``sigma * H / 224`` map pixels
    along y, ``sigma * W / 224`` along x (0: no smoothing). The
    ``ceil(fraction * H * W)`` largest pixels are kept (ties go to the earlier
    pixel in row-major order) and their bounding box is returned using pixel
    edges (column j spans [j/W, (j+1)/W]), float64 (4,).
    """
    m = np.asarray(sensitivity_map, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"sensitivity_map must be a non-empty 2-D (H, W) array, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("sensitivity_map contains NaN or infinite values")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if sigma > 0:
        m = gaussian_filter(m, [sigma * side / SIGMA_REFERENCE_SIDE for side in m.shape])
    height, width = m.shape
    # The small tolerance keeps e.g. 0.07 * 100 = 7.000000000000001 from rounding up to 8.
    k = max(1, math.ceil(fraction * m.size - 1e-9))
    top = np.argsort(-m, axis=None, kind="stable")[:k]
    rows, cols = np.unravel_index(top, m.shape)
    return np.array(
        [cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height]
    )


def heuristic_boxes(maps: ArrayLike, sigma: float = DEFAULT_SIGMA, fraction: float = DEFAULT_FRACTION) -> np.ndarray:
    """:func:`heuristic_box` for each map of ``maps`` (N, H, W); returns float64 (N, 4)."""
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {arr.shape}")
    return np.array([heuristic_box(m, sigma, fraction) for m in arr]).reshape(-1, 4)


def _check_size(width: float, height: float) -> np.ndarray:
    if not (width > 0 and height > 0):
        raise ValueError(f"width and height must be > 0, got {width} and {height}")
    return np.array([width, height, width, height], dtype=np.float64)


def to_pixels(boxes: ArrayLike, width: float, height: float) -> np.ndarray:
    """Normalised boxes (4,) or (N, 4) to float pixel coordinates (x * width, y * height)."""
    return _check_boxes(boxes, "boxes") * _check_size(width, height)


def from_pixels(boxes_px: ArrayLike, width: float, height: float) -> np.ndarray:
    """Pixel boxes (4,) or (N, 4) to normalised coordinates, clipped to [0, 1]."""
    return np.clip(_check_boxes(boxes_px, "boxes_px") / _check_size(width, height), 0.0, 1.0)


def largest_box(boxes: ArrayLike) -> np.ndarray:
    """The box of largest area among ``boxes`` (k, 4), k >= 1 (first on ties); float64 (4,)."""
    arr = _check_boxes(boxes, "boxes", ndims=(2,))
    if len(arr) == 0:
        raise ValueError("largest_box needs at least one box")
    return arr[np.argmax(_area(arr))].copy()
