"""Localize the main object of image files: map → box, with the predicted class.

This is the library behind ``sensitivity localize``. Images are read with :func:`read_image` (upright
RGB, EXIF orientation applied) and prepared with the model's ``squash`` preprocessing, so the map covers
the whole image and a box in map coordinates is a box in normalised image coordinates. :func:`choose_box`
decides how boxes are made, for the library and the command alike: by default the shipped box model
(:data:`DEFAULT_BOX_MODEL`) or a fitted box model given instead (:mod:`sensitivity.box_model`), from the
maps it was fitted on; on request (or when the map options asked for are not the shipped model's) the map
thresholded at τ (:func:`~sensitivity.metrics.threshold_box`, by default on the Grad-CAM map), or the paper's
heuristic box (:func:`~sensitivity.boxes.heuristic_box`).

Unreadable images never stop a run: each is reported as a :class:`Failure` (path and reason) and the
other images are still processed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from sensitivity.box_model import BoxModel, load_box_model
from sensitivity.box_models import SHIPPED_BOX_MODEL
from sensitivity.boxes import DEFAULT_FRACTION, DEFAULT_SIGMA, heuristic_box, to_pixels
from sensitivity.images import MAX_PIXELS, ImageReadError, image_size, read_image
from sensitivity.map_methods import compute_maps, method_settings
from sensitivity.maps import AGGREGATES, TARGETS, Aggregate, Sensitivity, Target, pool_maps, resize_attention
from sensitivity.metrics import threshold_box
from sensitivity.models import LoadedModel
from sensitivity.regress import MapStack, check_provenance

Method = Literal["regression", "threshold", "heuristic"]
#: The boxes without a regressor: the map thresholded at τ (its largest region) or the paper's heuristic box.
BOXES = ("threshold", "heuristic")
#: ``box`` of :func:`choose_box`: a learned box model's box, or one of :data:`BOXES`.
BOX_CHOICES = ("learned", *BOXES)

#: Map options when neither the caller nor a box model's maps say otherwise. Without one: the best map
#: and box without learning that the comparison measured, Grad-CAM of the predicted class thresholded at τ
#: (ImageNet sample, 5 split seeds: GT-known Loc 62.5 ± 2.2 % against 56.1 ± 3.0 % for the paper's gradient
#: map and heuristic box, at 1.0 instead of 2.6 forward passes; docs/RESULTS.md).
MAP_DEFAULTS = {"model": "efficientnet_lite0", "target": "class", "aggregate": "mean", "method": "gradcam"}
#: The maps of a regressor that does not record them (fitted outside the workflow): the paper's.
UNRECORDED_METHOD = "gradient"
#: τ of the threshold box per map method: the best at IoU 0.5 on the 743 train + val images of the ImageNet
#: sample (`python benchmarks/threshold_defaults.py results/imagenet`).
DEFAULT_THRESHOLDS = {"gradient": 0.08, "input_x_gradient": 0.05, "smoothgrad": 0.19, "integrated_gradients": 0.06,
                      "guided_backprop": 0.05, "gradcam": 0.29, "cam": 0.27}

#: The box model ``sensitivity localize`` applies by default: the one shipped with the package.
DEFAULT_BOX_MODEL = SHIPPED_BOX_MODEL


#: The shipped box model's name in errors and notes.
SHIPPED = f"the shipped box model {DEFAULT_BOX_MODEL.name}"


def default_box_model() -> BoxModel:
    """The shipped box model (:data:`DEFAULT_BOX_MODEL`)."""
    return load_box_model(DEFAULT_BOX_MODEL)


#: File name endings (case-insensitive) taken as images when a folder is expanded.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_SEPARATORS = tuple({os.sep, "/"})

#: The reason given for a folder without any image file.
EMPTY_FOLDER = "folder holds no image file"


@dataclass(frozen=True)
class Failure:
    """An input that could not be localized: its path and the reason (without the path)."""

    path: str
    message: str


def expand_image_paths(
    paths: Iterable[str | PathLike[str]], recursive: bool = False
) -> tuple[list[str], list[Failure]]:
    """Replace each folder in ``paths`` by the image files in it; files are kept as given.

    A folder gives its files ending in one of :data:`IMAGE_SUFFIXES` (any case), sorted by path, without
    hidden ones (names starting with "."); ``recursive`` adds those of its sub-folders (hidden folders
    left out). A path that does not exist is kept when it names an image file (reading it reports it), else
    it is a failure: "no such folder" when it ends with a path separator, "no such file or folder" otherwise.
    Returns ``(image paths, failures)``: the failures are the missing paths and the folders without images
    (:data:`EMPTY_FOLDER`).
    """
    out: list[str] = []
    failed: list[Failure] = []
    for raw in paths:
        path, text = Path(raw), str(raw)
        if not path.exists():
            if text.endswith(_SEPARATORS):
                failed.append(Failure(text, "no such folder"))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                out.append(text)  # reading it reports "file not found"
            else:
                failed.append(Failure(text, "no such file or folder"))
            continue
        if not path.is_dir():
            out.append(text)
            continue
        candidates = path.rglob("*") if recursive else path.iterdir()
        found = sorted(
            p for p in candidates
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        out += [str(p) for p in found]
        if not found:
            failed.append(Failure(text, EMPTY_FOLDER))
    return out, failed


def first_readable(paths: Iterable[str], max_pixels: int = MAX_PIXELS) -> tuple[str | None, list[Failure]]:
    """The first of ``paths`` that reads as an image (None when none does) and the failures of the paths
    before it: a cheap check, before a model is loaded, that there is anything to localize."""
    failed = []
    for path in paths:
        try:
            read_image(path, max_side=1, max_pixels=max_pixels)  # max_side: JPEGs decoded at 1/8 size
        except ImageReadError as error:
            failed.append(Failure(path, error.reason))
        else:
            return path, failed
    return None, failed


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


def check_regressor(regressor: BoxModel, model: LoadedModel) -> None:
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


def map_options(regressor: BoxModel | None = None, source: str = "the regressor", **given: str | None) -> dict:
    """``model``, ``target``, ``aggregate`` and map ``method`` as given (None: not given), else as the regressor's
    maps were made, else :data:`MAP_DEFAULTS` (:data:`UNRECORDED_METHOD` for a regressor that does not record
    its maps), with the method's ``settings``. A given value the regressor's maps were not made with is a
    ValueError naming ``source`` and the setting."""
    made = dict(getattr(regressor, "provenance_", None) or {})
    defaults = MAP_DEFAULTS | ({"method": UNRECORDED_METHOD} if regressor is not None and not made else {})
    options = {key: given.get(key) if given.get(key) is not None else made.get(key, default)
               for key, default in defaults.items()}
    if made:
        check_provenance(regressor, options, source)
    recorded = made.get("method_settings") if options["method"] == made.get("method") else None
    return options | {"settings": method_settings(options["method"], recorded)}


@dataclass(frozen=True)
class BoxChoice:
    """How boxes are made: ``box`` "learned" (by ``regressor``), or "threshold" / "heuristic" (``regressor``
    None); ``options`` the map options (see :func:`map_options`); ``note`` why the shipped box model gave way
    to the threshold box ("" when it did not)."""

    box: str
    regressor: BoxModel | None
    options: dict
    note: str = ""


def choose_box(regressor: BoxModel | None = None, box: str | None = None, source: str = "the regressor",
               **given: str | None) -> BoxChoice:
    """The box and the map options for ``regressor``, ``box`` and the ``given`` map options (``model``,
    ``target``, ``aggregate``, ``method``; None: not given).

    ``box`` is one of :data:`BOX_CHOICES` or None: "learned" is ``regressor``'s box, else the shipped box
    model's (:data:`DEFAULT_BOX_MODEL`); "threshold" and "heuristic" take no ``regressor``. None is "learned",
    except that a given option the shipped model's maps were not made with makes it give way to the threshold
    box, with a ``note`` saying why. With ``regressor`` or ``box="learned"`` such an option is a ValueError
    naming both values (and ``source``, the regressor's name, or the shipped model's).
    """
    if box not in (None, *BOX_CHOICES):
        raise ValueError(f"box must be one of {BOX_CHOICES} or None, got {box!r}")
    if box in BOXES:
        if regressor is not None:
            raise ValueError(f"box={box!r}: a regressor gives a learned box; drop one of them")
        return BoxChoice(box, None, map_options(None, **given))
    asked = box == "learned" or regressor is not None
    if regressor is None:
        regressor, source = default_box_model(), SHIPPED
    try:
        return BoxChoice("learned", regressor, map_options(regressor, source, **given))
    except ValueError as error:
        if asked:
            raise
        return BoxChoice("threshold", None, map_options(None, **given), note=str(error))


def regression_boxes(model: LoadedModel, inputs: torch.Tensor, target: Target, aggregate: Aggregate,
                     regressor: BoxModel, amp_dtype: torch.dtype | None = None, method: str = "gradient",
                     settings: dict | None = None) -> tuple[Sensitivity, np.ndarray]:
    """The maps of ``method`` (the paper's gradient map: one forward and one backward pass), then
    ``regressor``'s boxes (N, 4), with the maps and logits.

    The regressor gets what the workflow fitted it on: the map pooled to its map size, stacked with the
    resized Grad-CAM map when it was fitted on (map, attention) stacks, with the classifier's embedding when
    it uses one.
    """
    with_attention = regressor.n_channels_ > 1
    result = compute_maps(model, inputs, method, settings, target, aggregate, amp_dtype=amp_dtype,
                          with_attention=with_attention or regressor.n_embedding_ > 0)
    size = regressor.map_shape_[0] if regressor.map_shape_ else result.maps.shape[-1]
    features = pool_maps(result.maps.detach(), size)
    if with_attention:  # as extraction stores them: pooled map, then the resized attention map
        features = torch.stack([features, resize_attention(result.attention, size)], dim=1)
    maps = features.float().cpu().numpy()
    if regressor.n_embedding_:  # the classifier's embedding from the same forward pass
        maps = MapStack(maps, result.embedding.cpu().numpy())
    return result, np.asarray(regressor.predict(maps), dtype=np.float64)


def _localize_batch(
    batch: list[tuple[str, Image.Image, tuple[int, int]]],
    model: LoadedModel,
    transform,
    options: dict,
    regressor: BoxModel | None,
    box_of,
    box: str,
    device: torch.device,
    keep_images: bool,
) -> list[Localization]:
    inputs = torch.stack([transform(image) for _, image, _ in batch]).to(device)
    target, aggregate, map_method, settings = (options[k] for k in ("target", "aggregate", "method", "settings"))
    if regressor is not None:
        result, boxes = regression_boxes(model, inputs, target, aggregate, regressor, method=map_method,
                                         settings=settings)
        method: Method = "regression"
    else:
        result = compute_maps(model, inputs, map_method, settings, target, aggregate)
        method = box
    maps = result.maps.detach().float().cpu().numpy()
    if regressor is None:
        boxes = np.stack([box_of(m) for m in maps])
    probabilities = torch.softmax(result.logits, dim=1)
    scores, classes = probabilities.max(dim=1)
    out = []
    for (path, image, (width, height)), m, corners, index, score in zip(
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
                box_normalised=corners,
                box_pixels=to_pixels(corners, width, height),
                method=method,
                map=m.astype(np.float32, copy=False),
                image=image if keep_images else None,
            )
        )
    return out


def iter_localize(
    paths: Iterable[str | PathLike[str]],
    model: LoadedModel,
    target: Target | None = None,
    aggregate: Aggregate | None = None,
    regressor: BoxModel | None = None,
    sigma: float = DEFAULT_SIGMA,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    keep_images: bool = False,
    method: str | None = None,
    box: str | None = None,
    threshold: float | None = None,
    max_pixels: int = MAX_PIXELS,
) -> Iterator[Localization | Failure]:
    """Yield one :class:`Localization` or :class:`Failure` per path, in input order, batch by batch.

    Only one batch of images is held in memory at a time. See :func:`localize_images` for the
    arguments; ``keep_images`` keeps the decoded image in each result (for figures).
    """
    choice = choose_box(regressor, box, model=model.name, target=target, aggregate=aggregate, method=method)
    if choice.note:
        warnings.warn(f"{choice.note}; boxes come from the threshold box instead (box='threshold' asks for it)",
                      stacklevel=2)
    options, regressor, box = choice.options, choice.regressor, choice.box
    _check_options(options["target"], options["aggregate"], sigma, fraction, batch_size)
    threshold = DEFAULT_THRESHOLDS[options["method"]] if threshold is None else threshold
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    if box == "threshold":
        box_of = lambda m: threshold_box(m, threshold)
    else:
        box_of = lambda m: heuristic_box(m, sigma=sigma, fraction=fraction)
    if regressor is not None:
        check_regressor(regressor, model)
    device = torch.device(device) if device is not None else model.device
    transform = model.preprocessing.transform("squash")
    max_side = model.preprocessing.size * 2
    pending: list[Failure | tuple[str, Image.Image, tuple[int, int]]] = []

    def flush() -> Iterator[Localization | Failure]:
        batch = [item for item in pending if not isinstance(item, Failure)]
        done = iter(
            _localize_batch(batch, model, transform, options, regressor, box_of, box, device, keep_images)
            if batch else []
        )
        for item in pending:
            yield item if isinstance(item, Failure) else next(done)
        pending.clear()

    n_images = 0
    for raw in paths:
        path = str(raw)
        try:
            image = read_image(path, max_side=max_side, max_pixels=max_pixels)
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
    target: Target | None = None,
    aggregate: Aggregate | None = None,
    regressor: BoxModel | None = None,
    sigma: float = DEFAULT_SIGMA,
    fraction: float = DEFAULT_FRACTION,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    keep_images: bool = False,
    method: str | None = None,
    box: str | None = None,
    threshold: float | None = None,
    max_pixels: int = MAX_PIXELS,
) -> tuple[list[Localization], list[tuple[str, str]]]:
    """Localize the main object in each image file.

    Parameters
    ----------
    paths : image files (JPEG, PNG, anything PIL reads).
    model : a network from :func:`~sensitivity.models.load_model`, already on ``device``.
    target : "class" (map of the predicted class's logit) or "gestalt" (map of the Gestalt Total).
    aggregate : "max" or "mean" of |gradient| over colour channels (gradient-type maps).
    method : the map method (:mod:`sensitivity.map_methods`).
        ``target``, ``aggregate`` and ``method`` default to how the box model's maps were made, else to
        :data:`MAP_DEFAULTS` (see :func:`map_options`).
    regressor : a fitted box model (:mod:`sensitivity.box_model`), whose maps ``model`` must be able to make;
        None: the shipped box model (:data:`DEFAULT_BOX_MODEL`, fitted on efficientnet_lite0's maps) when the box is learned.
    box : "learned" (``regressor``'s box), "threshold" (the map thresholded at ``threshold``, the bounding
        box of its largest region; default τ per method :data:`DEFAULT_THRESHOLDS`) or "heuristic" (the
        paper's). None (the default): "learned", or "threshold" with a warning saying why when ``model`` or
        a given map option is not the shipped model's. A ``model`` or map option that a learned box's maps
        were not made with raises ValueError; see :func:`choose_box`.
    sigma, fraction : heuristic box settings: Gaussian smoothing in pixels of a 224-pixel image side, whatever
        the network's input size (:data:`~sensitivity.boxes.SIGMA_REFERENCE_SIDE`), and the share of top
        pixels kept.
    batch_size : images per forward/backward pass.
    device : where the inputs go; defaults to the model's device.
    keep_images : keep each decoded image in ``Localization.image``.
    max_pixels : images with more pixels are failures (:data:`~sensitivity.images.MAX_PIXELS` by default).

    Returns
    -------
    (localizations, failures) : one :class:`Localization` per readable image, in input order, and
        ``(path, reason)`` for each image that could not be read.
    """
    done: list[Localization] = []
    failed: list[tuple[str, str]] = []
    for item in iter_localize(paths, model, target, aggregate, regressor, sigma, fraction, batch_size,
                              device, keep_images, method, box, threshold, max_pixels):
        if isinstance(item, Failure):
            failed.append((item.path, item.message))
        else:
            done.append(item)
    return done, failed


__all__ = [
    "BOXES",
    "BOX_CHOICES",
    "DEFAULT_BOX_MODEL",
    "DEFAULT_THRESHOLDS",
    "EMPTY_FOLDER",
    "IMAGE_SUFFIXES",
    "MAP_DEFAULTS",
    "BoxChoice",
    "Failure",
    "Localization",
    "check_regressor",
    "choose_box",
    "default_box_model",
    "expand_image_paths",
    "first_readable",
    "iter_localize",
    "localize_images",
    "map_options",
    "regression_boxes",
]
