"""Stage 4: fit the map → box regression, choosing the box model by cross-validation on train + val (or on val).

The candidates are the grid's settings, the prior box model as it is and fine-tuned, and the average box of the
best few of them (:class:`~sensitivity.box_model.BoxEnsemble`), scored on the same held-out boxes.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.box_model import BoxEnsemble, BoxModel, average_boxes, load_box_model
from sensitivity.box_models import SHIPPED_BOX_MODEL
from sensitivity.boxes import correct_localizations
from sensitivity.evaluation import choose, image_folds, labelled_rows, ranking
from sensitivity.pipeline.rows import RowMaps
from sensitivity.regress import BoxRegressor, check_provenance
from sensitivity.store import map_provenance

log = logging.getLogger(__name__)


#: How the box model is chosen when the config does not say: K-fold cross-validation on train + val.
DEFAULT_SELECTION = {"method": "cv", "folds": 5, "seed": 0}
#: The fitted box model every fit also tries, as it is and fine-tuned, when the config does not say:
#: the one shipped with the package, with these penalties towards its weights (in rows: at 100, the prior
#: weighs as much as 100 images).
DEFAULT_PRIOR = {"model": "shipped", "alpha": [10.0, 100.0, 1000.0, 10000.0]}
#: How many of the best candidates the ensemble candidate averages when the config does not say (0: none).
DEFAULT_ENSEMBLE = 3


@dataclass(frozen=True)
class Prior:
    """A fitted box model the fit starts from: ``model`` (None when it cannot serve these maps), its file's
    name, the penalties of its fine-tuning and, when unused, why."""

    model: BoxRegressor | None
    name: str
    alpha: tuple[float, ...] = ()
    unused: str = ""

    def summary(self) -> dict:
        return {"model": self.name, "used": self.model is not None} | ({"why_not": self.unused} if self.unused else {})


def load_prior(prior: dict | None, provenance: dict, attention: bool, n_embedding: int) -> Prior | None:
    """The prior box model of ``regression.prior`` (``model``: "shipped", a .npz path or None), checked against
    the maps of the stores (their ``provenance``, whether they hold attention maps, their embedding's size)."""
    prior = DEFAULT_PRIOR | (prior or {})
    if prior["model"] is None:
        return None
    path = SHIPPED_BOX_MODEL if prior["model"] == "shipped" else Path(prior["model"])
    model, name = load_box_model(path), path.name
    if isinstance(model, BoxEnsemble):  # fine-tuning shrinks one model's weights
        unused = f"{name}: an ensemble of {len(model.members_)} box models; a prior is one box model"
        log.info("the prior box model is not a candidate: %s", unused)
        return Prior(None, name, unused=unused)
    try:
        check_provenance(model, provenance, name)
        if model.n_channels_ > 1 and not attention:
            raise ValueError(f"{name}: fitted on {model.n_channels_} map channels, the stores hold one")
        if model.n_embedding_ and model.n_embedding_ != n_embedding:
            raise ValueError(f"{name}: uses a {model.n_embedding_}-value embedding, the stores hold {n_embedding}")
    except ValueError as error:
        log.info("the prior box model is not a candidate: %s", error)
        return Prior(None, name, unused=str(error))
    return Prior(model, name, tuple(float(a) for a in prior["alpha"]))


@dataclass(frozen=True)
class Candidate:
    """A box model to try: grid settings (``params``), or the prior as it is or fine-tuned (``start``)."""

    params: dict
    start: str | None = None  # None, "as is" or "fine-tuned"

    def refit(self, maps: RowMaps, prior: Prior | None) -> BoxRegressor:
        """This candidate fitted on ``maps`` (the prior itself when taken as it is)."""
        if self.start == "as is":
            return copy.deepcopy(prior.model)
        towards = prior.model if self.start == "fine-tuned" else None
        return BoxRegressor(**self.params).fit_alpha_path(maps.boxes(), [self.params["alpha"]], towards=towards)[0]

    def settings(self) -> dict:
        return settings_of(self.params) | {"start": self.start}


@dataclass(frozen=True)
class Ensemble:
    """The average box of other candidates: ``members``, the fit's candidates number ``indices``."""

    members: tuple[Candidate, ...]
    indices: tuple[int, ...]

    def refit(self, maps: RowMaps, prior: Prior | None) -> BoxEnsemble:
        """Every member refitted on ``maps`` (:meth:`Candidate.refit`), averaged."""
        return BoxEnsemble.from_fitted([member.refit(maps, prior) for member in self.members])

    def of(self, models: list[BoxRegressor]) -> BoxEnsemble:
        """The ensemble of the members' fitted ``models`` (one per candidate, in candidate order)."""
        return BoxEnsemble.from_fitted([models[i] for i in self.indices])

    def settings(self) -> dict:
        return {"ensemble": list(self.indices), "members": [member.settings() for member in self.members]}


def candidate_settings(grid: dict, embedding: bool = False) -> list[dict]:
    """BoxRegressor settings of every grid point but alpha, in grid order. ``pool`` and ``normalize`` only
    apply to ``features: pooled``; ``shape`` features get one setting per box parameterisation, per number of
    principal components of the classifier's embedding where the stores hold it (``embedding``) and per ``loss``
    (squared or Huber; the pooled map's hundreds of features keep the squared loss: its reweighted fits would
    cost features² per row, step, fold and alpha)."""
    settings = []
    components = [k for k in grid.get("embedding_components", [0]) if embedding or k == 0] or [0]
    losses = grid.get("loss", ["squared"])
    for features in grid.get("features", ["pooled"]):
        if features == "pooled":
            settings += [{"features": features, "pool": pool, "normalize": normalize, "target": parameterisation}
                         for pool, normalize, parameterisation in itertools.product(
                             grid["pool"], grid["normalize"], grid["parameterisation"])]
        else:
            settings += [{"features": features, "target": parameterisation, "embedding_components": k, "loss": loss}
                         for parameterisation, k, loss in itertools.product(grid["parameterisation"], components,
                                                                            losses)]
    return settings


def candidate_models(grid: dict, solver: str, sgd: dict, train: RowMaps, embedding: bool = False) -> list[BoxRegressor]:
    """Fit every grid point; ridge alphas share one pass over the train maps per setting."""
    if solver != "ridge" and "shape" in grid.get("features", []):
        raise ValueError("regression.grid.features 'shape' needs regression.solver 'ridge'")
    fitted = []
    for setting in candidate_settings(grid, embedding):
        base = BoxRegressor(solver=solver, **setting, **sgd)
        if solver == "ridge":
            fitted.extend(base.fit_alpha_path(train.boxes(), grid["alpha"]))
        else:
            fitted.append(base.fit_batches(train.boxes()))
    return fitted


def prior_candidates(prior: Prior | None, fit_path) -> tuple[list[Candidate], list[list[BoxRegressor]]]:
    """The prior as it is and fine-tuned with each of its penalties: the candidates and their models per fold,
    ``fit_path(base, alphas, towards)`` fitting the fine-tuned ones (one list per fold)."""
    if prior is None or prior.model is None:
        return [], []
    log.info("the prior box model %s as it is and fine-tuned (alpha %s)", prior.name, list(prior.alpha))
    # fine-tuning keeps the squared loss: its fits are on all features (no principal components to reweight in)
    tuned = fit_path(BoxRegressor(**prior.model.get_params() | {"loss": "squared"}), prior.alpha, prior.model)
    candidates = [Candidate(prior.model.get_params(), "as is")]
    candidates += [Candidate(model.get_params(), "fine-tuned") for model in tuned[0]]
    return candidates, [[prior.model, *models] for models in tuned]


def cross_validated_corloc(grid: dict, stores: list[str], rows: pd.DataFrame, attention: bool, embedding: bool,
                           folds: int, seed: int, batch_size: int, prior: Prior | None = None
                           ) -> tuple[list[Candidate], list[list[BoxRegressor]], HeldOut]:
    """Every (ridge) candidate fitted on all folds but one, and its boxes on that one: the candidates, their models
    per fold (``[fold][candidate]``) and their held-out boxes. Two passes over the maps per feature setting,
    whatever the number of folds: one accumulates each fold's normal equations, one predicts."""
    fold = pd.Series(image_folds(rows, folds, seed), index=rows.index)
    maps = RowMaps(stores, rows, batch_size, attention, embedding)

    def with_folds() -> Iterator[tuple]:
        for block, block_maps in maps:
            yield block_maps, np.stack(block["target_box"].to_numpy()), fold.loc[block.index].to_numpy()

    candidates: list[Candidate] = []
    per_fold: list[list[BoxRegressor]] = [[] for _ in range(folds)]
    for k_setting, setting in enumerate(candidate_settings(grid, embedding)):
        log.info("cross-validation, candidate setting %d: %s", k_setting + 1, setting)
        for k, models in enumerate(BoxRegressor(**setting).fit_alpha_path_folds(with_folds(), grid["alpha"], folds)):
            per_fold[k] += models
        candidates += [Candidate(model.get_params()) for model in models]
    more, more_per_fold = prior_candidates(
        prior, lambda base, alphas, towards: base.fit_alpha_path_folds(with_folds(), alphas, folds, towards=towards))
    for k, models in enumerate(more_per_fold):
        per_fold[k] += models
    return candidates + more, per_fold, held_out(per_fold, maps, fold)


@dataclass(frozen=True)
class HeldOut:
    """Each candidate's boxes on held-out rows, ``boxes`` (candidates, rows, 4): a row's by the candidate's model of
    the row's ``fold`` (rows,); with the rows' ground-truth boxes ``gt``."""

    boxes: np.ndarray
    gt: list[np.ndarray]
    fold: np.ndarray
    n_folds: int

    def corloc(self, boxes: np.ndarray, threshold: float) -> np.ndarray:
        """CorLoc (folds,) of ``boxes`` (rows, 4) on each fold's rows."""
        correct = correct_localizations(boxes, self.gt, threshold)
        return (np.bincount(self.fold, weights=correct, minlength=self.n_folds)
                / np.bincount(self.fold, minlength=self.n_folds))

    def fold_corloc(self, threshold: float) -> np.ndarray:
        """CorLoc (candidates, folds) of every candidate."""
        return np.stack([self.corloc(boxes, threshold) for boxes in self.boxes])


def held_out(per_fold: list[list[BoxRegressor]], maps: RowMaps, fold: pd.Series) -> HeldOut:
    """The boxes of each fold's candidates (``per_fold[fold][candidate]``) on the rows of that fold (``fold``, by
    row label), from one pass over the maps (features computed once per feature setting). The boxes (32 bytes per
    candidate and row) are in an anonymous temporary file, mapped, not in memory. Choosing on val is one fold."""
    n_folds = len(per_fold)
    gt, folds = [], []
    with tempfile.TemporaryFile() as spill:  # the mapping keeps its own handle: the file lives as long as it
        for block, block_maps in maps:
            block_fold = fold.loc[block.index].to_numpy()
            block_boxes = np.empty((len(block), len(per_fold[0]), 4))  # row-major, as on disk
            features: dict[tuple, np.ndarray] = {}
            for c, model in enumerate(per_fold[0]):
                key = model.feature_settings()
                if key not in features:
                    features[key] = model.transform_features(block_maps)
                for k in np.unique(block_fold):
                    rows = np.flatnonzero(block_fold == k)
                    block_boxes[rows, c] = per_fold[k][c].predict_features(features[key][rows])
            spill.write(block_boxes.tobytes())
            gt += list(block["gt"])
            folds.append(block_fold)
        fold_of_row = np.concatenate(folds) if folds else np.empty(0, dtype=np.int64)
        count = np.bincount(fold_of_row, minlength=n_folds)
        if not count.all():
            raise ValueError(f"fold {int(np.argmin(count))} has no image with a map; cannot choose the box model")
        spill.flush()
        boxes = np.memmap(spill, dtype=np.float64, mode="r", shape=(len(gt), len(per_fold[0]), 4))
    return HeldOut(boxes.transpose(1, 0, 2), gt, fold_of_row, n_folds)


def fold_corloc(per_fold: list[list[BoxRegressor]], maps: RowMaps, fold: pd.Series, threshold: float) -> np.ndarray:
    """CorLoc (candidates, folds) of each fold's candidates on the rows of that fold: :func:`held_out`'s boxes
    scored."""
    return held_out(per_fold, maps, fold).fold_corloc(threshold)


def with_ensemble(candidates: list[Candidate], fold_scores: np.ndarray, held: HeldOut, models: list[BoxRegressor],
                  size: int, threshold: float) -> tuple[list[Candidate | Ensemble], np.ndarray]:
    """The candidates and their CorLoc per fold (candidates, folds), then the average box of the ``size`` best by
    mean CorLoc (ties: the earlier) that read the same maps (``models``: a fitted model per candidate), scored on
    the same held-out boxes: each fold's by that fold's members, nothing refitted. No ensemble for ``size`` 0, or
    when fewer than two candidates can make one."""
    if size < 2:
        return candidates, fold_scores
    members: list[int] = []
    for c in ranking(fold_scores.mean(axis=1)):
        try:
            BoxEnsemble.from_fitted([models[i] for i in [*members, c]])
        except ValueError as error:
            log.info("the ensemble leaves out candidate %d: %s", c, error)
            continue
        members.append(c)
        if len(members) == size:
            break
    if len(members) < 2:
        return candidates, fold_scores
    ensemble = Ensemble(tuple(candidates[i] for i in members), tuple(members))
    scores = held.corloc(average_boxes(held.boxes[members]), threshold)
    log.info("the ensemble of candidates %s: CorLoc %.1f %%", members, 100 * scores.mean())
    return [*candidates, ensemble], np.vstack([fold_scores, scores])


def fit_regressor(manifest_path: str | Path, split_path: str | Path, stores: list[str], model_path: str | Path,
                  summary_path: str | Path, grid: dict, solver: str = "ridge", sgd: dict | None = None,
                  iou_threshold: float = 0.5, batch_size: int = 1024, train_split: str = "train",
                  val_split: str = "val", selection: dict | None = None, prior: dict | None = None,
                  ensemble: int = DEFAULT_ENSEMBLE) -> BoxModel:
    """Choose the box model among the grid's candidates, the prior's and their ensemble; save it and a summary.

    ``selection`` ``{"method": "cv", "folds": K, "seed": S}`` (the default) scores every candidate by K-fold
    cross-validation on train + val (folds grouped by image, stratified by class) and refits the best on
    train + val; ``{"method": "val"}`` fits on train and keeps the best on val. Ties: first in grid order.
    ``prior`` ``{"model": "shipped" | path | None, "alpha": [...]}`` (default :data:`DEFAULT_PRIOR`) adds a
    fitted box model as a candidate as it is and fine-tuned (ridge shrunk towards its weights), where its maps
    are the stores' maps. ``train_split`` / ``val_split`` name the splits: ``"test"`` for both is the
    ``fit_on_test`` plumbing mode of test-only samples (the summary records it). ``ensemble`` (0: none) adds the
    average box of that many of the best candidates (:func:`with_ensemble`), scored as they are; when it wins, each
    member is refitted as it would be alone.
    """
    selection = DEFAULT_SELECTION | (selection or {})
    if selection["method"] not in ("cv", "val"):
        raise ValueError(f"regression.selection.method must be 'cv' or 'val', got {selection['method']!r}")
    if ensemble == 1 or ensemble < 0:
        raise ValueError(f"regression.ensemble must be 0 (none) or at least 2 candidates, got {ensemble}")
    rows = labelled_rows(manifest_path, split_path)
    if not (rows["split"] == train_split).any():
        raise ValueError(f"{split_path}: the {train_split} split has no image; cannot fit a box model")
    provenance = map_provenance(stores)
    # Shape features also describe the Grad-CAM maps and the classifier's embedding, where stored.
    has_attention, n_embedding = provenance.pop("attention"), provenance.pop("embedding")
    starting = load_prior(prior, provenance, has_attention, n_embedding) if solver == "ridge" else None
    uses_prior = starting is not None and starting.model is not None
    shape = "shape" in grid.get("features", []) or (uses_prior and starting.model.features == "shape")
    attention, embedding = shape and has_attention, shape and n_embedding > 0
    sgd = sgd or {}
    choice_rows = rows[rows["split"].isin({train_split, val_split})]
    if selection["method"] == "cv":
        if solver != "ridge":
            raise ValueError("regression.selection.method 'cv' needs regression.solver 'ridge' (SGD fits are too slow "
                             "to repeat per fold); choose on val with selection.method 'val'")
        candidates, per_fold, held = cross_validated_corloc(grid, stores, choice_rows, attention, embedding,
                                                            selection["folds"], selection["seed"], batch_size, starting)
        candidates, fold_scores = with_ensemble(candidates, held.fold_corloc(iou_threshold), held, per_fold[0],
                                                ensemble, iou_threshold)
        scores = fold_scores.mean(axis=1)
        chosen = candidates[choose(scores)]
        best = chosen.refit(RowMaps(stores, choice_rows, batch_size, attention, embedding), starting)
        chosen_on = f"{selection['folds']}-fold cross-validation on {' + '.join(dict.fromkeys([train_split, val_split]))}"
        tried = [c.settings() | {"cv_corloc": float(m), "cv_corloc_std": float(f.std()), "fold_corloc":
                                [float(x) for x in f]} for c, m, f in zip(candidates, scores, fold_scores)]
        n_choice_rows, fitted_on = len(choice_rows), sorted({train_split, val_split})
        n_images = int(choice_rows["image_id"].nunique())
    else:
        train = RowMaps(stores, rows[rows["split"] == train_split], batch_size, attention, embedding)
        models = candidate_models(grid, solver, sgd, train, embedding)
        candidates = [Candidate(model.get_params()) for model in models]
        more, more_models = prior_candidates(
            starting, lambda base, alphas, towards: [base.fit_alpha_path(train.boxes(), alphas, towards=towards)])
        candidates, models = candidates + more, models + (more_models[0] if more_models else [])
        val_rows = rows[rows["split"] == val_split]
        held = held_out([models], RowMaps(stores, val_rows, batch_size, attention, embedding),
                        pd.Series(0, index=val_rows.index))
        candidates, val_scores = with_ensemble(candidates, held.fold_corloc(iou_threshold), held, models, ensemble,
                                               iou_threshold)
        scores = val_scores[:, 0]
        index = choose(scores)
        chosen = candidates[index]
        # a copy: the prior taken as it is must not become the file's own record of what it started from
        best = copy.deepcopy(chosen.of(models) if isinstance(chosen, Ensemble) else models[index])
        chosen_on = val_split
        tried = [c.settings() | {"val_corloc": float(s)} for c, s in zip(candidates, scores)]
        n_choice_rows, fitted_on = int((rows["split"] == val_split).sum()), [train_split]
        n_images = int(rows.loc[rows["split"] == train_split, "image_id"].nunique())
    best.provenance_ = provenance
    best.fitted_on_ = {"dataset": Path(manifest_path).parent.name, "splits": fitted_on, "n_images": n_images,
                       "selection": chosen_on, "score": float(scores.max())}
    members = chosen.members if isinstance(chosen, Ensemble) else (chosen,)
    if isinstance(chosen, Ensemble):
        best.fitted_on_["ensemble"] = [member.settings() for member in members]
    if any(member.start for member in members):
        how = [member.start for member in members] if isinstance(chosen, Ensemble) else chosen.start
        best.fitted_on_["start"] = {"model": starting.name, "how": how,
                                    "fitted_on": getattr(starting.model, "fitted_on_", None)}
    summary = {
        "chosen": chosen.settings() | {"solver": solver},
        "selection": selection["method"],
        "chosen_on": chosen_on,
        "score": float(scores.max()),
        "n_choice_rows": n_choice_rows,
        "n_fit_rows": int(best.n_samples_seen_),
        "fitted_on": fitted_on,
        "prior": starting.summary() if starting is not None else None,
        "candidates": tried,
    }
    # The summary first, the model last, each written aside and renamed into place: a fit killed at any
    # point leaves no half-written file, and a model at its final path always ends a finished fit.
    publish(summary_path, lambda path: path.write_text(json.dumps(summary, indent=2) + "\n"))
    publish(model_path, best.save)
    log.info("chose %s (%s CorLoc %.1f %%); wrote %s", summary["chosen"], chosen_on, 100 * summary["score"], model_path)
    return best


def settings_of(params: dict) -> dict:
    """The grid settings of a candidate's parameters; ``pool`` and ``normalize`` are null for shape features
    (unused)."""
    settings = {key: params[key] for key in ("features", "alpha", "pool", "normalize", "target",
                                             "embedding_components", "loss")}
    return settings | ({"pool": None, "normalize": None} if params["features"] == "shape" else {})


def publish(path: str | Path, write) -> None:
    """``write(<path>.partial)``, then rename it to ``path`` (atomic on one file system)."""
    partial = Path(f"{path}.partial")
    write(partial)
    partial.replace(path)
