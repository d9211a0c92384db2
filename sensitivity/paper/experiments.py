"""Fit on train, choose on val, report on test: every method of the paper analysis, for every split seed.

Protocol (the workflow's, applied to every method):

- a method's hyper-parameters (its grid, e.g. ridge alpha × pool × normalisation) are fitted on the
  train rows and the candidate with the highest val CorLoc (share of val rows correct) is kept, ties
  going to the higher mean val IoU, then to the first candidate in grid order (the choice rule of
  :mod:`sensitivity.evaluation`; the workflow's fit stage has no IoU per candidate, so its ties go to the first);
- across variants ("best variant"), the one-backward-pass variant with the highest val CorLoc is
  kept, with the same tie-breaks (mean val IoU, then the earlier variant in the list);
- reported numbers are the paper's "Average CorLoc": the unweighted mean over classes of the per-class
  CorLoc, in percent, on the test rows (and, for reference, on the val rows). The test rows are never
  used to choose anything.

Regression targets are the largest ground-truth box of each row; a prediction is correct when its IoU
with any ground-truth box of the row's class is above the threshold (PASCAL criterion).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.box_model import BoxEnsemble, BoxModel, average_boxes
from sensitivity.boxes import CentreBoxBaseline, heuristic_boxes
from sensitivity.datasets import read_manifest, split_manifest
from sensitivity.evaluation import Scores, image_folds, prediction_columns, ranked, score_boxes
from sensitivity.paper.bank import MapBank
from sensitivity.paper.variants import Variant, backward_passes
from sensitivity.regress import BoxRegressor


def score(boxes: np.ndarray, bank: MapBank, threshold: float) -> Scores:
    """:func:`~sensitivity.evaluation.score_boxes` on the bank's rows."""
    return score_boxes(boxes, bank.rows, threshold)


@dataclass
class Outcome:
    """A method after choosing its hyper-parameters on val: the choice, val and test scores, and its box model
    (None for the baselines)."""

    name: str
    family: str
    params: dict
    n_candidates: int
    val: Scores
    test: Scores
    description: str = ""
    map_variants: tuple[str, ...] = ()
    estimator: BoxModel | None = None

    @property
    def backward_passes(self) -> int:
        return backward_passes(self.map_variants)


def _setting_paths(variant: Variant, train: MapBank) -> list[list[BoxRegressor]]:
    """Each setting's models fitted on ``train``, one per alpha (one ridge path per setting)."""
    data = [(variant.maps(train), train.targets)]
    return [BoxRegressor(**setting).fit_alpha_path(data, variant.alphas) for setting in variant.settings]


def _boxes(models: list[BoxRegressor], maps: np.ndarray) -> list[np.ndarray]:
    """Each model's boxes on ``maps``, the features computed once (the models share their feature setting)."""
    features = models[0].transform_features(maps)
    return [model.predict_features(features) for model in models]


def fit_select(variant: Variant, train: MapBank, val: MapBank, test: MapBank, threshold: float) -> Outcome:
    """Fit every candidate of ``variant`` on train, keep the best on val, score it on test.

    Best: :func:`~sensitivity.evaluation.ranked` (highest val CorLoc as a share of rows, ties → higher val
    mean IoU → first in grid order; on a val split of a few dozen rows ties are common, and the first grid
    point is the weakest ridge penalty).
    """
    paths = _setting_paths(variant, train)
    val_maps = variant.maps(val)
    scored = [score(b, val, threshold) for path in paths for b in _boxes(path, val_maps)]
    models = [model for path in paths for model in path]
    best = ranked(scored)[0]
    model = models[best]
    return Outcome(variant.name, variant.family, variant.candidates()[best], variant.n_candidates, scored[best],
                   score(model.predict(variant.maps(test)), test, threshold), variant.description, variant.reads,
                   model)


