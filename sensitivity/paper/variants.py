"""Composable map → box estimators (scikit-learn style) and the list of variants the study tries.

Every estimator here takes ``X`` = stacked maps of shape (N, V, H, W), the V map variants of
:data:`~sensitivity.paper.bank.MAP_VARIANTS` (or of the ``variants`` parameter) for each image, so that
features from several variants can be combined. A model is an ordinary scikit-learn pipeline::

    make_pipeline(
        FeatureUnion([("maps", MapFeatures("gestalt_max", pool=14, normalize="max")),
                      ("heuristic", HeuristicBoxFeatures("gestalt_max", sigma=8, fraction=0.2))]),
        BoxHead(Ridge(alpha=1.0), target="centre_logsize"),
    )

- feature transformers (stateless): :class:`MapFeatures` (pooled, per-image normalised map of one
  variant, as :func:`sensitivity.regress.map_features`), :class:`HeuristicBoxFeatures` (the heuristic
  box, 4 numbers), :class:`MarginalQuantiles` (where the map's mass along x and along y reaches given
  quantiles); several are combined with scikit-learn's ``FeatureUnion`` (concatenation), see :func:`concat`;
- :class:`BoxHead`: any scikit-learn regressor on the features, predicting boxes in a chosen
  parameterisation (corners, centre/size, centre/log-size) and returning valid corner boxes.

Everything stays "one forward, one backward, one cheap mapping": the features are pooling, sorting
and cumulative sums of the map; the regressors are linear, kernel ridge on ~200 training maps, a small
MLP, or ridge on random Fourier features.

:func:`study_variants` lists the variants tried (each with its own small hyper-parameter grid, chosen
on the validation split).
"""

from __future__ import annotations

import hashlib
import itertools
from contextlib import contextmanager
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter
from sklearn.base import BaseEstimator, RegressorMixin, TransformerMixin, clone
from sklearn.kernel_approximation import RBFSampler
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from sensitivity.boxes import DEFAULT_FRACTION, DEFAULT_SIGMA, heuristic_boxes
from sensitivity.paper.bank import MAP_VARIANTS
from sensitivity.regress import decode_boxes, encode_boxes, map_features
from sensitivity.shape import DEFAULT_QUANTILES, map_moments, marginal_quantiles, max_subarray_box

def _stack(X) -> np.ndarray:
    arr = np.asarray(X)
    if arr.ndim != 4:
        raise ValueError(f"X must be stacked maps (N, V, H, W), got shape {arr.shape}")
    return arr


_CACHE: dict[tuple, dict[bytes, np.ndarray]] = {}
_CACHE_BYTES = [0]
CACHE_LIMIT_BYTES = 1 << 30  # past this, features are computed without being kept


_CACHING = [True]


@contextmanager
def caching(enabled: bool):
    """Turn the feature memo on or off inside a ``with`` block (off when timing a model)."""
    previous = _CACHING[0]
    _CACHING[0] = enabled
    try:
        yield
    finally:
        _CACHING[0] = previous


def clear_cache() -> None:
    """Forget every memoised feature row."""
    _CACHE.clear()
    _CACHE_BYTES[0] = 0


def _cached(transformer: BaseEstimator, maps: np.ndarray, compute) -> np.ndarray:
    """``compute(maps)`` row by row memoised on (transformer parameters, the row's map bytes).

    The study fits many models on subsets (train / val / test of several seeds) of the same maps; each
    feature row is computed once. A row is reused only for a byte-identical map and identical parameters.
    """
    maps = np.ascontiguousarray(maps)
    if not _CACHING[0]:
        return np.asarray(compute(maps), dtype=np.float64)
    key = (type(transformer).__name__, repr(sorted(transformer.get_params().items())), maps.shape[1:], str(maps.dtype))
    rows = _CACHE.setdefault(key, {})
    flat = maps.reshape(len(maps), -1).view(np.uint8)
    digests = [hashlib.blake2b(row, digest_size=16).digest() for row in flat]
    todo = [i for i, d in enumerate(digests) if d not in rows]
    if todo:
        values = np.asarray(compute(maps[todo]), dtype=np.float64)
        if _CACHE_BYTES[0] + values.nbytes > CACHE_LIMIT_BYTES:
            fresh = dict(zip(todo, values))
            return np.stack([fresh[i] if i in fresh else rows[d] for i, d in enumerate(digests)])
        for i, value in zip(todo, values):
            rows[digests[i]] = value
        _CACHE_BYTES[0] += values.nbytes
    if not len(maps):
        return np.asarray(compute(maps), dtype=np.float64)
    return np.stack([rows[d] for d in digests])


