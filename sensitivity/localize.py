"""Localize the main object of image files: sensitivity map → box, with the predicted class.

This is the library behind ``sensitivity localize``. Images are read with :func:`read_image` (upright
RGB, EXIF orientation applied) and prepared with the model's ``squash`` preprocessing, so the map covers
the whole image and a box in map coordinates is a box in normalised image coordinates. Boxes come from
a fitted :class:`~sensitivity.regress.BoxRegressor` when one is given, otherwise from the heuristic
baseline :func:`~sensitivity.boxes.heuristic_box`.

Unreadable images never stop a run: each is reported as a :class:`Failure` (path and reason) and the
other images are still processed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from sensitivity.boxes import heuristic_box, to_pixels
from sensitivity.images import ImageReadError, image_size, read_image
from sensitivity.map_methods import compute_maps, method_settings
from sensitivity.maps import AGGREGATES, TARGETS, Aggregate, Sensitivity, Target, pool_maps, resize_attention
from sensitivity.models import LoadedModel
from sensitivity.regress import BoxRegressor

#: Default Gaussian smoothing of the heuristic box, in map pixels. Maps are at the network's input
#: resolution (224×224 for the default model), where 4 pixels ≈ 1.8 % of the side: enough to merge the
#: speckle of a raw gradient map into blobs without blurring the object's extent away.
DEFAULT_SIGMA = 4.0
#: Default share of the (smoothed) map's pixels kept by the heuristic box.
DEFAULT_FRACTION = 0.2

Method = Literal["regression", "heuristic"]

#: File name endings (case-insensitive) taken as images when a folder is expanded.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def expand_image_paths(
    paths: Iterable[str | PathLike[str]], recursive: bool = False
) -> tuple[list[str], list[str]]:
    """Replace each folder in ``paths`` by the image files in it; files are kept as given.

    A folder gives its files ending in one of :data:`IMAGE_SUFFIXES` (any case), sorted by path, without
    hidden ones (names starting with "."); ``recursive`` adds those of its sub-folders (hidden folders
    left out). Paths that are neither folders nor existing files are kept, so that reading them reports
    them. Returns ``(image paths, folders that held no image)``.
    """
    out: list[str] = []
    empty: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            out.append(str(raw))
            continue
        candidates = path.rglob("*") if recursive else path.iterdir()
        found = sorted(
            p for p in candidates
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        out += [str(p) for p in found]
        if not found:
            empty.append(str(raw))
    return out, empty


@dataclass
class Localization:
    """The result for one image.

    ``width``/``height`` are the original image size as displayed (after EXIF rotation);
    ``box_normalised`` is (x1, y1, x2, y2) in [0, 1] and ``box_pixels`` the same box in pixels of that
    original size (float64). ``score`` is the softmax probability of ``class_index``. ``method`` says
    which box predictor produced the box. ``map`` is the (H, W) float32 sensitivity map at the network's
    input resolution. ``image`` is the decoded RGB image (possibly decoded at reduced size for large
    JPEGs, same aspect ratio), kept only when asked for (``keep_images=True``).
    """

    path: str
    width: int
    height: int
    class_index: int
    class_name: str
    score: float
    box_normalised: np.ndarray
    box_pixels: np.ndarray
    method: Method
    map: np.ndarray = field(repr=False)
    image: Image.Image | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Failure:
    """An image that could not be localized: its path and the reason (without the path)."""

    path: str
    message: str


def _class_name(model: LoadedModel, index: int) -> str:
    categories = model.categories
    return categories[index] if categories is not None and 0 <= index < len(categories) else str(index)


def _check_options(target: str, aggregate: str, sigma: float, fraction: float, batch_size: int) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def check_regressor(regressor: BoxRegressor, model: LoadedModel) -> None:
    """Raise ValueError unless ``model``'s maps can be pooled to the maps ``regressor`` was fitted on.

    The workflow fits on stored maps (e.g. 56x56 from 224x224), pooled in whole blocks as here.
    """
    size = model.preprocessing.size
    shape = getattr(regressor, "map_shape_", None)
    if shape is not None and (shape[0] != shape[1] or size % shape[0]):
        raise ValueError(
            f"the regressor was fitted on {shape[0]}x{shape[1]} maps, which {model.name}'s {size}x{size} maps "
            "cannot be pooled to"
        )


def regression_boxes(model: LoadedModel, inputs: torch.Tensor, target: Target, aggregate: Aggregate,
                     regressor: BoxRegressor, amp_dtype: torch.dtype | None = None, method: str = "gradient",
                     settings: dict | None = None) -> tuple[Sensitivity, np.ndarray]:
    """The maps of ``method`` (the paper's gradient map: one forward and one backward pass), then
    ``regressor``'s boxes (N, 4), with the maps and logits.

    The regressor gets what the workflow fitted it on: the map pooled to its map size, stacked with the
    resized Grad-CAM map when it was fitted on (map, attention) stacks.
    """
    with_attention = regressor.n_channels_ > 1
    result = compute_maps(model, inputs, method, settings, target, aggregate, amp_dtype=amp_dtype,
                          with_attention=with_attention)
    size = regressor.map_shape_[0] if regressor.map_shape_ else result.maps.shape[-1]
    features = pool_maps(result.maps.detach(), size)
    if with_attention:  # as extraction stores them: pooled map, then the resized attention map
        features = torch.stack([features, resize_attention(result.attention, size)], dim=1)
    return result, np.asarray(regressor.predict(features.float().cpu().numpy()), dtype=np.float64)


def _localize_batch(
    batch: list[tuple[str, Image.Image, tuple[int, int]]],
    model: LoadedModel,
    transform,
    target: Target,
    aggregate: Aggregate,
    regressor: BoxRegressor | None,
    sigma: float,
    fraction: float,
    device: torch.device,
    keep_images: bool,
    map_method: str,
    settings: dict,
) -> list[Localization]:
    inputs = torch.stack([transform(image) for _, image, _ in batch]).to(device)
    if regressor is not None:
        result, boxes = regression_boxes(model, inputs, target, aggregate, regressor, method=map_method,
                                         settings=settings)
        method: Method = "regression"
    else:
        result = compute_maps(model, inputs, map_method, settings, target, aggregate)
        method = "heuristic"
    maps = result.maps.detach().float().cpu().numpy()
    if regressor is None:
        boxes = np.stack([heuristic_box(m, sigma=sigma, fraction=fraction) for m in maps])
    probabilities = torch.softmax(result.logits, dim=1)
    scores, classes = probabilities.max(dim=1)
    out = []
    for (path, image, (width, height)), m, box, index, score in zip(
        batch, maps, boxes, classes.tolist(), scores.tolist()
    ):
        out.append(
            Localization(
                path=path,
                width=width,
                height=height,
                class_index=int(index),
                class_name=_class_name(model, int(index)),
                score=float(score),
                box_normalised=box,
                box_pixels=to_pixels(box, width, height),
                method=method,
                map=m.astype(np.float32, copy=False),
                image=image if keep_images else None,
            )
        )
    return out


def iter_localize(
    paths: Iterable[str | PathLike[str]],
    model: LoadedModel,
    target: Target = "class",
    aggregate: Aggregate = "mean",
    regressor: BoxRegressor | None = None,
    sigma: float = DEFAULT_SIGMA,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    keep_images: bool = False,
    method: str = "gradient",
    settings: dict | None = None,
) -> Iterator[Localization | Failure]:
    """Yield one :class:`Localization` or :class:`Failure` per path, in input order, batch by batch.

    Only one batch of images is held in memory at a time. See :func:`localize_images` for the
    arguments; ``keep_images`` keeps the decoded image in each result (for figures).
    """
    _check_options(target, aggregate, sigma, fraction, batch_size)
    settings = method_settings(method, settings)
    if regressor is not None:
        check_regressor(regressor, model)
    device = torch.device(device) if device is not None else model.device
    transform = model.preprocessing.transform("squash")
    max_side = model.preprocessing.size * 2
    pending: list[Failure | tuple[str, Image.Image, tuple[int, int]]] = []

    def flush() -> Iterator[Localization | Failure]:
        batch = [item for item in pending if not isinstance(item, Failure)]
        done = iter(
            _localize_batch(batch, model, transform, target, aggregate, regressor, sigma, fraction, device,
                            keep_images, method, settings)
            if batch else []
        )
        for item in pending:
            yield item if isinstance(item, Failure) else next(done)
        pending.clear()

    n_images = 0
    for raw in paths:
        path = str(raw)
        try:
            image = read_image(path, max_side=max_side)
            size = image_size(path)  # the full size: large JPEGs are decoded at reduced size
        except ImageReadError as error:
            pending.append(Failure(path, error.reason))
            continue
        pending.append((path, image, size))
        n_images += 1
        if n_images == batch_size:
            yield from flush()
            n_images = 0
    yield from flush()


def localize_images(
    paths: Iterable[str | PathLike[str]],
    model: LoadedModel,
    target: Target = "class",
    aggregate: Aggregate = "mean",
    regressor: BoxRegressor | None = None,
    sigma: float = DEFAULT_SIGMA,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    keep_images: bool = False,
    method: str = "gradient",
    settings: dict | None = None,
) -> tuple[list[Localization], list[tuple[str, str]]]:
    """Localize the main object in each image file.

    Parameters
    ----------
    paths : image files (JPEG, PNG, anything PIL reads).
    model : a network from :func:`~sensitivity.models.load_model`, already on ``device``.
    target : "class" (map of the predicted class's logit) or "gestalt" (map of the Gestalt Total; the
        predicted class then costs one extra forward pass of the network, without gradients).
    aggregate : "max" or "mean" of |gradient| over colour channels.
    regressor : a fitted :class:`BoxRegressor` (maps of the model's input size); None uses the
        heuristic box.
    sigma, fraction : heuristic box settings: Gaussian smoothing in map pixels (at the network's input
        resolution, 224 for the default model) and the share of top pixels kept.
    batch_size : images per forward/backward pass.
    device : where the inputs go; defaults to the model's device.
    keep_images : keep each decoded image in ``Localization.image``.
    method, settings : the map method (:mod:`sensitivity.map_methods`; default the paper's gradient map)
        and its settings; a regressor must have been fitted on maps of the same method.

    Returns
    -------
    (localizations, failures) : one :class:`Localization` per readable image, in input order, and
        ``(path, reason)`` for each image that could not be read.
    """
    done: list[Localization] = []
    failed: list[tuple[str, str]] = []
    for item in iter_localize(paths, model, target, aggregate, regressor, sigma, fraction, batch_size,
                              device, keep_images, method, settings):
        if isinstance(item, Failure):
            failed.append((item.path, item.message))
        else:
            done.append(item)
    return done, failed


__all__ = [
    "DEFAULT_FRACTION",
    "DEFAULT_SIGMA",
    "Failure",
    "IMAGE_SUFFIXES",
    "Localization",
    "check_regressor",
    "expand_image_paths",
    "iter_localize",
    "localize_images",
    "regression_boxes",
]