def cv_select(variant: Variant, train: MapBank, val: MapBank, test: MapBank, threshold: float,
              folds: int = 5, seed: int = 0) -> Outcome:
    """Protocol B: choose ``variant``'s hyper-parameters by ``folds``-fold cross-validation on train + val
    (the fit stage's folds, :func:`~sensitivity.evaluation.image_folds`: grouped by image, stratified by class;
    each setting's folds and alphas from one pass, :meth:`~sensitivity.regress.BoxRegressor.fit_alpha_path_folds`),
    refit the best on train + val, score it on test.

    Uses every non-test row for the choice instead of the single small val split; the test rows are
    still never used. ``val`` of the returned outcome holds the cross-validated score (all train + val
    rows, out of fold).
    """
    dev = train.join(val)
    fold = image_folds(dev.rows, folds, seed)
    maps = variant.maps(dev)
    scored = []
    for setting in variant.settings:
        per_fold = BoxRegressor(**setting).fit_alpha_path_folds([(maps, dev.targets, fold)], variant.alphas, folds)
        boxes = np.zeros((len(variant.alphas), len(dev.rows), 4))
        for k, models in enumerate(per_fold):
            boxes[:, fold == k] = _boxes(models, maps[fold == k])
        scored += [score(b, dev, threshold) for b in boxes]
    best = ranked(scored)[0]
    params = variant.candidates()[best]
    model = BoxRegressor(**params).fit(maps, dev.targets)
    return Outcome(variant.name, variant.family, params, variant.n_candidates, scored[best],
                   score(model.predict(variant.maps(test)), test, threshold), variant.description, variant.reads,
                   model)


def centre_outcome(train: MapBank, val: MapBank, test: MapBank, threshold: float) -> Outcome:
    """The constant centre box of mean training width and height (Table 4's baseline)."""
    model = CentreBoxBaseline().fit(np.zeros(len(train.rows)), train.targets)
    return Outcome("centre box", "baseline", {"box": [round(v, 4) for v in model.box_]}, 1,
                   score(model.predict(val.rows), val, threshold), score(model.predict(test.rows), test, threshold),
                   "mean-size box centred in the image, fitted on train", ())


def heuristic_sweep(bank: MapBank, variant: str, sigmas: Sequence[float], fractions: Sequence[float],
                    threshold: float) -> dict[tuple[float, float], Scores]:
    """The heuristic box of ``variant`` maps for every (sigma, fraction): ``{(sigma, fraction): Scores}``."""
    maps = bank.maps[:, bank.index(variant)]
    return {(s, f): score(heuristic_boxes(maps, sigma=s, fraction=f), bank, threshold)
            for s in sigmas for f in fractions}


def heuristic_outcome(val: MapBank, test: MapBank, variant: str, sigmas: Sequence[float],
                      fractions: Sequence[float], threshold: float) -> Outcome:
    """The heuristic box with (sigma, fraction) chosen on val from the sweep (ties: mean IoU, then first)."""
    val_sweep = heuristic_sweep(val, variant, sigmas, fractions, threshold)
    sweep = list(val_sweep.items())
    (sigma, fraction), val_scored = sweep[ranked([s for _, s in sweep])[0]]
    maps = test.maps[:, test.index(variant)]
    test_scored = score(heuristic_boxes(maps, sigma=sigma, fraction=fraction), test, threshold)
    return Outcome("heuristic box", "baseline", {"sigma": sigma, "fraction": fraction}, len(val_sweep),
                   val_scored, test_scored, f"smoothed {variant} map, bounding box of the top pixels; sigma and "
                   "fraction chosen on val", (variant,))


def choose_best(outcomes: Sequence[Outcome]) -> int:
    """Index of the outcome with the highest val CorLoc (rows), ties → higher val mean IoU → earlier."""
    return ranked([o.val for o in outcomes])[0]


def ensemble(outcomes: Sequence[Outcome], k: int, val_rows: MapBank, test: MapBank, threshold: float,
             name: str) -> Outcome:
    """The average box of the ``k`` best distinct models (by val CorLoc, then val mean IoU) that read the best one's
    maps, as a :class:`~sensitivity.box_model.BoxEnsemble` of their box models (whose boxes are the average of the
    members', :func:`~sensitivity.box_model.average_boxes`). ``val_rows`` are the rows of the outcomes' val scores
    (the val split, or train + val for cross-validated outcomes, whose ensemble is then scored on the members'
    out-of-fold boxes, as the fit stage scores its ensemble)."""
    order = ranked([o.val for o in outcomes])
    reads = outcomes[order[0]].map_variants
    members, seen = [], set()
    for o in (outcomes[i] for i in order if outcomes[i].map_variants == reads):
        candidate = json.dumps(o.params, sort_keys=True)  # variants around one centre can choose the same model
        if candidate not in seen:
            members.append(o)
            seen.add(candidate)
        if len(members) == k:
            break
    model = BoxEnsemble.from_fitted([o.estimator for o in members])
    val_boxes = average_boxes([o.val.boxes for o in members])
    test_boxes = average_boxes([o.test.boxes for o in members])
    return Outcome(name, "ensemble", {"members": [o.name for o in members]}, len(members),
                   score(val_boxes, val_rows, threshold), score(test_boxes, test, threshold),
                   f"average box of the {len(members)} best variants", reads, model)