class _VariantTransformer(TransformerMixin, BaseEstimator):
    """Base: selects one map variant (by name) of stacked maps; stateless (``fit`` only checks).

    Subclasses implement ``_features(maps)`` on (N, H, W) maps; results are memoised (exact match of
    parameters and map bytes), since the study fits many heads on the same maps.
    """

    variant: str
    variants: Sequence[str]

    def _maps(self, X) -> np.ndarray:
        arr = _stack(X)
        names = tuple(self.variants)
        if self.variant not in names:
            raise ValueError(f"unknown map variant {self.variant!r}; expected one of {names}")
        if arr.shape[1] != len(names):
            raise ValueError(f"X has {arr.shape[1]} map variants, expected {len(names)} ({names})")
        return arr[:, names.index(self.variant)]

    def fit(self, X, y=None):
        maps = self._maps(X)
        self.n_features_in_ = int(np.prod(maps.shape[1:]))
        return self

    def transform(self, X) -> np.ndarray:
        return _cached(self, self._maps(X), self._features)

    def get_feature_names_out(self, input_features=None):
        return np.array([f"{self.variant}_{i}" for i in range(self._n_out())], dtype=object)


class MapFeatures(_VariantTransformer):
    """The ``variant`` maps average-pooled to ``pool``² and normalised per image (see ``map_features``)."""

    def __init__(self, variant: str = "gestalt_max", pool: int = 14, normalize: str = "max",
                 variants: Sequence[str] = MAP_VARIANTS) -> None:
        self.variant = variant
        self.pool = pool
        self.normalize = normalize
        self.variants = variants

    def _features(self, maps: np.ndarray) -> np.ndarray:
        return map_features(maps, self.pool, self.normalize)

    def _n_out(self) -> int:
        return self.pool * self.pool


class HeuristicBoxFeatures(_VariantTransformer):
    """The heuristic box (corners) of the ``variant`` maps: smooth by ``sigma`` (pixels of a 224-pixel image
    side, :func:`~sensitivity.boxes.heuristic_box`), keep the top ``fraction``."""

    def __init__(self, variant: str = "gestalt_max", sigma: float = DEFAULT_SIGMA,
                 fraction: float = DEFAULT_FRACTION, variants: Sequence[str] = MAP_VARIANTS) -> None:
        self.variant = variant
        self.sigma = sigma
        self.fraction = fraction
        self.variants = variants

    def _features(self, maps: np.ndarray) -> np.ndarray:
        return heuristic_boxes(maps, sigma=self.sigma, fraction=self.fraction)

    def _n_out(self) -> int:
        return 4


class MarginalQuantiles(_VariantTransformer):
    """:func:`marginal_quantiles` of the ``variant`` maps: a learned, soft version of the heuristic box."""

    def __init__(self, variant: str = "gestalt_max", quantiles: Sequence[float] = DEFAULT_QUANTILES,
                 sigma: float = 1.0, power: float = 1.0, variants: Sequence[str] = MAP_VARIANTS) -> None:
        self.variant = variant
        self.quantiles = quantiles
        self.sigma = sigma
        self.power = power
        self.variants = variants

    def _features(self, maps: np.ndarray) -> np.ndarray:
        return marginal_quantiles(maps, self.quantiles, self.sigma, self.power)

    def _n_out(self) -> int:
        return 2 * len(self.quantiles)


class MaxSubarrayBoxes(_VariantTransformer):
    """:func:`max_subarray_box` of each ``variant`` map for several thresholds (4 numbers each).

    Maps are smoothed (Gaussian ``sigma``, stored-map pixels) and average-pooled to ``pool``² first.
    """

    def __init__(self, variant: str = "gestalt_max", thresholds: Sequence[float] = (0.8,), sigma: float = 2.0,
                 pool: int = 28, variants: Sequence[str] = MAP_VARIANTS) -> None:
        self.variant = variant
        self.thresholds = thresholds
        self.sigma = sigma
        self.pool = pool
        self.variants = variants

    def _features(self, maps: np.ndarray) -> np.ndarray:
        smooth = np.stack([gaussian_filter(m.astype(np.float64), self.sigma) if self.sigma > 0 else m for m in maps])
        pool = min(self.pool, *maps.shape[1:])
        pooled = map_features(smooth, pool, "none").reshape(len(maps), pool, pool)
        return np.array([np.concatenate([max_subarray_box(m, t) for t in self.thresholds]) for m in pooled])

    def _n_out(self) -> int:
        return 4 * len(self.thresholds)


