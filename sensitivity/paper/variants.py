"""The map → box variants the paper study tries: box models of the workflow's family, each reading some map variants.

A :class:`Variant` is a :class:`~sensitivity.regress.BoxRegressor` grid (its settings but ``alpha``, and the
alphas, fitted along one ridge path per setting) and the map variants it reads, as channels, from the
:class:`~sensitivity.paper.bank.MapBank`'s four (target, aggregate) maps. So whatever the study chooses (a
variant, or the average box of the best few as a :class:`~sensitivity.box_model.BoxEnsemble`) is a box model
that ``fit`` could write, ``save`` writes and ``sensitivity localize --regressor`` applies.

:func:`study_variants` lists the variants: the paper's linear map on every map variant (§3.6), one factor at a
time around it (pooling, normalisation, ridge strength, box parameterisation), the workflow's shape descriptors
(least squares and Huber loss) on each target's maps, and, reported but not eligible as the best one-backward
variant, shape descriptors of both targets' maps (two backward passes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sensitivity.paper.bank import MAP_VARIANTS, MapBank

#: Ridge penalties of the pooled-map variants (the workflow's range) and of the standardised shape descriptors.
ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
SHAPE_ALPHAS = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


@dataclass(frozen=True)
class Variant:
    """One way of turning maps into boxes: box models of ``settings`` × ``alphas`` reading the ``reads`` maps.

    ``settings`` are :class:`~sensitivity.regress.BoxRegressor` parameters but ``alpha`` (the grid, tried in
    order, each along its ridge path of ``alphas``); ``reads`` the map variants (``<target>_<aggregate>``) the
    models take as channels, in order: one map, or a (C, H, W) stack of several.
    """

    name: str
    family: str
    reads: tuple[str, ...]
    settings: tuple[dict, ...]
    alphas: tuple[float, ...]
    description: str = ""

    @property
    def n_candidates(self) -> int:
        return len(self.settings) * len(self.alphas)

    @property
    def backward_passes(self) -> int:
        return backward_passes(self.reads)

    def candidates(self) -> list[dict]:
        """Every candidate's parameters, in the order the study tries them (setting, then alpha)."""
        return [setting | {"alpha": alpha} for setting in self.settings for alpha in self.alphas]

    def maps(self, bank: MapBank) -> np.ndarray:
        """The maps the variant reads, (N, H, W) for one map variant, (N, C, H, W) for several."""
        index = [bank.index(v) for v in self.reads]
        return bank.maps[:, index[0]] if len(index) == 1 else bank.maps[:, index]


def backward_passes(map_variants: Sequence[str]) -> int:
    """Backward passes per image the maps need: one per distinct target (aggregations share a gradient)."""
    return len({v.split("_")[0] for v in map_variants})


def pooled(pool: int = 14, normalize: str = "max", box: str = "corners") -> dict:
    """Settings of the paper's linear map on the pooled, normalised map."""
    return {"features": "pooled", "pool": pool, "normalize": normalize, "target": box}


def shape(loss: str = "squared", box: str = "corners") -> dict:
    """Settings of the workflow's ridge on standardised shape descriptors."""
    return {"features": "shape", "target": box, "loss": loss}


def paper_variant(variant: str, regression_grid: dict, name: str | None = None, family: str = "paper") -> Variant:
    """The paper's linear map on one map variant, with the workflow's grid (pool × normalize × box × alpha)."""
    settings = tuple(pooled(p, n, b) for p, n, b in itertools.product(
        regression_grid["pool"], regression_grid["normalize"], regression_grid["parameterisation"]))
    return Variant(name or f"linear map, {variant}", family, (variant,), settings,
                   tuple(float(a) for a in regression_grid["alpha"]),
                   "ridge on the pooled, normalised map (the workflow's regression grid)")


def study_variants(primary: str, regression_grid: dict) -> list[Variant]:
    """Every variant of the "beat it" study.

    First the paper's linear map on each target × aggregation (§3.6); then one factor at a time around
    the paper's linear map on the ``primary`` map variant (the dataset's own target/aggregation):
    pooling, normalisation, ridge strength, box parameterisation; then the workflow's shape descriptors of
    each target's maps, with the squared and the Huber loss; then shape descriptors of both targets' maps
    (two backward passes: reported, not eligible as the best variant). Every eligible variant reads one map
    variant, so that its box model, and an ensemble of such, can be applied by ``sensitivity localize``.
    """
    target, aggregate = primary.split("_")
    other = {"class": "gestalt", "gestalt": "class"}[target]
    variants = [paper_variant(v, regression_grid, family="map variant (§3.6)") for v in MAP_VARIANTS]

    def add(name: str, family: str, reads: tuple[str, ...], settings: dict, alphas: Sequence[float] = ALPHAS,
            description: str = "") -> None:
        variants.append(Variant(name, family, reads, (settings,), tuple(alphas), description))

    for pool in (4, 7, 14, 28, 56):
        add(f"pool {pool}", "pooling", (primary,), pooled(pool))
    for normalize in ("none", "max", "sum", "rank", "log"):
        add(f"normalize {normalize}", "normalisation", (primary,), pooled(normalize=normalize))
    for alpha in (0.001, *ALPHAS, 10000.0):
        add(f"alpha {alpha:g}", "ridge strength", (primary,), pooled(), (alpha,))
    for box in ("corners", "centre_size", "centre_logsize"):
        add(f"box {box}", "box parameterisation", (primary,), pooled(box=box))
    scaled = "ridge on the standardised shape descriptors of the map (the workflow's `features: shape`)"
    for t in (target, other):
        reads = (f"{t}_{aggregate}",)
        add(f"{t}: shape descriptors", f"features, {t} maps", reads, shape(), SHAPE_ALPHAS, scaled)
        add(f"{t}: shape descriptors, Huber loss", f"features, {t} maps", reads, shape("huber"), SHAPE_ALPHAS,
            scaled + ", Huber loss")
    both = "features, both targets (2 backward)"
    add("both targets: shape descriptors", both, (f"{target}_{aggregate}", f"{other}_{aggregate}"), shape("huber"),
        SHAPE_ALPHAS, "the maps of both targets as two channels, Huber loss")
    add("all four variants: shape descriptors", both, MAP_VARIANTS, shape("huber"), SHAPE_ALPHAS,
        "the four maps as four channels, Huber loss")
    return variants
