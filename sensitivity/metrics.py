"""MaxBoxAccV2 (Choe et al., CVPR 2020) and box accuracy of methods that output one box per image.

Follows clovaai/wsolevaluation ``evaluation.py`` (``BoxEvaluator``): each map is min-max normalised
(NaN anywhere or a constant map gives all zeros), quantised as ``uint8(map * 255)``; at each threshold τ
the pixels ``> int(τ * max)`` are kept, OpenCV finds their contours (``RETR_TREE``, so the inner
contours of holes too) and each contour gives the bounding rectangle of its points; with
``multi_contour=False`` (MaxBoxAcc V1) only the contour of largest ``cv2.contourArea`` is kept (the
first on ties). An image is correct at (τ, δ) when the best IoU over τ's boxes and the image's
ground-truth boxes is >= δ/100; MaxBoxAcc(δ) is the best share of correct images over τ and
MaxBoxAccV2 the mean over δ. We return fractions in [0, 1] (the paper reports percent).

OpenCV details that shape the boxes: a hole's contour runs through the foreground pixels around the
hole, so its box is the hole grown by one pixel on each side; ``cv2.contourArea`` is the area of the
polygon through the boundary pixels' centres, so a k x k square counts (k - 1)^2 and a single pixel or
a one-pixel-wide line counts 0 (V1 may prefer a 2 x 2 blob to a long line).

Differences from the reference:

1. Maps are taken at the resolution given (any H x W); the reference first resizes CAMs to 224 x 224.
   Maps are normalised in float64 (the reference uses the map's dtype, e.g. float32, which can
   rarely move a value across a uint8 level).
2. Boxes follow :mod:`sensitivity.boxes` (normalised, pixel edges): the rectangle ``(x, y, w, h)`` gives
   ``[x / W, y / H, (x + w) / W, (y + h) / H]``, exactly the pixels it covers. The reference's box
   ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``, scored with its inclusive (+1 pixel) IoU, is one
   pixel wider and taller than the region (except at the border). We do not copy that off-by-one. An
   inclusive pixel box ``[a, b, c, d]`` is ``[a / W, b / H, (c + 1) / W, (d + 1) / H]`` here, and then
   the reference's +1 IoU equals our IoU.
3. IoUs are compared with ``>= δ/100 - 1e-9``: ties that are exact in the reference's integer
   arithmetic (e.g. 4/8 = 0.5) stay ties when normalised coordinates round.
4. No contour (an all-zero map): one zero-area box at the origin, IoU 0. The reference's box
   ``[0, 0, 0, 0]`` has 1 pixel of area under its +1 convention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from numpy.typing import ArrayLike

from sensitivity.boxes import _check_boxes, iou_matrix

# For boxes on the pixel grid an IoU p/q that is not exactly δ/100 misses it by >= 1/(100 q), about 1e-7
# at 224 x 224, so this tolerance only turns float rounding of exact ties back into ties.
_TIE_TOLERANCE = 1e-9


def _check_thresholds(thresholds: ArrayLike) -> np.ndarray:
    taus = np.asarray(thresholds, dtype=np.float64)
    if taus.ndim != 1 or taus.size == 0:
        raise ValueError(f"thresholds must be a non-empty 1-D array, got shape {taus.shape}")
    outside = taus[~((taus >= 0) & (taus < 1))]
    if outside.size:
        raise ValueError(f"thresholds must lie in [0, 1), got {outside[0]}")
    return taus


def _check_levels(iou_levels: Sequence[float]) -> tuple[int, ...]:
    levels = tuple(iou_levels)
    if not levels or not all(0 < d <= 100 and float(d).is_integer() for d in levels):
        raise ValueError(f"iou_levels must be whole percentages in (0, 100], got {iou_levels!r}")
    return tuple(int(d) for d in levels)


def _check_gt(gt_boxes: Sequence[ArrayLike], n: int) -> list[np.ndarray]:
    if len(gt_boxes) != n:
        raise ValueError(f"gt_boxes has {len(gt_boxes)} entries for {n} images; need one per image")
    checked = [_check_boxes(g, f"gt_boxes[{i}]", ndims=(2,)) for i, g in enumerate(gt_boxes)]
    for i, g in enumerate(checked):
        if len(g) == 0:
            raise ValueError(f"gt_boxes[{i}] is empty: every image needs at least one ground-truth box")
    return checked


def _check_best_iou(best_iou: ArrayLike) -> np.ndarray:
    arr = np.asarray(best_iou, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"best_iou must be a non-empty (N, T) array, got shape {arr.shape}")
    return arr


def normalize_maps(maps: ArrayLike) -> np.ndarray:
    """Min-max normalise each map of ``maps`` (N, H, W) to [0, 1]; float64 (N, H, W).

    As the reference: a map with any NaN, or a constant map, becomes all zeros. Infinite values are
    rejected.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim != 3 or arr.size == 0:
        raise ValueError(f"maps must be a non-empty (N, H, W) array, got shape {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError("maps contain infinite values")
    arr = np.where(np.isnan(arr).any(axis=(1, 2), keepdims=True), 0.0, arr)
    low = arr.min(axis=(1, 2), keepdims=True)
    span = arr.max(axis=(1, 2), keepdims=True) - low
    return np.divide(arr - low, span, out=np.zeros_like(arr), where=span > 0)


def _bounding_boxes(contours: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """``cv2.boundingRect`` of each contour as a normalised box; float64 (len(contours), 4).

    All at once: (x, y) is the minimum of a contour's points and (x + w, y + h) their maximum + 1.
    """
    lengths = np.fromiter(map(len, contours), np.intp, len(contours))
    starts = np.cumsum(lengths) - lengths
    points = np.concatenate(contours)[:, 0, :]
    corners = np.hstack([np.minimum.reduceat(points, starts), np.maximum.reduceat(points, starts) + 1])
    return corners / np.array([width, height, width, height], dtype=np.float64)


def _cut_boxes(
    scoremap: np.ndarray, taus: np.ndarray, multi_contour: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes of a normalised (H, W) map for each distinct cut ``int(τ * max)`` of its uint8 image.

    Returns all boxes (B, 4) float64, the index of each cut's first box (C,) and each threshold's cut
    (T,); thresholds with the same cut share its boxes. Every cut has at least one box.
    """
    image = (scoremap * 255).astype(np.uint8)
    top = int(image.max())
    cuts, inverse = np.unique(np.floor(taus * top).astype(np.int64), return_inverse=True)
    if top == 0:  # an all-zero image has no contour at any threshold
        return np.zeros((1, 4)), np.zeros(1, dtype=np.intp), inverse
    # Each cut is < top, so each mask keeps the top pixels and has a contour. ``image > cut`` is
    # cv2.threshold(image, cut, 255, THRESH_BINARY) for an integer cut.
    contours, counts = [], []
    for mask in (image > cuts[:, None, None]).astype(np.uint8):
        found = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        kept = found if multi_contour else (max(found, key=cv2.contourArea),)
        contours.extend(kept)
        counts.append(len(kept))
    starts = np.cumsum(counts) - counts
    return _bounding_boxes(contours, *image.shape), starts, inverse


def threshold_boxes(
    scoremap: ArrayLike, thresholds: ArrayLike, multi_contour: bool = True
) -> list[np.ndarray]:
    """Boxes of a normalised (H, W) map at each threshold: a list of (k, 4) float64 normalised boxes
    in OpenCV's contour order.

    With no contour (an all-zero map) the threshold's one box is the zero-area box at the origin.
    """
    m = np.asarray(scoremap, dtype=np.float64)
    if m.ndim != 2 or m.size == 0 or not np.all((m >= 0) & (m <= 1)):
        raise ValueError(f"scoremap must be a non-empty (H, W) map with values in [0, 1], shape {m.shape}")
    boxes, starts, inverse = _cut_boxes(m, _check_thresholds(thresholds), multi_contour)
    per_cut = np.split(boxes, starts[1:])
    return [per_cut[c].copy() for c in inverse]


def threshold_box(scoremap: ArrayLike, threshold: float) -> np.ndarray:
    """wsolevaluation's single box of one (H, W) map of any scale: min-max normalise, keep the pixels above
    ``threshold``, the bounding box of the largest contour (V1); float64 (4,) normalised."""
    return threshold_boxes(normalize_maps(np.asarray(scoremap)[None])[0], [threshold], multi_contour=False)[0][0]


def best_ious(
    maps: ArrayLike, gt_boxes: Sequence[ArrayLike], thresholds: ArrayLike, multi_contour: bool = True
) -> np.ndarray:
    """Best IoU per image and threshold over that threshold's boxes and the image's GT boxes.

    ``maps`` (N, H, W) any float, normalised here; ``gt_boxes`` N arrays (k_i, 4), k_i >= 1, normalised.
    Returns float64 (N, T).
    """
    norm = normalize_maps(maps)
    gts = _check_gt(gt_boxes, len(norm))
    taus = _check_thresholds(thresholds)
    out = np.empty((len(norm), len(taus)))
    for i, (scoremap, gt) in enumerate(zip(norm, gts)):
        boxes, starts, inverse = _cut_boxes(scoremap, taus, multi_contour)
        out[i] = np.maximum.reduceat(iou_matrix(boxes, gt).max(axis=1), starts)[inverse]
    return out


def localized(ious: ArrayLike, iou_level: float) -> np.ndarray:
    """Whether each IoU reaches the level δ (percent): IoU >= δ/100, less 1e-9 for ties; bool, shape of ``ious``."""
    return np.asarray(ious, dtype=np.float64) >= _check_levels([iou_level])[0] / 100 - _TIE_TOLERANCE


def box_accuracy_curves(best_iou: ArrayLike, iou_levels: Sequence[float] = (30, 50, 70)) -> np.ndarray:
    """Share of images with best IoU >= δ/100 (less 1e-9), per δ and threshold; float64 (L, T)."""
    arr = _check_best_iou(best_iou)
    return np.stack([localized(arr, level).mean(axis=0) for level in _check_levels(iou_levels)])


def choose_thresholds(
    curves: ArrayLike, thresholds: ArrayLike, iou_levels: Sequence[float] = (30, 50, 70)
) -> dict[int, float]:
    """Best threshold per δ of ``curves`` (L, T) from :func:`box_accuracy_curves` (the first on ties)."""
    arr, taus, levels = np.asarray(curves), _check_thresholds(thresholds), _check_levels(iou_levels)
    if arr.shape != (len(levels), len(taus)):
        raise ValueError(f"curves must have shape (len(iou_levels), len(thresholds)), got {arr.shape}")
    return {d: float(taus[j]) for d, j in zip(levels, arr.argmax(axis=1))}


def accuracy_at(best_iou: ArrayLike, thresholds: ArrayLike, chosen: Mapping[int, float]) -> dict:
    """Box accuracy per δ at the threshold ``chosen[δ]`` (one of ``thresholds``), and its mean.

    ``best_iou`` is (N, T) from :func:`best_ious` with the same ``thresholds``; ``chosen`` may come
    from another split (:func:`choose_thresholds`). Returns ``{"mean": float, "per_iou": {δ: float}}``.
    """
    arr, taus = _check_best_iou(best_iou), _check_thresholds(thresholds)
    if arr.shape[1] != len(taus):
        raise ValueError(f"best_iou has {arr.shape[1]} columns for {len(taus)} thresholds")
    levels = _check_levels(list(chosen))
    columns = []
    for d in levels:
        hits = np.flatnonzero(taus == chosen[d])
        if hits.size == 0:
            raise ValueError(f"chosen threshold {chosen[d]!r} for IoU level {d} is not one of thresholds")
        columns.append(hits[0])
    curves = box_accuracy_curves(arr, levels)
    per_iou = {d: float(curves[k, j]) for k, (d, j) in enumerate(zip(levels, columns))}
    return {"mean": float(np.mean(list(per_iou.values()))), "per_iou": per_iou}


def maxboxacc(
    maps: ArrayLike,
    gt_boxes: Sequence[ArrayLike],
    thresholds: ArrayLike = np.arange(0, 1, 0.01),
    iou_levels: Sequence[float] = (30, 50, 70),
    multi_contour: bool = True,
) -> dict:
    """MaxBoxAccV2 of ``maps`` (N, H, W) against ``gt_boxes`` (N arrays (k_i, 4), normalised).

    Returns ``{"mean": MaxBoxAccV2, "per_iou": {δ: MaxBoxAcc(δ)}, "threshold": {δ: best τ}}``, all
    fractions in [0, 1]; the best τ is the first of ``thresholds`` on ties.
    """
    return maxboxacc_of(best_ious(maps, gt_boxes, thresholds, multi_contour), thresholds, iou_levels)


def maxboxacc_of(best_iou: ArrayLike, thresholds: ArrayLike, iou_levels: Sequence[float] = (30, 50, 70)) -> dict:
    """:func:`maxboxacc` from the best IoUs (N, T) of :func:`best_ious`, τ chosen on these same rows."""
    chosen = choose_thresholds(box_accuracy_curves(best_iou, iou_levels), thresholds, iou_levels)
    return {**accuracy_at(best_iou, thresholds, chosen), "threshold": chosen}


def fixed_box_ious(pred_boxes: ArrayLike, gt_boxes: Sequence[ArrayLike]) -> np.ndarray:
    """Best IoU of ``pred_boxes[i]`` (N, 4) over the GT boxes of image i; float64 (N,)."""
    pred = _check_boxes(pred_boxes, "pred_boxes", ndims=(2,))
    gts = _check_gt(gt_boxes, len(pred))
    return np.array([iou_matrix(p[None], g).max() for p, g in zip(pred, gts)], dtype=np.float64)


def fixed_box_accuracy(
    pred_boxes: ArrayLike, gt_boxes: Sequence[ArrayLike], iou_levels: Sequence[float] = (30, 50, 70)
) -> dict:
    """Box accuracy of one box per image (no threshold): ``{"mean": float, "per_iou": {δ: float}}``."""
    ious = fixed_box_ious(pred_boxes, gt_boxes)
    if ious.size == 0:
        raise ValueError("box accuracy of zero images is undefined")
    accuracy = box_accuracy_curves(ious[:, None], iou_levels)[:, 0]
    per_iou = {d: float(a) for d, a in zip(_check_levels(iou_levels), accuracy)}
    return {"mean": float(accuracy.mean()), "per_iou": per_iou}
