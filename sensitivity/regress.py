"""Linear regression from sensitivity maps to bounding boxes (paper §2.4).

A box is predicted as ``W s + b`` from a sensitivity map ``s``, after optional
average pooling and per-image normalisation of the map (``features="pooled"``,
the paper's), or from shape descriptors of the map and of any further map
channels, such as the Grad-CAM attention map (``features="shape"``, see
:mod:`sensitivity.shape`; standardised ridge). Two solvers minimise
the paper's least-squares objective (equation 4):

* ``"ridge"``: exact ridge least squares with an unpenalised intercept, from
  normal equations accumulated in float64 over streamed batches (memory
  O(M^2) for M features, independent of the number of images);
* ``"sgd"``: the paper's minibatch SGD schedule, in torch.

As in scikit-learn's ``linear_model/_ridge.py``, the solvers are plain
functions (:func:`ridge_streaming`, :func:`sgd_regression`) and
:class:`BoxRegressor` wraps them. :func:`map_features` is the shared
map-to-feature step.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils import Tags, check_random_state
from sklearn.utils.validation import check_is_fitted

from sensitivity import __version__
from sensitivity.boxes import corloc
from sensitivity.normal_equations import NormalEquations
from sensitivity.robust import SpilledRows, reweighted
from sensitivity.shape import shape_descriptors
from sensitivity.store import ATTENTION_OF, attention_of

SOLVERS = ("ridge", "sgd")
NORMALIZATIONS = ("none", "max", "sum", "rank", "log")
TARGETS = ("corners", "centre_size", "centre_logsize")
FEATURES = ("pooled", "shape")
LOSSES = ("squared", "huber")
# 2 adds n_channels (version 1: one channel, or none for flat features); 3 adds n_embedding, package_version
# and fitted_on. (4 is an ensemble of box models: sensitivity.box_model.)
FORMAT_VERSION = 3
MIN_LOG_SIZE = 1e-4  # widths/heights are floored here before taking logs

_SAVED_KEYS = ("format_version", "params", "coef", "intercept", "map_shape", "n_samples_seen")


@dataclass(frozen=True)
class MapStack:
    """Maps (N, H, W) or map stacks (N, C, H, W) with the classifier's embedding of each image (N, D): the
    spatial mean of its last convolutional block (:attr:`sensitivity.maps.Sensitivity.embedding`)."""

    maps: np.ndarray
    embedding: np.ndarray

    def __post_init__(self) -> None:
        if self.embedding.ndim != 2 or len(self.embedding) != len(self.maps):
            raise ValueError(f"embedding must be ({len(self.maps)}, D), got shape {self.embedding.shape}")

    def __len__(self) -> int:
        return len(self.maps)

    def __getitem__(self, rows) -> MapStack:
        return MapStack(self.maps[rows], self.embedding[rows])

    @property
    def shape(self) -> tuple[int, ...]:
        return self.maps.shape

    @property
    def ndim(self) -> int:
        return self.maps.ndim


def _as_array(X: ArrayLike | torch.Tensor | MapStack) -> np.ndarray | MapStack:
    """A numpy view of an array-like or (any-device) torch tensor; a :class:`MapStack` as it is."""
    if isinstance(X, MapStack):
        return MapStack(np.asarray(X.maps), np.asarray(X.embedding))
    if isinstance(X, torch.Tensor):
        return X.detach().cpu().numpy()
    return np.asarray(X)


def map_features(X: ArrayLike | torch.Tensor, pool: int | None = 28, normalize: str = "none") -> np.ndarray:
    """Turn maps into regression features of shape (N, M), float64.

    ``X`` is (N, H, W) maps, or (N, M) already-flat features that are not pooled
    again (with ``pool`` set, M must be ``pool**2``). Maps are average-pooled to
    ``pool`` x ``pool`` with torch's ``adaptive_avg_pool2d``, which is the exact
    block mean when H and W are multiples of ``pool`` (pooling runs in float64
    for float64 input, float32 otherwise). ``normalize`` then rescales each
    image's features on its own: ``"max"`` divides by the largest ``|value|``,
    ``"sum"`` by the sum of ``|value|``, ``"rank"`` replaces values by their rank
    (ties averaged) divided by M, ``"log"`` is ``log1p(|value| / mean |value|)``.
    An all-zero map is left at zero (``"rank"``: all ranks tie).
    """
    arr = _as_array(X)
    if arr.ndim == 3:
        if pool is not None:
            if not 1 <= pool <= min(arr.shape[1:]):
                raise ValueError(f"pool must be between 1 and min(H, W) = {min(arr.shape[1:])}, got {pool}")
            dtype = np.float64 if arr.dtype == np.float64 else np.float32
            maps = torch.from_numpy(np.ascontiguousarray(arr, dtype=dtype))
            arr = F.adaptive_avg_pool2d(maps[:, None], pool)[:, 0].numpy()
        arr = arr.reshape(len(arr), -1)
    elif arr.ndim == 2:
        if pool is not None and arr.shape[1] != pool * pool:
            raise ValueError(f"flat input has {arr.shape[1]} features but pool={pool} needs {pool * pool}")
    else:
        raise ValueError(f"maps must have shape (N, H, W) or (N, M), got {arr.shape}")
    feats = np.asarray(arr, dtype=np.float64)
    if normalize == "none":
        return feats
    if normalize == "rank":
        return rankdata(feats, axis=1) / feats.shape[1]
    mag = np.abs(feats)
    if normalize == "max":
        scale = mag.max(axis=1, keepdims=True)
    elif normalize == "sum":
        scale = mag.sum(axis=1, keepdims=True)
    elif normalize == "log":
        scale = mag.mean(axis=1, keepdims=True)
        feats = mag
    else:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    feats = feats / np.where(scale > 0, scale, 1.0)
    return np.log1p(feats) if normalize == "log" else feats


def regression_features(X: np.ndarray | MapStack, features: str, pool: int | None, normalize: str,
                        embedding: bool = False) -> np.ndarray:
    """Features (N, M) of maps (N, H, W), map stacks (N, C, H, W) or flat features (N, M).

    ``"pooled"``: :func:`map_features` of the (first channel's) map. ``"shape"``:
    :func:`~sensitivity.shape.shape_descriptors` of every channel, concatenated, then with ``embedding``
    the classifier's embedding of a :class:`MapStack`.
    """
    maps = X.maps if isinstance(X, MapStack) else X
    if embedding and not (features == "shape" and isinstance(X, MapStack)):
        raise ValueError("embedding features need features='shape' and maps given as a MapStack with embeddings")
    if features == "pooled":
        return map_features(maps[:, 0] if maps.ndim == 4 else maps, pool, normalize)
    if features == "shape":
        if maps.ndim not in (3, 4):
            raise ValueError(f"features='shape' needs maps (N, H, W) or (N, C, H, W), got shape {maps.shape}")
        channels = maps[:, None] if maps.ndim == 3 else maps
        parts = [shape_descriptors(channels[:, c]) for c in range(channels.shape[1])]
        return np.hstack(parts + ([np.asarray(X.embedding, dtype=np.float64)] if embedding else []))
    raise ValueError(f"features must be one of {FEATURES}, got {features!r}")


def encode_boxes(boxes: np.ndarray, target: str) -> np.ndarray:
    """Corner boxes (N, 4) to the regressed parameterisation ``target``."""
    if target == "corners":
        return boxes
    x1, y1, x2, y2 = boxes.T
    size = np.stack([x2 - x1, y2 - y1], axis=1)
    if target == "centre_logsize":
        size = np.log(np.maximum(size, MIN_LOG_SIZE))
    return np.column_stack([(x1 + x2) / 2, (y1 + y2) / 2, size])


def decode_boxes(params: np.ndarray, target: str) -> np.ndarray:
    """Regressed values (N, 4) back to valid corner boxes, clipped to [0, 1] and ordered."""
    if target == "corners":
        boxes = params
    else:
        cx, cy, w, h = params.T
        if target == "centre_logsize":
            w, h = np.exp(w), np.exp(h)
        boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    boxes = np.clip(boxes, 0.0, 1.0)
    return np.column_stack(
        [
            np.minimum(boxes[:, 0], boxes[:, 2]),
            np.minimum(boxes[:, 1], boxes[:, 3]),
            np.maximum(boxes[:, 0], boxes[:, 2]),
            np.maximum(boxes[:, 1], boxes[:, 3]),
        ]
    )


def ridge_streaming(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], alpha: float, standardize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ridge regression with unpenalised intercept from streamed float64 batches (X (n_b, M), Y (n_b, K));
    see :meth:`NormalEquations.solve`."""
    equations = NormalEquations()
    for X, Y in batches:
        equations.add(X, Y)
    return equations.solve(alpha, standardize)


def sgd_regression(
    X: np.ndarray,
    Y: np.ndarray,
    *,
    batch_size: int = 2048,
    lr: float = 0.1,
    lr_step: int = 10_000,
    max_iter: int = 30_000,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's minibatch SGD on the mean squared error ``mean((Y - X W - b)**2)``.

    ``X`` (N, M) and ``Y`` (N, K) are float64 in memory. Each step takes
    ``batch_size`` rows drawn uniformly with replacement; the learning rate is
    ``lr`` divided by 10 every ``lr_step`` steps. Internally, features are
    standardised per feature and then divided by the square root of the largest
    eigenvalue of their correlation matrix (found by power iteration), so that
    ``lr = 0.1`` is stable even for strongly correlated map cells; targets are
    centred. Training runs in float32 on ``device``; the scaling is folded back
    into the returned ``coef`` (K, M) and ``intercept`` (K,).
    """
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    mu, sigma = X.mean(axis=0), X.std(axis=0)
    sigma[sigma == 0] = 1.0
    y_mean = Y.mean(axis=0)
    Z = torch.as_tensor((X - mu) / sigma, dtype=torch.float32, device=dev)
    T = torch.as_tensor(Y - y_mean, dtype=torch.float32, device=dev)
    n = len(Z)
    v = torch.randn(Z.shape[1], generator=gen).to(dev)
    for _ in range(50):
        v = Z.T @ (Z @ v) / n
        top = torch.linalg.vector_norm(v)
        v = v / top.clamp_min(1e-12)
    scale = float(top.clamp_min(1.0).sqrt())
    Z /= scale
    W = torch.zeros(Z.shape[1], T.shape[1], device=dev)
    b = torch.zeros(T.shape[1], device=dev)
    for step in range(max_iter):
        idx = torch.randint(n, (batch_size,), generator=gen).to(dev)
        Zb = Z[idx]
        err = Zb @ W + b - T[idx]
        rate = lr * 0.1 ** (step // lr_step) * 2 / err.numel()
        W -= rate * (Zb.T @ err)
        b -= rate * err.sum(dim=0)
    W64, b64 = W.double().cpu().numpy(), b.double().cpu().numpy()
    if not (np.all(np.isfinite(W64)) and np.all(np.isfinite(b64))):
        raise FloatingPointError(f"SGD diverged with lr={lr}; use a smaller lr")
    coef = W64 / (sigma * scale)[:, None]
    return coef.T, y_mean + b64 - mu @ coef


def _check_xy(X: ArrayLike | torch.Tensor | MapStack, y: ArrayLike) -> tuple[np.ndarray | MapStack, np.ndarray]:
    """Validate one batch: maps (N, H, W), map stacks (N, C, H, W) or features (N, M), and boxes (N, 4)
    in [0, 1], ordered."""
    X_arr, y_arr = _as_array(X), np.asarray(y, dtype=np.float64)
    if X_arr.ndim not in (2, 3, 4) or len(X_arr) == 0:
        raise ValueError(f"X must be non-empty maps (N, H, W), map stacks (N, C, H, W) or features (N, M), "
                         f"got shape {X_arr.shape}")
    if y_arr.shape != (len(X_arr), 4):
        raise ValueError(
            f"y must be boxes of shape ({len(X_arr)}, 4) for X of shape {X_arr.shape}, got {y_arr.shape}"
        )
    values = (X_arr.maps, X_arr.embedding) if isinstance(X_arr, MapStack) else (X_arr,)
    if not all(np.all(np.isfinite(v)) for v in values):
        raise ValueError("X contains NaN or infinite values")
    bad = ~np.isfinite(y_arr).all(axis=1) | (y_arr < 0).any(axis=1) | (y_arr > 1).any(axis=1)
    bad |= (y_arr[:, 2] < y_arr[:, 0]) | (y_arr[:, 3] < y_arr[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"y must hold boxes (x1, y1, x2, y2) in [0, 1] with x1 <= x2 and y1 <= y2; "
            f"{int(bad.sum())} rows are not, e.g. row {i}: {y_arr[i].tolist()}"
        )
    return X_arr, y_arr


class _PreparedBatches:
    """Iterates ``(features, encoded boxes)`` from ``(maps, boxes)`` batches, recording shape and count."""

    def __init__(self, batches: Iterable, pool: int | None, normalize: str, target: str, features: str,
                 embedding: bool = False) -> None:
        self.batches, self.pool, self.normalize, self.target = batches, pool, normalize, target
        self.features, self.embedding = features, embedding
        self.shape: tuple[int, ...] = ()
        self.n = 0
        self.n_embedding = 0

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for X_b, y_b in self.batches:
            X_arr, y_arr = _check_xy(X_b, y_b)
            if not self.shape:
                self.shape = X_arr.shape[1:]
            elif X_arr.shape[1:] != self.shape:
                raise ValueError(f"all batches need maps of shape {self.shape}, got {X_arr.shape[1:]}")
            self.n += len(X_arr)
            if self.embedding:
                self.n_embedding = X_arr.embedding.shape[1]
            yield (regression_features(X_arr, self.features, self.pool, self.normalize, self.embedding),
                   encode_boxes(y_arr, self.target))


@dataclass(frozen=True)
class _RidgeFit:
    """One fit of :meth:`BoxRegressor._ridge_fits`: its penalty, ``(coef, intercept)``, batches and rows."""

    alpha: float
    solution: tuple[np.ndarray, np.ndarray]
    prepared: _PreparedBatches
    rows: int


class BoxModelTags:
    """scikit-learn tags shared by box models: map stacks (N, C, H, W) in, four box coordinates out."""

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags


class BoxRegressor(BoxModelTags, RegressorMixin, BaseEstimator):
    """Linear map from (pooled, normalised) sensitivity maps, or from their shape descriptors, to boxes.

    Parameters
    ----------
    solver : "ridge" (exact, streaming normal equations) or "sgd" (the paper's schedule).
    alpha : ridge penalty on the weights (not the intercept); ``solver="ridge"`` only.
    features : "pooled" (the paper's: the pooled, normalised map; of a (N, C, H, W) stack, the first
        channel) or "shape" (:func:`~sensitivity.shape.shape_descriptors` of every channel, e.g. the
        sensitivity map and the attention map; ridge on standardised features; ``pool`` and
        ``normalize`` are then unused).
    pool : maps are average-pooled to ``pool`` x ``pool`` cells (see :func:`map_features`);
        None keeps full resolution.
    normalize : per-image map normalisation after pooling, one of ``NORMALIZATIONS``.
    target : regressed box parameterisation: "corners" (x1, y1, x2, y2; the paper's),
        "centre_size" (cx, cy, w, h) or "centre_logsize" (cx, cy, log w, log h).
    batch_size : rows per chunk in ``fit``/``predict``, and the SGD minibatch size.
    lr, lr_step, max_iter : SGD learning rate, divided by 10 every ``lr_step`` steps, for ``max_iter`` steps.
    device : torch device for SGD ("cpu", "cuda").
    random_state : seed of the SGD minibatch draws.
    embedding_components : with ``features="shape"``, also regress on this many principal components of
        the classifier's embedding of each image (maps given as :class:`MapStack`; 0: none). The network
        knows what the object is, hence its usual size and shape. The fitted map stays linear in the
        descriptors and the whole embedding.
    loss : "squared" (least squares, the paper's) or "huber" (``solver="ridge"`` only): squared below
        ``huber_scale`` times the median residual norm, linear beyond, so that images whose box the maps cannot
        say pull the others less (iteratively reweighted ridge, :mod:`sensitivity.robust`).
    huber_scale : the Huber threshold in median residual norms.

    Attributes
    ----------
    coef_ : (4, M) float64 weights on the features, in the ``target`` parameterisation.
    intercept_ : (4,) float64.
    n_features_in_ : M, the number of regression features (pooled cells or descriptors).
    map_shape_ : (H, W) of the maps seen at fit, or None when fitted on flat features.
    n_channels_ : C, map channels seen at fit (1 for (N, H, W) maps, 0 for flat features).
    n_samples_seen_ : number of training images.
    n_embedding_ : D, the embedding's dimension the model uses (0 without embedding features).
    provenance_ : how the training maps were made (model, weights, target, aggregate, class source, map
        method, map size, preprocessing, ...), when the fit stage set it
        (:func:`sensitivity.store.map_provenance`); saved and loaded with the weights.
    fitted_on_ : what the fit stage fitted it on and how it chose it (dataset, images, selection, score).
    """

    def __init__(
        self,
        solver: str = "ridge",
        alpha: float = 1.0,
        pool: int | None = 28,
        normalize: str = "none",
        target: str = "corners",
        features: str = "pooled",
        batch_size: int = 2048,
        lr: float = 0.1,
        lr_step: int = 10_000,
        max_iter: int = 30_000,
        device: str = "cpu",
        random_state: int | None = 0,
        embedding_components: int = 0,
        loss: str = "squared",
        huber_scale: float = 1.0,
    ) -> None:
        self.solver = solver
        self.alpha = alpha
        self.pool = pool
        self.normalize = normalize
        self.target = target
        self.features = features
        self.batch_size = batch_size
        self.lr = lr
        self.lr_step = lr_step
        self.max_iter = max_iter
        self.device = device
        self.random_state = random_state
        self.embedding_components = embedding_components
        self.loss = loss
        self.huber_scale = huber_scale

    def _validate_params(self) -> None:
        choices = {"solver": SOLVERS, "normalize": NORMALIZATIONS, "target": TARGETS, "features": FEATURES,
                   "loss": LOSSES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive_ints = {"batch_size": self.batch_size, "lr_step": self.lr_step, "max_iter": self.max_iter}
        if self.pool is not None:
            positive_ints["pool"] = self.pool
        for name, value in positive_ints.items():
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not self.huber_scale > 0:
            raise ValueError(f"huber_scale must be > 0, got {self.huber_scale!r}")
        if self.loss != "squared" and self.solver != "ridge":
            raise ValueError(f"loss={self.loss!r} needs solver='ridge'")
        if self.features == "shape" and self.solver != "ridge":
            raise ValueError("features='shape' needs solver='ridge' (standardised ridge)")
        if not isinstance(self.embedding_components, int | np.integer) or self.embedding_components < 0:
            raise ValueError(f"embedding_components must be an integer >= 0, got {self.embedding_components!r}")
        if self.embedding_components and self.features != "shape":
            raise ValueError("embedding_components needs features='shape'")

    def _chunks(
        self, X: np.ndarray, y: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for start in range(0, len(X), self.batch_size):
            stop = start + self.batch_size
            yield X[start:stop], None if y is None else y[start:stop]

    def fit(self, X: ArrayLike | torch.Tensor, y: ArrayLike) -> BoxRegressor:
        """Fit on maps ``X`` (N, H, W), map stacks (N, C, H, W) or features (N, M) and boxes ``y`` (N, 4),
        in ``batch_size`` chunks."""
        X_arr, y_arr = _check_xy(X, y)
        return self.fit_batches(self._chunks(X_arr, y_arr))

    def fit_batches(self, batches: Iterable[tuple[ArrayLike | torch.Tensor, ArrayLike]]) -> BoxRegressor:
        """Fit from an iterable of ``(maps, boxes)`` batches, all with the same map shape.

        With ``solver="ridge"`` the batches are streamed (only the pooled features of
        one batch are in memory; with the Huber loss they are also written to a temporary file, re-read at
        each reweighting step); with ``solver="sgd"`` the pooled features of all
        batches are concatenated in memory first.
        """
        self._validate_params()
        if self.solver == "ridge":
            fit = self._ridge_fits(((X_b, y_b, None) for X_b, y_b in batches), [self.alpha], None)[0][0]
            return self._set_solution(*fit.solution, fit.prepared, fit.rows)
        prepared = self._prepared(batches)
        parts = list(prepared)
        if not parts:
            raise ValueError("no samples to fit: the batches were empty")
        seed = int(check_random_state(self.random_state).randint(2**31))
        coef, intercept = sgd_regression(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            batch_size=self.batch_size,
            lr=self.lr,
            lr_step=self.lr_step,
            max_iter=self.max_iter,
            device=self.device,
            seed=seed,
        )
        return self._set_solution(coef, intercept, prepared, prepared.n)

    def fit_alpha_path(
        self, batches: Iterable[tuple[ArrayLike | torch.Tensor, ArrayLike]], alphas: Iterable[float],
        towards: BoxRegressor | None = None,
    ) -> list[BoxRegressor]:
        """Ridge fits for several ``alphas`` from ONE pass over the batches (shared normal equations).

        Returns one fitted clone of this estimator per alpha (``solver`` must be "ridge"). ``towards``, a
        fitted model with the same features, fine-tunes it instead: the weights are shrunk towards its
        weights, not towards zero (and ``embedding_components`` is not applied: its weights already are).
        With ``loss="huber"``, each alpha's fit is then reweighted (:mod:`sensitivity.robust`).
        """
        self._validate_params()
        if self.solver != "ridge":
            raise ValueError("fit_alpha_path needs solver='ridge'")
        fits = self._ridge_fits(((X_b, y_b, None) for X_b, y_b in batches), list(alphas), None, towards)
        return [self._fitted_clone(fit) for fit in fits[0]]

    def fit_alpha_path_folds(self, batches: Iterable[tuple[ArrayLike | MapStack, ArrayLike, ArrayLike]],
                             alphas: Iterable[float], folds: int,
                             towards: BoxRegressor | None = None) -> list[list[BoxRegressor]]:
        """For cross-validation: for each fold k, :meth:`fit_alpha_path`'s fits on the rows whose fold is not k,
        from ONE pass over ``(maps, boxes, fold)`` batches (fold: an integer in [0, folds) per row)."""
        self._validate_params()
        if self.solver != "ridge":
            raise ValueError("fit_alpha_path_folds needs solver='ridge'")
        fits = self._ridge_fits(batches, list(alphas), folds, towards)
        return [[self._fitted_clone(fit) for fit in group] for group in fits]

    def _fitted_clone(self, fit: _RidgeFit) -> BoxRegressor:
        model = clone(self).set_params(alpha=fit.alpha)
        model._validate_params()
        return model._set_solution(*fit.solution, fit.prepared, fit.rows)

    def _ridge_fits(self, batches: Iterable[tuple], alphas: list[float], folds: int | None,
                    towards: BoxRegressor | None = None) -> list[list[_RidgeFit]]:
        """Ridge fits ``[group][alpha]`` from one pass over ``(maps, boxes, fold or None)`` batches: group k of
        ``folds`` leaves out the rows of fold k; without folds, one group of all rows. With the Huber loss, the
        rows are also spilled to a temporary file and every fit is reweighted (:func:`sensitivity.robust.reweighted`)."""
        current: dict[str, np.ndarray | None] = {}

        def maps_and_boxes() -> Iterator[tuple]:
            for X_b, y_b, fold_b in batches:
                current["fold"] = None if fold_b is None else np.asarray(fold_b)
                yield X_b, y_b

        prepared = self._prepared(maps_and_boxes())
        equations = [NormalEquations() for _ in range(folds or 1)]
        with SpilledRows() if self.loss == "huber" else nullcontext() as spilled:
            for X_b, y_b in prepared:
                fold_b = current["fold"]
                if spilled is not None:
                    spilled.add(X_b, y_b, fold_b)
                if fold_b is None:
                    equations[0].add(X_b, y_b)
                    continue
                for k, group_equations in enumerate(equations):
                    kept = fold_b != k
                    if kept.any():
                        group_equations.add(X_b[kept], y_b[kept])
            solutions = [[self._solve(group_equations, alpha, prepared, towards) for alpha in alphas]
                         for group_equations in equations]
            if spilled is not None:
                solutions = self._huber(solutions, equations, spilled, alphas, prepared, towards)
        return [[_RidgeFit(alpha, solution, prepared, group_equations.rows)
                 for alpha, solution in zip(alphas, group)] for group, group_equations in zip(solutions, equations)]

    def _huber(self, first: list[list[tuple]], equations: list[NormalEquations], spilled: SpilledRows,
               alphas: list[float], prepared: _PreparedBatches, towards: BoxRegressor | None) -> list[list[tuple]]:
        """The squared-loss solutions ``first`` reweighted to the Huber loss, with the same penalty (standardisation
        and principal components of each group's unweighted equations)."""
        components = None if towards is not None else self._components(equations[0], prepared)
        bases = [None if components is None else group.basis(components) for group in equations]
        standardize = self.features == "shape"
        penalties = [group.variances(basis) if standardize else None for group, basis in zip(equations, bases)]
        shift = None if towards is None else towards.coef_

        def solve(weighted: NormalEquations, j: int, penalty: np.ndarray | None) -> tuple:
            return weighted.solve(alphas[j], towards=shift, penalty=penalty)

        return reweighted(first, equations, spilled, bases, penalties, solve, self.huber_scale, self.batch_size)

    def _prepared(self, batches: Iterable) -> _PreparedBatches:
        return _PreparedBatches(batches, self.pool, self.normalize, self.target, self.features,
                                embedding=self.embedding_components > 0)

    def _components(self, equations: NormalEquations, prepared: _PreparedBatches) -> tuple[int, int] | None:
        """The ``components`` of :meth:`NormalEquations.solve`: the embedding's columns (last) reduced to
        ``embedding_components`` principal components, or None."""
        if not self.embedding_components:
            return None
        if self.embedding_components > prepared.n_embedding:
            raise ValueError(f"embedding_components={self.embedding_components} exceeds the embedding's "
                             f"{prepared.n_embedding} dimensions")
        return (len(equations.sx) - prepared.n_embedding, self.embedding_components)

    def _solve(self, equations: NormalEquations, alpha: float, prepared: _PreparedBatches,
               towards: BoxRegressor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ridge solution; the embedding's columns (last) reduced to their principal components, or
        shrunk towards the weights of ``towards``."""
        if towards is not None:
            check_is_fitted(towards)
            same = {key: (getattr(self, key), getattr(towards, key)) for key in ("features", "target")}
            differ = {key: pair for key, pair in same.items() if pair[0] != pair[1]}
            if differ or towards.feature_settings() != self.feature_settings():
                raise ValueError(f"towards: a model of other features or boxes ({differ or towards.feature_settings()})")
            if towards.n_features_in_ != len(equations.sx):
                raise ValueError(f"towards: a model of {towards.n_features_in_} features, these maps give "
                                 f"{len(equations.sx)}")
            return equations.solve(alpha, self.features == "shape", towards=towards.coef_)
        return equations.solve(alpha, self.features == "shape", self._components(equations, prepared))

    def _set_solution(self, coef: np.ndarray, intercept: np.ndarray, prepared: _PreparedBatches,
                      rows: int) -> BoxRegressor:
        self.coef_, self.intercept_ = coef, intercept
        self.n_features_in_ = coef.shape[1]
        self.map_shape_ = tuple(prepared.shape[-2:]) if len(prepared.shape) >= 2 else None
        self.n_channels_ = prepared.shape[0] if len(prepared.shape) == 3 else len(prepared.shape) - 1
        self.n_samples_seen_ = rows
        self.n_embedding_ = prepared.n_embedding
        return self

    def predict(self, X: ArrayLike | torch.Tensor) -> np.ndarray:
        """Boxes (N, 4) as (x1, y1, x2, y2), clipped to [0, 1] with x1 <= x2 and y1 <= y2."""
        check_is_fitted(self)
        X_arr = _as_array(X)
        if X_arr.ndim >= 3 and self.map_shape_ is not None and X_arr.shape[-2:] != tuple(self.map_shape_):
            raise ValueError(f"maps have shape {X_arr.shape[-2:]}, the model was fitted on {self.map_shape_}")
        out = [self.predict_features(self.transform_features(X_b)) for X_b, _ in self._chunks(X_arr)]
        return np.concatenate(out) if out else np.empty((0, 4))

    def feature_settings(self) -> tuple:
        """The settings that decide :meth:`transform_features` (models sharing them share features)."""
        if self.features == "shape":
            return (self.features, self.embedding_components > 0)
        return (self.features, self.pool, self.normalize)

    def transform_features(self, X: ArrayLike | torch.Tensor) -> np.ndarray:
        """The regression features (N, M) of maps, map stacks or flat features."""
        return regression_features(_as_array(X), self.features, self.pool, self.normalize,
                                   self.embedding_components > 0)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) from features made by :meth:`transform_features`."""
        check_is_fitted(self)
        if features.shape[1] != self.n_features_in_:
            raise ValueError(f"X gives {features.shape[1]} features, the model needs {self.n_features_in_}")
        return decode_boxes(features @ self.coef_.T + self.intercept_, self.target)

    def score(self, X: ArrayLike | torch.Tensor, y: ArrayLike, sample_weight: None = None) -> float:
        """CorLoc (IoU > 0.5) of the predicted boxes against one ground-truth box per image."""
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported")
        return corloc(self.predict(X), [row[None] for row in np.asarray(y, dtype=np.float64)])

    def save(self, path: str | PathLike[str]) -> None:
        """Write settings, fitted weights and how the model was made to ``path`` as a portable ``.npz`` (no
        pickle). The same model always gives the same bytes (fixed member dates), so files can be rebuilt
        and compared."""
        write_arrays(path, self.saved_arrays())

    def saved_arrays(self) -> dict[str, Any]:
        """What :meth:`save` writes: one array per name (format :data:`FORMAT_VERSION`)."""
        check_is_fitted(self)
        return {
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "params": json.dumps(self.get_params(), sort_keys=True),
            "coef": self.coef_,
            "intercept": self.intercept_,
            "map_shape": np.asarray(self.map_shape_ or (), dtype=np.int64),
            "n_samples_seen": self.n_samples_seen_,
            "n_channels": self.n_channels_,
            "n_embedding": self.n_embedding_,
            "provenance": json.dumps(getattr(self, "provenance_", None), sort_keys=True),
            "fitted_on": json.dumps(getattr(self, "fitted_on_", None), sort_keys=True),
        }

    @classmethod
    def load(cls, path: str | PathLike[str]) -> BoxRegressor:
        """Restore an estimator written by :meth:`save`; any other file is a ValueError (FileNotFoundError when
        there is none) in one line naming the file and saying what a box model is. An ensemble of box models
        is refused: :func:`sensitivity.box_model.load_box_model` loads either kind."""
        data = read_arrays(path)
        if str(data.get("kind", "")) == "ensemble":
            raise ValueError(f"{path}: an ensemble of box models, not one; load it with "
                             "sensitivity.box_model.load_box_model")
        return cls.from_arrays(data, path)

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], path: str | PathLike[str]) -> BoxRegressor:
        """The estimator of :meth:`saved_arrays`' arrays, read from the file ``path`` (named in errors)."""
        missing = [key for key in _SAVED_KEYS if key not in data]
        if missing:
            raise ValueError(f"{path}: not a box model (an .npz without {', '.join(missing)}); {ABOUT_BOX_MODELS}")
        version = int(data["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version}; this version of sensitivity reads up to "
                             f"{FORMAT_VERSION}")
        if version < FORMAT_VERSION:
            warnings.warn(f"{path}: box model format {version} (this version writes {FORMAT_VERSION}) does not "
                          "record how and on what it was fitted; refit it to check its maps", UserWarning,
                          stacklevel=3)
        params: dict[str, Any] = json.loads(str(data["params"]))
        model = cls(**params)
        model.coef_ = data["coef"]
        model.intercept_ = data["intercept"]
        model.n_features_in_ = model.coef_.shape[1]
        model.map_shape_ = tuple(int(s) for s in data["map_shape"]) or None
        model.n_samples_seen_ = int(data["n_samples_seen"])
        model.n_channels_ = int(data["n_channels"]) if "n_channels" in data else int(model.map_shape_ is not None)
        model.n_embedding_ = int(data["n_embedding"]) if "n_embedding" in data else 0
        for key in ("provenance", "fitted_on"):
            value = json.loads(str(data[key])) if key in data else None
            if value is not None:
                setattr(model, f"{key}_", value)
        return model


#: What a box model file is, in the errors of a file that is not one.
ABOUT_BOX_MODELS = ("a box model is the .npz that the workflow's fit stage writes (results/<dataset>/regressor.npz) "
                    "or BoxRegressor.save / BoxEnsemble.save")


def write_arrays(path: str | PathLike[str], arrays: dict[str, Any]) -> None:
    """Write named arrays as an uncompressed ``.npz`` without pickle; the same arrays always give the same
    bytes (fixed member dates)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)


def read_arrays(path: str | PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of a box model file; a file that is not an ``.npz`` of arrays is a ValueError (none there, a
    FileNotFoundError), in one line naming the file and saying what a box model is."""
    if not Path(path).is_file():
        problem = "is a folder" if Path(path).is_dir() else "no such file"
        raise FileNotFoundError(f"{path}: {problem}; {ABOUT_BOX_MODELS}")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not an .npz archive")
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a box model ({exc}); {ABOUT_BOX_MODELS}") from exc


def check_provenance(regressor: BoxRegressor, made: dict, source: str) -> None:
    """Raise ValueError when ``regressor`` was fitted on maps made otherwise than ``made`` (the keys both
    record, e.g. model, target, aggregate, map method; ``made`` without ``attention_of`` are maps this version
    makes); ``source`` names the regressor file. A regressor without provenance (fitted outside the workflow) is
    not checked."""
    fitted_on = getattr(regressor, "provenance_", None)
    if not fitted_on:
        return
    ignored = ("class_source", "attention")  # true-class training maps serve predicted-class maps too
    if getattr(regressor, "n_channels_", 1) > 1:  # whose Grad-CAM the attention channel is matters
        fitted_on = fitted_on | {"attention_of": attention_of(fitted_on)}
        made = {"attention_of": ATTENTION_OF} | made
    else:
        ignored += ("attention_of",)
    differ = [key for key in fitted_on if key in made and key not in ignored and fitted_on[key] != made[key]]
    if differ:
        details = ", ".join(f"{key}={fitted_on[key]!r} (here {made[key]!r})" for key in differ)
        advice = ("refit it with this version, whose attention maps are the class's Grad-CAM for either target"
                  if "attention_of" in differ else "use maps made the same way")
        raise ValueError(f"{source}: fitted on maps made with {details}; {advice}")
