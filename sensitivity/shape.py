"""Shape descriptors of a map: where its mass lies, as a handful of numbers per map.

They feed the ``features="shape"`` box regression (:class:`sensitivity.regress.BoxRegressor`) and the
paper study's variants. Every descriptor is computed per map (so it streams) and is invariant to the
map's scale (so maps need no normalisation):

- :func:`marginal_quantiles`: where the cumulative mass along x, then y, reaches given quantiles;
- :func:`map_moments`: mean, spread and mean ± 2 std of the mass along x and y, for several powers;
- :func:`threshold_box`: the box of the largest connected region above a fraction of the maximum
  (the box that class-activation-map papers draw).

:func:`shape_descriptors` stacks the first three for a batch of maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.ndimage import gaussian_filter

DEFAULT_QUANTILES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
DEFAULT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
DEFAULT_POWERS = (1, 2, 4)


def marginal_quantiles(maps: np.ndarray, quantiles: Sequence[float], sigma: float = 0.0,
                       power: float = 1.0) -> np.ndarray:
    """Positions (in [0, 1]) where the map's cumulative mass along x, then along y, reaches each quantile.

    ``maps`` (N, H, W) are made non-negative, optionally smoothed (Gaussian ``sigma`` in map pixels)
    and raised to ``power`` (> 1 stresses the peaks). Returns (N, 2 * len(quantiles)): x quantiles then
    y quantiles. Positions are interpolated between pixel edges (column j spans [j/W, (j+1)/W]).
    """
    arr = np.abs(np.asarray(maps, dtype=np.float64))
    if arr.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {arr.shape}")
    q = np.asarray(quantiles, dtype=np.float64)
    if q.ndim != 1 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"quantiles must be numbers in [0, 1], got {quantiles}")
    out = np.empty((len(arr), 2 * len(q)))
    for i, m in enumerate(arr):
        if sigma > 0:
            m = gaussian_filter(m, sigma)
        m = m**power
        # A tiny uniform floor keeps the cumulative sums strictly increasing (and an all-zero map centred).
        m = m + 1e-9 * (m.mean() + 1e-30)
        for axis, offset in ((0, 0), (1, len(q))):
            profile = m.sum(axis=axis)
            edges = np.concatenate([[0.0], np.cumsum(profile)]) / profile.sum()
            out[i, offset:offset + len(q)] = np.interp(q, edges, np.linspace(0.0, 1.0, len(edges)))
    return out


def map_moments(maps: np.ndarray, sigma: float = 2.0, powers: Sequence[float] = (1, 2, 4)) -> np.ndarray:
    """Spatial moments of each map's mass: for each power p of the (smoothed) map, the mean and standard
    deviation of x and y and the box mean ± 2 std (8 numbers per power)."""
    arr = np.abs(np.asarray(maps, dtype=np.float64))
    size_y, size_x = arr.shape[1:]
    cx, cy = (np.arange(size_x) + 0.5) / size_x, (np.arange(size_y) + 0.5) / size_y
    out = []
    for m in arr:
        m = gaussian_filter(m, sigma) if sigma > 0 else m
        peak = m.max()
        m = m / peak if peak > 0 else m  # scale-free: gradients can be ~1e-7, far below the 1e-12 floor
        row = []
        for p in powers:
            w = m**p + 1e-12
            w = w / w.sum()
            px, py = w.sum(axis=0), w.sum(axis=1)
            mx, my = px @ cx, py @ cy
            sx, sy = np.sqrt(px @ (cx - mx) ** 2), np.sqrt(py @ (cy - my) ** 2)
            row += [mx, my, sx, sy, mx - 2 * sx, my - 2 * sy, mx + 2 * sx, my + 2 * sy]
        out.append(row)
    return np.array(out)


def threshold_box(sensitivity_map: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """Box of the largest 8-connected region of pixels >= ``threshold`` × the map's maximum.

    Returns (x1, y1, x2, y2) in [0, 1] with pixel edges (column j spans [j/W, (j+1)/W]); a map with
    no positive value gives the whole image.
    """
    m = np.asarray(sensitivity_map, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"sensitivity_map must be a non-empty (H, W) array, got shape {m.shape}")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    peak = m.max()
    if not peak > 0:
        return np.array([0.0, 0.0, 1.0, 1.0])
    labels, count = ndimage.label(m >= threshold * peak, structure=np.ones((3, 3)))
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        labels = labels == 1 + int(np.argmax(sizes))  # ties: the first region in row-major order
    rows, cols = np.nonzero(labels)
    height, width = m.shape
    return np.array([cols.min() / width, rows.min() / height, (cols.max() + 1) / width, (rows.max() + 1) / height])


def threshold_boxes(maps: np.ndarray, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
    """:func:`threshold_box` of each map (N, H, W) for each threshold: (N, 4 * len(thresholds))."""
    arr = np.abs(np.asarray(maps, dtype=np.float64))
    if arr.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {arr.shape}")
    return np.array([np.concatenate([threshold_box(m, t) for t in thresholds]) for m in arr]).reshape(
        len(arr), 4 * len(thresholds))


def shape_descriptors(maps: np.ndarray) -> np.ndarray:
    """Marginal quantiles, moments and threshold boxes of each map (N, H, W): (N, N_DESCRIPTORS) float64."""
    return np.hstack([marginal_quantiles(maps, DEFAULT_QUANTILES), map_moments(maps, 2.0, DEFAULT_POWERS),
                      threshold_boxes(maps, DEFAULT_THRESHOLDS)])


N_DESCRIPTORS = 2 * len(DEFAULT_QUANTILES) + 8 * len(DEFAULT_POWERS) + 4 * len(DEFAULT_THRESHOLDS)
