"""Shape descriptors of maps, against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from sensitivity.shape import N_DESCRIPTORS, shape_descriptors, threshold_box, threshold_boxes


def test_threshold_box_takes_the_largest_region_above_the_threshold() -> None:
    m = np.zeros((10, 20))
    m[1:3, 1:3] = 1.0      # small and brightest
    m[5:9, 10:16] = 0.5    # larger, above 0.3 × max
    np.testing.assert_allclose(threshold_box(m, 0.3), [10 / 20, 5 / 10, 16 / 20, 9 / 10])
    np.testing.assert_allclose(threshold_box(m, 0.6), [1 / 20, 1 / 10, 3 / 20, 3 / 10])  # only the peak is left
    m[4, 9] = 0.5          # touches the large region diagonally: 8-connected, so part of it
    np.testing.assert_allclose(threshold_box(m, 0.3), [9 / 20, 4 / 10, 16 / 20, 9 / 10])


def test_threshold_box_of_an_empty_map_is_the_whole_image() -> None:
    assert threshold_box(np.zeros((4, 4)), 0.2).tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="threshold"):
        threshold_box(np.ones((4, 4)), 1.5)


def test_descriptors_are_scale_invariant_and_sized() -> None:
    rng = np.random.default_rng(0)
    maps = rng.uniform(size=(3, 12, 12))
    d = shape_descriptors(maps)
    assert d.shape == (3, N_DESCRIPTORS) and np.isfinite(d).all()
    np.testing.assert_allclose(shape_descriptors(maps * 1e-6), d, atol=1e-9)
    boxes = threshold_boxes(maps, (0.2, 0.5))
    assert boxes.shape == (3, 8)
    np.testing.assert_array_equal(boxes[:, 4:], [threshold_box(m, 0.5) for m in maps])
