"""The paper analysis: published numbers, table builders, composable variant estimators, heuristic sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensitivity.box_model import BoxEnsemble, load_box_model
from sensitivity.boxes import heuristic_box
from sensitivity.evaluation import average_corloc, ranked
from sensitivity.paper import tables as T
from sensitivity.paper.bank import MAP_VARIANTS, MapBank
from sensitivity.paper.experiments import (
    choose_best,
    cv_select,
    ensemble,
    fit_select,
    heuristic_sweep,
    run_analysis,
    score,
)
from sensitivity.paper.variants import backward_passes, paper_variant, study_variants
from sensitivity.regress import BoxRegressor
from sensitivity.shape import marginal_quantiles
from sensitivity.speed import time_interleaved
from sensitivity.tables import read_published

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "data" / "published_results.csv"
GRID = {"alpha": [0.1, 1.0, 10.0], "pool": [4, 8], "normalize": ["max"], "parameterisation": ["corners"]}


@pytest.fixture(scope="module")
def published() -> pd.DataFrame:
    return read_published(PUBLISHED)


# --- the published numbers --------------------------------------------------------------------------


def test_published_file_has_every_table_and_cites_it(published):
    assert set(published["table"]) == {"1", "2", "3", "4", "3.6", "wsol"}
    wsol = published[published["table"] == "wsol"]
    assert wsol["source"].str.contains(r"(?:CVPR|ECCV|ICCV) 20\d\d").all()
    assert wsol.set_index("method").loc["CAM (VGG16)", "value"] == 60.0
    published = published[published["table"] != "wsol"]  # the paper's own tables
    for table, source in published.groupby("table")["source"].first().items():
        expected = "Section 3.6" if table == "3.6" else f"Table {table}"
        assert source == f"ICLR 2019 submission, {expected}"
    assert published.loc[published["table"] == "1", "value"].tolist() == [22, 32, 37, 39, 55]
    t4 = published[published["table"] == "4"].set_index("method")["value"]
    assert t4["Constant Center Box Baseline"] == 12.34 and t4["Sensitivity Maps"] == 68.76
    assert sorted(published.loc[published["table"] == "3", "value"]) == [27.2, 32.5, 38.4]


def test_table2_class_means_match_the_printed_meancl(published):
    """Checks the transcription: six rows average to their printed MeanCL within rounding; the paper's
    own Sensitivity Maps row does not (41.0 printed as 40.1), which the tables point out."""
    table = T.published_table2(published).set_index("method")
    assert table.shape == (7, 21)
    recomputed = table[list(T.VOC_CLASSES)].mean(axis=1)
    gap = (recomputed - table["MeanCL"]).abs()
    assert (gap.drop("Sensitivity Maps") < 0.06).all(), gap
    assert recomputed["Sensitivity Maps"] == pytest.approx(40.995)
    assert table.loc["Sensitivity Maps", "MeanCL"] == 40.1
    six = table.loc["Sensitivity Maps", list(T.TABLE1_CLASSES)].mean()
    assert six == pytest.approx(52.8, abs=0.01)  # Table 1 prints 55 for the same six classes


# --- table builders on a handful of real-looking prediction rows ------------------------------------


@pytest.fixture()
def predictions() -> pd.DataFrame:
    rows = []
    flags = {  # per class: (linear, heuristic, centre, best) correctness of each row
        "kangaroo": [(1, 0, 1, 1), (0, 0, 0, 1), (1, 1, 0, 1), (0, 1, 0, 0)],
        "raccoon": [(1, 1, 1, 1), (1, 0, 1, 1)],
    }
    for label, per_row in flags.items():
        for k, (lin, heu, cen, best) in enumerate(per_row):
            rows.append({"image_id": f"{label}/{k:05d}", "label": label, "linear_correct": bool(lin),
                         "heuristic_correct": bool(heu), "centre_correct": bool(cen), "best_correct": bool(best)})
    return pd.DataFrame(rows)


def test_per_class_table_and_table1(predictions, published):
    ours = T.per_class(predictions)
    average = ours.set_index("class").loc["Average"]
    assert average["corloc_linear"] == pytest.approx((50 + 100) / 2)  # unweighted over classes
    assert average["corloc_best"] == pytest.approx((75 + 100) / 2)
    t1 = T.table1(published, ours, "test setting")
    assert t1["method"].tolist()[:5] == ["Russell et al.", "Chum & Zisserman", "Deselaers et al.", "Tang et al.",
                                         "Sensitivity Maps"]
    mine = t1.set_index("method").loc[T.OUR_METHODS["linear"]]
    assert mine["Average CorLoc"] == pytest.approx(75.0) and mine["source"] == "test setting"
    assert "6 images" in mine["data"]


def test_table2_puts_our_classes_beside_the_voc_ones(predictions, published):
    t2 = T.table2(published, T.per_class(predictions), "ours")
    assert list(t2.columns[:4]) == ["method", "source", "MeanCL", "mean of classes"]
    assert list(t2.columns[4:24]) == list(T.VOC_CLASSES)
    assert list(t2.columns[24:]) == ["kangaroo", "raccoon"]
    linear = t2.set_index("method").loc[T.OUR_METHODS["linear"]]
    assert linear["MeanCL"] == pytest.approx(75.0) and linear["mean of classes"] == pytest.approx(75.0)
    assert np.isnan(linear["aeroplane"])
    siva = t2.set_index("method").loc["Siva et al. (2012)"]
    assert np.isnan(siva["kangaroo"]) and siva["MeanCL"] == 30.2


def test_table4_and_its_centre_box_note(predictions, published):
    t4 = T.table4(published, T.per_class(predictions), "ours")
    centre = t4.set_index("method").loc["Constant Center Box Baseline"]
    assert centre["Average CorLoc"] == 12.34 and "does not reproduce" in centre["note"]
    assert t4.set_index("method").loc[T.OUR_METHODS["centre"], "Average CorLoc"] == pytest.approx(62.5)


def test_variants_seeds_and_aggregation_tables(published):
    records = []
    for seed in (0, 1):
        for k, v in enumerate(MAP_VARIANTS):
            records.append({"seed": seed, "family": "map variant (§3.6)", "variant": f"linear map, {v}",
                            "params": "{}", "val_corloc": 50.0 + k, "test_corloc": 60.0 + k + seed,
                            "backward_passes": 1, "chosen": k == 3})
    variants = pd.DataFrame(records)
    table = T.variants_table(variants)
    assert len(table) == 4 and "CV-chosen test mean ± std" not in table
    with_cv = variants.assign(cv_test_corloc=variants["test_corloc"] + 1, cv_chosen=variants["chosen"])
    cv_row = T.variants_table(with_cv).set_index("variant").loc["linear map, gestalt_mean"]
    assert cv_row["CV-chosen test mean ± std"] == "64.5 ± 0.7" and cv_row["times best by CV"] == 2
    row = table.set_index("variant").loc["linear map, gestalt_mean"]
    assert row["test mean ± std (seeds)"] == "63.5 ± 0.7" and row["times best on val"] == 2
    aggregation = T.aggregation_table(variants, published).set_index(["target", "aggregate"])
    assert aggregation.loc[("class", "mean"), "published CorLoc"] == 68.7
    assert aggregation.loc[("gestalt", "max"), "published CorLoc"] == 40.1
    assert aggregation.loc[("gestalt", "max"), "test CorLoc"] == 62.0
    seeds = pd.DataFrame([{"seed": s, "method": m, "variant": m, "val_corloc": 1.0, "test_corloc": t}
                          for s, (a, b) in enumerate([(40, 60), (50, 70)]) for m, t in (("centre box", a), ("best", b))])
    st = T.seeds_table(seeds).set_index("method")
    assert st.loc["best", "test mean"] == 65 and st.loc["centre box", "test std"] == pytest.approx(7.0711, abs=1e-3)
    md = T.markdown(st.reset_index(), "title", note="a note")
    assert md.startswith("### title") and "| best |" in md and md.rstrip().endswith("a note")


# --- variant estimators on small random data ---------------------------------------------------------


@pytest.fixture(scope="module")
def stacked():
    rng = np.random.default_rng(0)
    X = rng.random((40, len(MAP_VARIANTS), 56, 56)).astype(np.float32)
    centres = rng.uniform(0.3, 0.7, (40, 2))
    sizes = rng.uniform(0.2, 0.5, (40, 2))
    y = np.clip(np.column_stack([centres - sizes / 2, centres + sizes / 2]), 0, 1)
    return X, y


def test_backward_passes_count_targets():
    assert backward_passes(("class_max", "gestalt_max", "gestalt_mean")) == 2
    assert backward_passes(("gestalt_max", "gestalt_mean")) == 1


def test_every_study_variant_is_a_box_model_that_fits_and_predicts(stacked):
    X, y = stacked
    bank = MapBank(pd.DataFrame({"target_box": list(y)}), X)
    variants = study_variants("gestalt_max", GRID)
    assert len({v.name for v in variants}) == len(variants)
    assert [v.name for v in variants[:4]] == [f"linear map, {v}" for v in MAP_VARIANTS]
    assert {v.family for v in variants if v.backward_passes > 1} == {"features, both targets (2 backward)"}
    assert all(len(v.reads) == 1 for v in variants if v.backward_passes == 1)  # localize can apply each
    for variant in variants:
        models = BoxRegressor(**variant.settings[0]).fit_alpha_path([(variant.maps(bank), bank.targets)],
                                                                    variant.alphas[:1])
        assert models[0].predict(variant.maps(bank)[:3]).shape == (3, 4), variant.name
        assert models[0].n_channels_ == len(variant.reads)


def test_marginal_quantiles_of_a_block():
    m = np.zeros((1, 10, 10))
    m[0, 2:6, 4:8] = 1.0  # rows 2-5, columns 4-7: the box [0.4, 0.2, 0.8, 0.6]
    q = marginal_quantiles(m, (0.001, 0.5, 0.999))
    np.testing.assert_allclose(q[0], [0.4, 0.6, 0.8, 0.2, 0.4, 0.6], atol=1e-3)


# --- the heuristic-box sweep ------------------------------------------------------------------------


def test_heuristic_box_grows_with_the_kept_fraction_and_sigma():
    """On a synthetic map (a bright blob plus weak speckle), keeping more pixels or smoothing more
    never shrinks the box, and the box stays centred on the blob."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:56, 0:56]
    blob = np.exp(-(((xx - 30) / 6.0) ** 2 + ((yy - 24) / 9.0) ** 2) / 2)
    m = blob + 0.02 * rng.random((56, 56))

    def area(b):
        return (b[2] - b[0]) * (b[3] - b[1])

    for sigma in (0, 4, 8, 16, 32):  # pixels of a 224-pixel side: 0-8 pixels of these 56² maps
        areas = [area(heuristic_box(m, sigma, f)) for f in (0.1, 0.2, 0.3, 0.5)]
        assert all(a <= b + 1e-12 for a, b in zip(areas, areas[1:])), (sigma, areas)
    for fraction in (0.1, 0.2, 0.3):
        box = heuristic_box(m, 8.0, fraction)
        assert box[0] < 30 / 56 < box[2] and box[1] < 24 / 56 < box[3]


