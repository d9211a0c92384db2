"""Tests for sensitivity.figures: PNG size, box placement and colours, no leaked figures."""

from __future__ import annotations

import gc

import matplotlib
import numpy as np
import pytest
from matplotlib._pylab_helpers import Gcf
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from PIL import Image

from sensitivity import figures
from sensitivity.figures import figure_height, plot_example_grid, plot_localization

GREY = 128


def grey_image(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (GREY, GREY, GREY))


def read_png(path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) pixel bounding box of a boolean mask (exclusive end)."""
    rows, cols = np.nonzero(mask)
    assert rows.size, "nothing found"
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def panel_box(px: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel bounding box of the drawn image in one panel: rows and columns that are mostly not white."""
    drawn = (px < 250).any(axis=-1)
    rows, cols = np.nonzero(drawn.mean(axis=1) > 0.5)[0], np.nonzero(drawn.mean(axis=0) > 0.5)[0]
    assert rows.size and cols.size, "no image drawn"
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


def red(px: np.ndarray) -> np.ndarray:
    return (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)


def lime(px: np.ndarray) -> np.ndarray:
    return (px[..., 1] > 200) & (px[..., 0] < 60) & (px[..., 2] < 60)


def live_figures() -> int:
    gc.collect()
    return sum(type(obj) is Figure for obj in gc.get_objects())


@pytest.fixture(autouse=True)
def no_leaked_figures():
    """Neither pyplot-managed figures nor unreachable-but-alive Figure objects stay behind."""
    managed, alive = Gcf.get_num_fig_managers(), live_figures()
    yield
    assert Gcf.get_num_fig_managers() == managed
    assert live_figures() == alive


@pytest.mark.parametrize("size", [(300, 150), (120, 240)])
def test_plot_localization_size_and_boxes(tmp_path, size):
    width, height = size
    pred = np.array([0.1, 0.2, 0.5, 0.9])  # not symmetric: a swapped x/y would show
    path = plot_localization(grey_image(width, height), np.zeros((224, 224)), pred, None, "title",
                             tmp_path / "sub" / "fig.png", panel_width=4.0, dpi=80)
    assert path == tmp_path / "sub" / "fig.png" and path.stat().st_size > 0
    px = read_png(path)
    assert px.shape[:2] == (round(figure_height(width, height, 4.0) * 80), 2 * 4 * 80)
    assert not lime(px).any(), "no ground truth given, yet a green box was drawn"

    left = px[:, : px.shape[1] // 2]
    image_box = panel_box(left)
    box = mask_bbox(red(left))
    shown_w, shown_h = image_box[2] - image_box[0], image_box[3] - image_box[1]
    assert shown_w / shown_h == pytest.approx(width / height, rel=0.05)
    expected = (
        image_box[0] + pred[0] * shown_w, image_box[1] + pred[1] * shown_h,
        image_box[0] + pred[2] * shown_w, image_box[1] + pred[3] * shown_h,
    )
    np.testing.assert_allclose(box, expected, atol=3)
    # (b) shows the map over the image: its panel is not a copy of (a), and has the red box too
    right = px[:, px.shape[1] // 2:]
    assert red(right).any()
    assert not (right == GREY).all(axis=-1).any()


def test_plot_localization_ground_truth_and_map(tmp_path):
    image = grey_image(200, 200)
    hot = np.zeros((50, 50))
    hot[:10, :10] = 1.0  # hot corner at the top left of the map
    path = plot_localization(image, hot, [[0.3, 0.3, 0.7, 0.7]], np.array([[0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]]),
                             "with ground truth", tmp_path / "gt.png", dpi=50)
    px = read_png(path)
    left, right = px[:, : px.shape[1] // 2], px[:, px.shape[1] // 2:]
    assert lime(left).any() and red(left).any()
    # the hot corner is drawn warm (red channel dominant), the cold rest blue
    x1, y1, x2, y2 = panel_box(right)
    assert (x2 - x1) == pytest.approx(y2 - y1, abs=2)
    corner = right[y1 + 3, x1 + 3]
    centre = right[(y1 + y2) // 2, (x1 + x2) // 2 + 5]
    assert corner[0] > corner[2], corner
    assert centre[2] > centre[0], centre


def test_plot_localization_rejects_bad_input(tmp_path):
    image = grey_image(50, 50)
    with pytest.raises(ValueError, match="boxes_pred"):
        plot_localization(image, np.zeros((8, 8)), [0.1, 0.2, 0.3], None, "t", tmp_path / "a.png")
    with pytest.raises(ValueError, match="sensitivity_map"):
        plot_localization(image, np.zeros(8), [0.1, 0.2, 0.3, 0.4], None, "t", tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_plot_example_grid(tmp_path):
    rng = np.random.default_rng(0)
    items = [
        (grey_image(100 + 20 * i, 80), rng.random((16, 16)) if i % 2 else None, [0.2, 0.2, 0.6, 0.7],
         [[0.1, 0.1, 0.5, 0.5]] if i != 3 else None, f"item {i}")
        for i in range(5)
    ]
    path = plot_example_grid(items, tmp_path / "grid.png", columns=3, cell_inches=2.0, dpi=60)
    px = read_png(path)
    assert px.shape[:2] == (2 * 2 * 60, 3 * 2 * 60)
    assert red(px).any() and lime(px).any()
    # one row when there are fewer items than columns
    path = plot_example_grid(items[:2], tmp_path / "row.png", columns=4, cell_inches=2.0, dpi=60)
    assert read_png(path).shape[:2] == (2 * 60, 2 * 2 * 60)


def test_plot_example_grid_title_and_legend(tmp_path, monkeypatch):
    items = [(grey_image(100, 80), None, [0.2, 0.2, 0.6, 0.7], [[0.1, 0.1, 0.5, 0.5]], "item")] * 2
    path = plot_example_grid(items, tmp_path / "grid.png", columns=2, cell_inches=2.0, dpi=60,
                             title="demo: test split", legend=("true box", "learned box"))
    assert read_png(path).shape[:2] == (round((2.0 + figures.HEADER_INCHES) * 60), 2 * 2 * 60)
    drawn = []
    real_save = figures._save
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi: drawn.append(
        (fig._suptitle.get_text(), [(t.get_text(), h.get_edgecolor()) for t, h in
                                    zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)]))
        or real_save(fig, path, dpi))
    plot_example_grid(items, tmp_path / "g.png", columns=2, title="demo: test split", legend=("true", "pred"))
    (title, legend), = drawn
    assert title == "demo: test split"
    assert [(text, to_hex(colour)) for text, colour in legend] == [("true", to_hex(figures.TRUE_COLOUR)),
                                                                    ("pred", to_hex(figures.PRED_COLOUR))]


def test_plot_example_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_example_grid([], tmp_path / "g.png")
    with pytest.raises(ValueError, match="columns"):
        plot_example_grid([(grey_image(10, 10), None, [0, 0, 1, 1], None, "x")], tmp_path / "g.png", columns=0)
    with pytest.raises(ValueError, match="items\\[0\\]"):
        plot_example_grid([(grey_image(10, 10), None, [0, 0, 1, 1])], tmp_path / "g.png")


def test_backend_untouched():
    """Building figures must not switch pyplot's backend (users may have an interactive one)."""
    backend = matplotlib.get_backend()
    import sensitivity.figures  # noqa: F401

    assert matplotlib.get_backend() == backend