def seed_splits(manifest_path: str | Path, fractions: Sequence[float] | None, seeds: Sequence[int],
                official: pd.Series | None = None) -> pd.DataFrame:
    """``image_id`` and one ``seed<k>`` column of train/val/test per seed, as the workflow's split rule
    makes them. ``official`` (``image_id`` → split, from VOC's official lists) is used for every seed:
    such a split does not depend on the seed."""
    manifest = read_manifest(manifest_path)
    out = pd.DataFrame({"image_id": manifest["image_id"].unique()})
    for seed in seeds:
        split = split_manifest(manifest, fractions, seed) if official is None else official
        out[f"seed{seed}"] = out["image_id"].map(split)
    return out


def split_bank(bank: MapBank, splits: pd.DataFrame, seed: int) -> tuple[MapBank, MapBank, MapBank]:
    assignment = bank.rows["image_id"].map(splits.set_index("image_id")[f"seed{seed}"])
    if assignment.isna().any():
        raise ValueError(f"image {bank.rows['image_id'][assignment.isna()].iloc[0]!r} has no split")
    return tuple(bank.subset((assignment == name).to_numpy()) for name in ("train", "val", "test"))


def outcome_record(outcome: Outcome, seed: int) -> dict:
    return {"seed": seed, "family": outcome.family, "variant": outcome.name,
            "params": json.dumps(outcome.params, sort_keys=True), "n_candidates": outcome.n_candidates,
            "val_corloc": outcome.val.corloc, "val_rows_correct": outcome.val.micro, "val_mean_iou": outcome.val.mean_iou,
            "test_corloc": outcome.test.corloc, "test_mean_iou": outcome.test.mean_iou,
            "n_train": None, "n_val": len(outcome.val.iou), "n_test": len(outcome.test.iou),
            "map_variants": "+".join(outcome.map_variants), "backward_passes": outcome.backward_passes,
            "description": outcome.description}


HEADLINE = ("centre box", "heuristic box", "linear map (paper)", "best variant")
HEADLINE_CV = ("linear map (paper), chosen by CV on train+val", "best variant, chosen by CV on train+val")
#: Ensembles (average box) of the k best one-backward variants, reported for each k.
ENSEMBLE_SIZES = (3, 5)
#: The first seed's box models the analysis returns, by file stem: the paper's linear map, the best variant and the
#: largest ensemble, each chosen on val.
SAVED_MODELS = {"linear": HEADLINE[2], "best": HEADLINE[3],
                "ensemble": f"ensemble of the {ENSEMBLE_SIZES[-1]} best on val"}


def box_model(outcome: Outcome, bank: MapBank, seed: int, train: MapBank, dataset: str | None = None) -> BoxModel:
    """``outcome``'s box model recording how its maps were made (the bank's provenance of the map variant it reads)
    and what it was fitted on and chosen by, as the fit stage's models do: ``sensitivity localize --regressor``
    applies it to the maps it was fitted on."""
    model = outcome.estimator
    (reads,) = outcome.map_variants  # the study's eligible variants read one map variant
    model.provenance_ = bank.provenance[reads]
    model.fitted_on_ = {"dataset": dataset, "splits": ["train"],
                        "n_images": int(train.rows["image_id"].nunique()), "selection": "val",
                        "score": outcome.val.micro, "study": {"seed": seed, "variant": outcome.name,
                                                              "params": outcome.params}}
    return model