def _toy_bank(n: int = 60, size: int = 16, seed: int = 0) -> MapBank:
    """Maps that are noisy boxes: the ground-truth box lit up, so map → box is learnable."""
    rng = np.random.default_rng(seed)
    rows, maps = [], []
    for i in range(n):
        cx, cy = rng.uniform(0.35, 0.65, 2)
        w, h = rng.uniform(0.3, 0.6, 2)
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        m = 0.2 * rng.random((size, size))
        x1, y1, x2, y2 = (box * size).round().astype(int)
        m[y1:y2, x1:x2] += 1.0
        maps.append(np.stack([m] * len(MAP_VARIANTS)))
        rows.append({"image_id": f"c{i % 2}/{i:03d}", "label": f"c{i % 2}", "gt": box[None], "target_box": box,
                     "boxes": json.dumps([box.tolist()]), "path": "", "width": 100, "height": 100})
    provenance = {v: dict(zip(("target", "aggregate"), v.split("_"))) for v in MAP_VARIANTS}
    return MapBank(pd.DataFrame(rows), np.asarray(maps, dtype=np.float32), provenance=provenance)


def test_heuristic_sweep_and_fit_select_on_learnable_maps():
    bank = _toy_bank()
    train, val, test = bank.subset(np.arange(60) < 40), bank.subset((np.arange(60) >= 40) & (np.arange(60) < 50)), \
        bank.subset(np.arange(60) >= 50)
    sweep = heuristic_sweep(test, "gestalt_max", [0, 1], [0.1, 0.3], 0.5)
    assert set(sweep) == {(0, 0.1), (0, 0.3), (1, 0.1), (1, 0.3)}
    outcome = fit_select(paper_variant("gestalt_max", GRID), train, val, test, 0.5)
    assert outcome.n_candidates == 6 and outcome.test.corloc >= 80.0
    assert outcome.backward_passes == 1