class MapMoments(_VariantTransformer):
    """:func:`map_moments` of the ``variant`` maps."""

    def __init__(self, variant: str = "gestalt_max", sigma: float = 2.0, powers: Sequence[float] = (1, 2, 4),
                 variants: Sequence[str] = MAP_VARIANTS) -> None:
        self.variant = variant
        self.sigma = sigma
        self.powers = powers
        self.variants = variants

    def _features(self, maps: np.ndarray) -> np.ndarray:
        return map_moments(maps, self.sigma, self.powers)

    def _n_out(self) -> int:
        return 8 * len(self.powers)


def concat(*transformers: TransformerMixin) -> FeatureUnion:
    """A ``FeatureUnion`` (column-wise concatenation, in order) with automatic step names."""
    return FeatureUnion([(f"{type(t).__name__.lower()}_{k}", t) for k, t in enumerate(transformers)])


class BoxHead(RegressorMixin, BaseEstimator):
    """Regress boxes with any scikit-learn ``regressor`` in the ``target`` parameterisation.

    ``fit(X, y)``: features ``X`` (N, M), corner boxes ``y`` (N, 4) in [0, 1]; the regressor is fitted
    on ``encode_boxes(y, target)`` (optionally after standardising the features: ``scale``). ``predict``
    returns corner boxes (N, 4), clipped to [0, 1] and ordered (``decode_boxes``).
    """

    def __init__(self, regressor=None, target: str = "corners", scale: bool = False) -> None:
        self.regressor = regressor
        self.target = target
        self.scale = scale

    def fit(self, X, y) -> BoxHead:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if X.ndim != 2 or y.shape != (len(X), 4):
            raise ValueError(f"BoxHead needs features (N, M) and boxes (N, 4), got {X.shape} and {y.shape}")
        self.scaler_ = StandardScaler().fit(X) if self.scale else None
        base = Ridge(alpha=1.0) if self.regressor is None else self.regressor
        self.regressor_ = clone(base).fit(self._scaled(X), encode_boxes(y, self.target))
        self.n_features_in_ = X.shape[1]
        return self

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return X if self.scaler_ is None else self.scaler_.transform(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "regressor_")
        X = np.asarray(X, dtype=np.float64)
        values = np.asarray(self.regressor_.predict(self._scaled(X)), dtype=np.float64).reshape(len(X), 4)
        return decode_boxes(values, self.target)


def box_model(features: TransformerMixin, regressor=None, target: str = "corners", scale: bool = False) -> Pipeline:
    """``features → BoxHead(regressor)`` as a pipeline with steps named ``features`` and ``head``."""
    return Pipeline([("features", features), ("head", BoxHead(regressor, target=target, scale=scale))])


def mirror_boxes(boxes: np.ndarray) -> np.ndarray:
    """Boxes of the left-right mirrored image."""
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.column_stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]])


class FlipAugmented(RegressorMixin, BaseEstimator):
    """Any map → box model trained on the maps and their left-right mirror images (with mirrored boxes).

    A mirrored photo's map is close to the mirrored map, so mirroring doubles the (small) training set
    for free. With ``average``, a prediction is the mean of the box predicted for the map and the
    un-mirrored box predicted for the mirrored map (still one forward and one backward pass).
    """

    def __init__(self, estimator=None, average: bool = True) -> None:
        self.estimator = estimator
        self.average = average

    def fit(self, X, y) -> FlipAugmented:
        X = _stack(X)
        self.estimator_ = clone(self.estimator).fit(np.concatenate([X, X[..., ::-1]]),
                                                    np.concatenate([y, mirror_boxes(y)]))
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "estimator_")
        X = _stack(X)
        boxes = self.estimator_.predict(X)
        if self.average:
            boxes = (boxes + mirror_boxes(self.estimator_.predict(np.ascontiguousarray(X[..., ::-1])))) / 2
        return boxes


class FeatureBox(RegressorMixin, BaseEstimator):
    """A box-valued transformer (e.g. :class:`MaxSubarrayBoxes` with one threshold) used as the prediction:
    no learning; ``fit`` only checks. Lets the unsupervised boxes run through the same choose-on-val loop."""

    def __init__(self, transformer=None) -> None:
        self.transformer = transformer

    def fit(self, X, y=None) -> FeatureBox:
        self.transformer_ = clone(self.transformer).fit(X)
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self, "transformer_")
        boxes = np.asarray(self.transformer_.transform(X), dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"FeatureBox needs a transformer giving one box (N, 4), got {boxes.shape}")
        return boxes