def run_analysis(bank: MapBank, splits: pd.DataFrame, seeds: Sequence[int], primary: str, variants: Sequence[Variant],
                 sigmas: Sequence[float], fractions: Sequence[float], threshold: float = 0.5,
                 log=print, cv_folds: int = 5, dataset: str | None = None) -> dict[str, pd.DataFrame]:
    """Every method on every seed. Returns the frames ``variants`` (every variant × seed), ``seeds``
    (the headline methods per seed), ``predictions`` (first seed's test rows, headline methods) and
    ``sweep`` (first seed: heuristic box of every map variant for every sigma × fraction, val and test),
    and ``models``, the first seed's box models of :data:`SAVED_MODELS` (:func:`box_model`).

    With ``cv_folds`` >= 2, every variant is also run under protocol B (:func:`cv_select`: chosen by
    cross-validation on train + val, refitted there, scored on test), in the ``cv_*`` columns of
    ``variants`` and two more headline methods."""
    records, headline, predictions, sweep, models = [], [], None, [], {}
    paper_name = f"linear map, {primary}"  # the name paper_variant gives the paper's method
    if paper_name not in [v.name for v in variants]:
        raise ValueError(f"the variants must include the paper's linear map {paper_name!r}")
    for seed in seeds:
        train, val, test = split_bank(bank, splits, seed)
        log(f"seed {seed}: {len(train.rows)} train, {len(val.rows)} val, {len(test.rows)} test rows")
        outcomes = [centre_outcome(train, val, test, threshold),
                    heuristic_outcome(val, test, primary, sigmas, fractions, threshold)]
        for variant in variants:
            outcomes.append(fit_select(variant, train, val, test, threshold))
            o = outcomes[-1]
            log(f"  {o.family:24s} {o.name:40s} val {o.val.corloc:6.2f} test {o.test.corloc:6.2f} {o.params}")
        learned = outcomes[2:]
        fast = [o for o in learned if o.backward_passes == 1]  # one forward, one backward, one cheap mapping
        best = fast[choose_best(fast)]
        paper = next(o for o in learned if o.name == paper_name)
        cross = {}
        if cv_folds >= 2:
            for variant in variants:
                cross[variant.name] = c = cv_select(variant, train, val, test, threshold, cv_folds, seed)
                log(f"  CV {c.family:21s} {c.name:40s} cv {c.val.corloc:6.2f} test {c.test.corloc:6.2f} {c.params}")
            cv_fast = [o for o in cross.values() if o.backward_passes == 1]
            cv_best = cv_fast[choose_best(cv_fast)]
        for o in outcomes:
            record = outcome_record(o, seed) | {"n_train": len(train.rows), "chosen": o is best}
            if o.name in cross:
                c = cross[o.name]
                record |= {"cv_params": json.dumps(c.params, sort_keys=True), "cv_corloc": c.val.corloc,
                           "cv_test_corloc": c.test.corloc, "cv_chosen": c is cv_best}
            records.append(record)
        methods = list(zip(HEADLINE, (outcomes[0], outcomes[1], paper, best)))
        methods += [(f"ensemble of the {k} best on val", ensemble(fast, k, val, test, threshold, f"top {k} on val"))
                    for k in ENSEMBLE_SIZES]
        if cv_folds >= 2:
            methods += [(HEADLINE_CV[0], cross[paper_name]), (HEADLINE_CV[1], cv_best)]
            dev = train.join(val)
            methods += [(f"ensemble of the {k} best by CV on train+val",
                         ensemble(cv_fast, k, dev, test, threshold, f"top {k} by CV")) for k in ENSEMBLE_SIZES]
        for method, o in methods:
            members = o.params.get("members", []) if o.family == "ensemble" else []
            name = f"{members[0]} + {len(members) - 1} more" if members else o.name
            headline.append({"seed": seed, "method": method, "variant": name,
                             "params": json.dumps(o.params, sort_keys=True),
                             "val_corloc": o.val.corloc, "test_corloc": o.test.corloc,
                             "backward_passes": o.backward_passes,
                             "n_train": len(train.rows), "n_val": len(val.rows), "n_test": len(test.rows)})
        if predictions is None:
            shown = {"centre": outcomes[0], "heuristic": outcomes[1], "linear": paper, "best": best}
            predictions = prediction_columns(test.rows, {k: o.test.boxes for k, o in shown.items()}, threshold)
            predictions.attrs["best"] = best.name
            on_val = dict(methods)
            models = {name: box_model(on_val[method], bank, seed, train, dataset)
                      for name, method in SAVED_MODELS.items()}
            for split_name, part in (("val", val), ("test", test)):
                for variant in bank.variants:
                    for (s, f), scored in heuristic_sweep(part, variant, sigmas, fractions, threshold).items():
                        per_class = pd.Series(scored.correct).groupby(part.rows["label"].to_numpy()).mean() * 100
                        sweep.append({"split": split_name, "variant": variant, "sigma": s, "fraction": f,
                                      "corloc": scored.corloc, "mean_iou": scored.mean_iou,
                                      **{f"corloc_{c}": v for c, v in per_class.items()}})
    return {"variants": pd.DataFrame(records), "seeds": pd.DataFrame(headline), "predictions": predictions,
            "sweep": pd.DataFrame(sweep), "models": models}