def test_cv_select_chooses_on_the_fit_stages_folds():
    """One fold rule: the study's cross-validation holds out exactly the folds of the workflow's fit stage."""
    from sensitivity.evaluation import image_folds

    bank = _toy_bank(60)
    index = np.arange(60)
    train, val, test = bank.subset(index < 36), bank.subset((index >= 36) & (index < 48)), bank.subset(index >= 48)
    variant = paper_variant("gestalt_max", GRID)
    outcome = cv_select(variant, train, val, test, 0.5, folds=3, seed=4)
    dev = bank.subset(index < 48)
    maps = variant.maps(dev)
    fold = image_folds(dev.rows, 3, 4)
    boxes = np.zeros((48, 4))
    for k in range(3):
        estimator = BoxRegressor(**outcome.params).fit(maps[fold != k], dev.targets[fold != k])
        boxes[fold == k] = estimator.predict(maps[fold == k])
    np.testing.assert_allclose(outcome.val.boxes, boxes, atol=1e-10)
    assert outcome.val.corloc == score(boxes, dev, 0.5).corloc
    refit = BoxRegressor(**outcome.params).fit(maps, dev.targets)
    np.testing.assert_allclose(outcome.estimator.coef_, refit.coef_)


def test_fit_select_keeps_the_candidate_best_on_val():
    """The study's choice equals fitting every candidate on train by hand and ranking their val scores."""
    bank = _toy_bank(60, seed=3)
    index = np.arange(60)
    train, val, test = bank.subset(index < 30), bank.subset((index >= 30) & (index < 45)), bank.subset(index >= 45)
    variant = study_variants("gestalt_max", GRID)[-3]  # shape descriptors, Huber loss: one setting, 7 alphas
    assert variant.settings == ({"features": "shape", "target": "corners", "loss": "huber"},)
    outcome = fit_select(variant, train, val, test, 0.5)
    by_hand = [BoxRegressor(**params).fit(variant.maps(train), train.targets) for params in variant.candidates()]
    scores = [score(m.predict(variant.maps(val)), val, 0.5) for m in by_hand]
    best = ranked(scores)[0]
    assert outcome.params == variant.candidates()[best]
    np.testing.assert_allclose(outcome.estimator.coef_, by_hand[best].coef_, atol=1e-8)
    np.testing.assert_allclose(outcome.test.boxes, by_hand[best].predict(variant.maps(test)), atol=1e-10)