def random_features_ridge(gamma: float = 0.01, n_components: int = 1000, alpha: float = 1.0,
                          random_state: int = 0) -> Pipeline:
    """Ridge on random Fourier features of the RBF kernel (Rahimi & Recht), a cheap non-linear map."""
    return make_pipeline(RBFSampler(gamma=gamma, n_components=n_components, random_state=random_state),
                         Ridge(alpha=alpha))


def map_variants_used(estimator: BaseEstimator) -> tuple[str, ...]:
    """The map variants an estimator reads (every ``variant`` parameter, nested ones included)."""
    params = estimator.get_params(deep=True)
    return tuple(sorted({v for k, v in params.items() if k == "variant" or k.endswith("__variant")}))


def backward_passes(map_variants: Sequence[str]) -> int:
    """Backward passes per image the maps need: one per distinct target (aggregations share a gradient)."""
    return len({v.split("_")[0] for v in map_variants})


# --- The variants of the study ---------------------------------------------------------------------


def grid(**axes: Sequence) -> list[dict]:
    """All combinations of the axes, the first axis varying slowest (the order candidates are tried)."""
    names = list(axes)
    return [dict(zip(names, values)) for values in itertools.product(*(axes[n] for n in names))]


@dataclass
class Variant:
    """One way of turning maps into boxes: an estimator and the hyper-parameter grid chosen on val."""

    name: str
    family: str
    estimator: BaseEstimator
    grid: list[dict] = field(default_factory=lambda: [{}])
    description: str = ""

    @property
    def map_variants(self) -> tuple[str, ...]:
        return map_variants_used(self.estimator)

    def candidates(self) -> list[tuple[dict, BaseEstimator]]:
        return [(params, clone(self.estimator).set_params(**params)) for params in self.grid]


ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def paper_variant(variant: str, regression_grid: dict, name: str | None = None, family: str = "paper") -> Variant:
    """The paper's linear map on one map variant, with the workflow's grid (pool × normalize × box × alpha)."""
    estimator = box_model(MapFeatures(variant), Ridge())
    points = grid(**{"features__pool": regression_grid["pool"],
                     "features__normalize": regression_grid["normalize"],
                     "head__target": regression_grid["parameterisation"],
                     "head__regressor__alpha": regression_grid["alpha"]})
    return Variant(name or f"linear map, {variant}", family, estimator, points,
                   "ridge on the pooled, normalised map (the workflow's regression grid)")