def test_ensemble_averages_distinct_models_reading_the_best_ones_maps():
    """Variants around one centre can choose the same model: the ensemble takes each model once."""
    bank = _toy_bank(60, seed=4)
    index = np.arange(60)
    train, val, test = bank.subset(index < 30), bank.subset((index >= 30) & (index < 45)), bank.subset(index >= 45)
    variants = [v for v in study_variants("gestalt_max", GRID)
                if v.family == "ridge strength" or (v.family == "pooling" and v.settings[0]["pool"] <= 16)]
    outcomes = [fit_select(v, train, val, test, 0.5) for v in variants]
    chosen = [json.dumps(o.params, sort_keys=True) for o in outcomes]
    assert len(set(chosen)) < len(chosen)  # pool 14 and alpha <its choice> are one model
    result = ensemble(outcomes, 20, val, test, 0.5, "top")
    assert len(result.estimator.members_) == len(set(chosen))
    order = ranked([o.val for o in outcomes])
    first = list(dict.fromkeys(chosen[i] for i in order))[:3]
    top3 = ensemble(outcomes, 3, val, test, 0.5, "top 3")
    params = [json.loads(c) for c in first]
    assert [{key: m.get_params()[key] for key in p} for m, p in zip(top3.estimator.members_, params)] == params


def test_run_analysis_end_to_end_on_a_toy_bank(tmp_path):
    bank = _toy_bank(80)
    ids = bank.rows["image_id"]
    splits = pd.DataFrame({"image_id": ids})
    for seed in (0, 1):
        order = np.random.default_rng(seed).permutation(len(ids))
        splits[f"seed{seed}"] = np.where(order < 56, "train", np.where(order < 68, "val", "test"))
    variants = [paper_variant("gestalt_max", GRID)] + [v for v in study_variants("gestalt_max", GRID)
                                                      if v.family == "pooling" and v.settings[0]["pool"] <= 16]
    out = run_analysis(bank, splits, [0, 1], "gestalt_max", variants, [0, 2], [0.2, 0.5], log=lambda *_: None,
                       cv_folds=3, dataset="toy")
    assert set(out["seeds"]["method"]) == {"centre box", "heuristic box", "linear map (paper)", "best variant",
                                           "linear map (paper), chosen by CV on train+val",
                                           "best variant, chosen by CV on train+val",
                                           "ensemble of the 3 best on val", "ensemble of the 5 best on val",
                                           "ensemble of the 3 best by CV on train+val",
                                           "ensemble of the 5 best by CV on train+val"}
    assert (out["seeds"].loc[out["seeds"]["method"] != "centre box", "backward_passes"] == 1).all()
    assert len(out["variants"]) == 2 * (2 + len(variants))
    assert out["variants"].groupby("seed")["chosen"].sum().tolist() == [1, 1]
    assert out["variants"].groupby("seed")["cv_chosen"].sum().tolist() == [1, 1]
    assert out["variants"]["cv_test_corloc"].notna().sum() == 2 * len(variants)
    assert len(out["predictions"]) == 12 and {"linear_iou", "best_correct"} <= set(out["predictions"].columns)
    assert len(out["sweep"]) == 2 * len(MAP_VARIANTS) * 4
    models = out["models"]
    assert set(models) == {"linear", "best", "ensemble"}
    members = models["ensemble"].members_
    assert isinstance(models["ensemble"], BoxEnsemble) and 2 <= len(members) <= 4
    assert len({json.dumps(m.get_params(), sort_keys=True) for m in members}) == len(members)  # no model twice
    maps = bank.maps[:, MAP_VARIANTS.index("gestalt_max")]
    assert models["linear"].provenance_ == {"target": "gestalt", "aggregate": "max"}
    assert models["linear"].fitted_on_["study"]["variant"] == "linear map, gestalt_max"
    assert models["best"].fitted_on_["dataset"] == "toy" and models["best"].fitted_on_["n_images"] == 56
    for name, model in models.items():  # each travels: saved, loaded, the same boxes and records
        model.save(tmp_path / f"{name}.npz")
        loaded = load_box_model(tmp_path / f"{name}.npz")
        np.testing.assert_allclose(loaded.predict(maps[:5]), model.predict(maps[:5]))
        assert loaded.fitted_on_ == json.loads(json.dumps(model.fitted_on_))
        assert loaded.provenance_ == model.provenance_


def test_scores_and_choice():
    assert average_corloc(np.array([True, False, True, True]), ["a", "a", "b", "b"]) == 75.0
    bank = _toy_bank(4)
    s = score(bank.targets, bank, 0.5)
    assert s.corloc == 100.0 and s.mean_iou == pytest.approx(1.0)

    class O:
        def __init__(self, micro, iou):
            self.val = type("S", (), {"micro": micro, "mean_iou": iou})

    assert choose_best([O(0.5, 0.3), O(0.6, 0.1), O(0.6, 0.2), O(0.6, 0.2)]) == 2


def test_time_interleaved_runs_every_stage_in_rounds():
    calls = []
    import torch

    times = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             torch.device("cpu"), warmup=1, repeats=3)
    assert calls == ["a", "b"] * 4 and all(len(v) == 3 for v in times.values())


def test_measure_speed_reports_every_stage_against_the_forward_pass():
    import torch

    from sensitivity.models import load_model
    from sensitivity.paper.speed import measure_speed

    model = load_model("efficientnet_lite0", weights="random")
    images = torch.randn(1, 3, 32, 32)
    table = measure_speed(model, images, ("class", "gestalt"), "max", 8,
                          {"centre": lambda maps: np.tile([0.2, 0.2, 0.8, 0.8], (len(maps), 1))}, warmup=0, repeats=1)
    stages = set(zip(table["stage"], table["target"]))
    assert ("forward (classification)", "") in stages and ("map + class (forward + backward)", "gestalt") in stages
    assert ("image → box (centre)", "class") in stages and ("map → box only (centre)", "") in stages
    forward = table.set_index("stage").loc["forward (classification)"]
    assert forward["time_vs_forward"] == 1.0 and (table["images_per_s"] > 0).all()