def study_variants(primary: str, regression_grid: dict,
                   heuristic: tuple[float, float] = (DEFAULT_SIGMA, DEFAULT_FRACTION)) -> list[Variant]:
    """Every variant of the "beat it" study.

    First the paper's linear map on each target × aggregation (§3.6); then one factor at a time around
    the paper's linear map on the ``primary`` map variant (the dataset's own target/aggregation):
    pooling, normalisation, ridge strength, box parameterisation; then other features of the maps of
    one target (both aggregations come from the same gradient, so they cost one backward pass), of both
    targets (two backward passes), unsupervised boxes, and cheap non-linear regressors.
    ``heuristic`` is the (sigma, fraction) of the heuristic box used as an input feature.
    """
    sigma, fraction = heuristic
    target, aggregate = primary.split("_")
    other = {"class": "gestalt", "gestalt": "class"}[target]
    alphas = {"head__regressor__alpha": list(ALPHAS)}
    big_alphas = {"head__regressor__alpha": [1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0]}
    variants = [paper_variant(v, regression_grid, family="map variant (§3.6)") for v in MAP_VARIANTS]

    def add(name, family, estimator, points=None, description=""):
        variants.append(Variant(name, family, estimator, points if points is not None else [{}], description))

    def maps(v, pool=14, normalize="max"):
        return MapFeatures(v, pool, normalize)

    # One factor at a time around the paper's linear map on the primary maps.
    for pool in (4, 7, 14, 28, 56):
        add(f"pool {pool}", "pooling", box_model(maps(primary, pool), Ridge()), grid(**alphas))
    for normalize in ("none", "max", "sum", "rank", "log"):
        add(f"normalize {normalize}", "normalisation", box_model(maps(primary, 14, normalize), Ridge()), grid(**alphas))
    for alpha in (0.001, *ALPHAS, 10000.0):
        add(f"alpha {alpha:g}", "ridge strength", box_model(maps(primary), Ridge(alpha=alpha)))
    for box in ("corners", "centre_size", "centre_logsize"):
        add(f"box {box}", "box parameterisation", box_model(maps(primary), Ridge(), target=box), grid(**alphas))

    # Features of one target's maps (both aggregations: one gradient, one backward pass).
    for t in (target, other):
        both = (f"{t}_max", f"{t}_mean")
        quantiles = concat(*(MarginalQuantiles(v, DEFAULT_QUANTILES, s, pw) for v in both for s, pw in ((0, 1), (2, 2))))
        moments = concat(*(MapMoments(v) for v in both))
        subarray = concat(*(MaxSubarrayBoxes(v, (0.6, 0.7, 0.8, 0.9, 1.0)) for v in both))
        combo = concat(quantiles, moments, subarray)
        family = f"features, {t} maps"
        scaled = "standardised features, ridge"
        add(f"{t}: max + mean pooled maps", family, box_model(concat(*(maps(v) for v in both)), Ridge(), scale=True),
            grid(**big_alphas), scaled)
        add(f"{t}: map + heuristic box", family,
            box_model(concat(maps(f"{t}_{aggregate}"), HeuristicBoxFeatures(f"{t}_{aggregate}", sigma, fraction)),
                      Ridge(), scale=True), grid(**big_alphas), scaled)
        add(f"{t}: heuristic boxes (4 fractions)", family,
            box_model(concat(*(HeuristicBoxFeatures(f"{t}_{aggregate}", sigma, f) for f in (0.1, 0.2, 0.3, 0.5))),
                      Ridge(), scale=True), grid(**big_alphas), scaled)
        add(f"{t}: marginal quantiles", family, box_model(quantiles, Ridge(), scale=True), grid(**big_alphas), scaled)
        add(f"{t}: moments", family, box_model(moments, Ridge(), scale=True), grid(**big_alphas), scaled)
        add(f"{t}: max-subarray boxes", family, box_model(subarray, Ridge(), scale=True), grid(**big_alphas), scaled)
        add(f"{t}: quantiles + moments + max-subarray", family, box_model(combo, Ridge(), scale=True),
            grid(**big_alphas), scaled)
        add(f"{t}: quantiles + moments + max-subarray, mirrored", family,
            FlipAugmented(box_model(combo, Ridge(), scale=True)),
            grid(**{f"estimator__{k}": v for k, v in big_alphas.items()}),
            "trained on the maps and their mirror images, prediction averaged with the mirrored map's")
        add(f"{t}: max-subarray box (no learning)", "unsupervised boxes",
            FeatureBox(MaxSubarrayBoxes(f"{t}_{aggregate}")),
            grid(**{"transformer__thresholds": [(0.6,), (0.7,), (0.8,), (0.9,), (1.0,)],
                    "transformer__sigma": [0.0, 2.0]}),
            "box maximising the map's above-threshold mass (threshold × mean), chosen on val")

    # Both targets (two backward passes): reported, not eligible as the best fast variant.
    add("both targets: pooled maps", "features, both targets (2 backward)",
        box_model(concat(maps(f"{target}_{aggregate}"), maps(f"{other}_{aggregate}")), Ridge(), scale=True),
        grid(**big_alphas))
    add("all four variants: pooled maps", "features, both targets (2 backward)",
        box_model(concat(*(maps(v) for v in MAP_VARIANTS)), Ridge(), scale=True), grid(**big_alphas))
    add("all four variants: marginal quantiles", "features, both targets (2 backward)",
        box_model(concat(*(MarginalQuantiles(v, DEFAULT_QUANTILES, s, pw) for v in MAP_VARIANTS
                           for s, pw in ((0, 1), (2, 2)))), Ridge(), scale=True), grid(**big_alphas))

    # Cheap non-linear regressors on the pooled primary map, box centre / log size.
    for pool in (7, 14):
        add(f"kernel ridge (RBF), pool {pool}", "non-linear",
            box_model(maps(primary, pool), KernelRidge(kernel="rbf"), target="centre_logsize", scale=True),
            grid(**{"head__regressor__gamma": [0.1 / pool**2, 0.3 / pool**2, 1.0 / pool**2],
                    "head__regressor__alpha": [0.01, 0.1, 1.0]}))
    add("random Fourier features + ridge, pool 14", "non-linear",
        box_model(maps(primary, 14), random_features_ridge(), target="centre_logsize", scale=True),
        grid(**{"head__regressor__rbfsampler__gamma": [0.3 / 196, 1.0 / 196],
                "head__regressor__ridge__alpha": [0.1, 1.0, 10.0]}))
    add("MLP (64 hidden), pool 14", "non-linear",
        box_model(maps(primary, 14), MLPRegressor(hidden_layer_sizes=(64,), max_iter=1000, random_state=0),
                  target="centre_logsize", scale=True),
        grid(**{"head__regressor__alpha": [0.1, 1.0, 10.0]}))
    return variants
