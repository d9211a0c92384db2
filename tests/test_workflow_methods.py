"""The comparison target `results/{dataset}_methods.csv` end to end: every map method with every box method on
real demo photos, its consistency with the CorLoc table of the same maps, and what a method setting reruns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image
from test_workflow import copy_project, markdown_rows, planned_jobs, snakemake

from sensitivity.map_methods import list_map_methods
from sensitivity.store import MapStore

PER_CLASS = 12
CHEAP = {
    "targets": ["mini"],
    "datasets": {"mini": {"kind": "folder", "roots": ["mini/kangaroo", "mini/raccoon"], "target": "gestalt",
                          "aggregate": "max", "split": {"fractions": [0.5, 0.25, 0.25], "seed": 0}}},
    "map_methods": {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2}},
    "comparison": {"thresholds": 20, "speed": {"batch_size": 4, "warmup": 0, "repeats": 1}},
    "extraction": {"shards": 1},
    "evaluation": {"split_seeds": [0, 1]},
    # 7 methods x 3 fits (the table and two seeds): a small grid and 2 folds keep the plumbing quick
    "regression": {"grid": {"alpha": [1.0, 100.0], "pool": [7], "normalize": ["max"],
                            "embedding_components": [0, 16]},
                   "selection": {"folds": 2}},
}


@pytest.fixture(scope="module")
def methods_run(tmp_path_factory, make_demo_subset) -> Path:
    """The comparison and the CorLoc table of 12 + 12 demo photos, all seven map methods, cheap settings."""
    workdir = copy_project(tmp_path_factory.mktemp("methods") / "project")
    make_demo_subset(workdir / "mini", PER_CLASS)
    (workdir / "cheap.yaml").write_text(yaml.safe_dump(CHEAP))
    result = snakemake(workdir, "results/mini_methods.csv", "results/mini_corloc.csv", "results/mini_methods_seeds.csv",
                       configs=("cheap.yaml",), timeout=900)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


@pytest.mark.slow
def test_table_has_every_map_method_with_every_box_and_the_centre_box(methods_run) -> None:
    table = pd.read_csv(methods_run / "results" / "mini_methods.csv")
    expected = [[m, b] for m in list_map_methods() for b in ("heuristic", "wsol", "learned")] + [["none", "centre"]]
    assert table[["map_method", "box_method"]].values.tolist() == expected
    assert (table["n_test"] == table["n_test"].iloc[0]).all() and table["n_test"].iloc[0] >= 5
    for column in ("gt_known_loc", "maxboxacc_v2", "boxacc_30", "boxacc_50", "boxacc_70", "corloc"):
        assert table[column].between(0, 100).all(), column
    fixed = table[table["box_method"] != "wsol"]  # one box per image: a stricter IoU never finds more
    assert (fixed["boxacc_30"] >= fixed["boxacc_50"]).all() and (fixed["boxacc_50"] >= fixed["boxacc_70"]).all()
    assert table["top1_loc"].isna().all()  # raccoon and kangaroo are not ImageNet classes: no synset mapping
    wsol = table[table["box_method"] == "wsol"]
    assert (wsol["maxboxacc_v2_tau_on_test"] >= wsol["maxboxacc_v2"] - 1e-9).all()  # τ chosen on test: optimistic
    mapped = table[table["map_method"] != "none"]
    assert (mapped["images_per_s"] > 0).all() and (mapped["x_forward"] > 0).all()
    costly = mapped.set_index(["map_method", "box_method"])["x_forward"]
    assert costly["smoothgrad", "heuristic"] > costly["gradient", "heuristic"] > costly["cam", "heuristic"]

    rows = markdown_rows((methods_run / "results" / "mini_methods.md").read_text())
    assert [row[:2] for row in rows[:len(table)]] == expected
    with Image.open(methods_run / "results" / "mini_methods.png") as image:
        assert image.format == "PNG"


@pytest.mark.slow
def test_own_method_rows_equal_the_corloc_table_of_the_same_maps(methods_run) -> None:
    """One core: the comparison's rows of the dataset's own map method (the default, guided_backprop) and its
    centre box are the evaluate stage's CorLoc table."""
    methods = pd.read_csv(methods_run / "results" / "mini_methods.csv").set_index(["map_method", "box_method"])
    corloc = pd.read_csv(methods_run / "results" / "mini_corloc.csv").set_index("class").loc["Average"]
    own = MapStore(methods_run / "results" / "mini" / "maps" / "1-of-1.zarr").attrs["method"]
    assert own == "guided_backprop"
    assert methods.loc[(own, "learned"), "corloc"] == pytest.approx(corloc["corloc_regression"], abs=1e-3)
    assert methods.loc[(own, "heuristic"), "corloc"] == pytest.approx(corloc["corloc_heuristic"], abs=1e-3)
    assert methods.loc[("none", "centre"), "corloc"] == pytest.approx(corloc["corloc_centre"], abs=1e-3)


@pytest.mark.slow
def test_seed_study_repeats_the_table_on_its_own_seed(methods_run) -> None:
    """Split seed 0 is the dataset's own split: the seed study's rows for it are the comparison table's."""
    table = pd.read_csv(methods_run / "results" / "mini_methods.csv").set_index(["map_method", "box_method"])
    seeds = pd.read_csv(methods_run / "results" / "mini_methods_seeds.csv")
    assert sorted(seeds["seed"].unique()) == [0, 1] and len(seeds) == 2 * len(table)
    own = seeds[seeds["seed"] == 0].set_index(["map_method", "box_method"])
    for column in ("gt_known_loc", "maxboxacc_v2", "corloc"):
        assert own[column].to_numpy() == pytest.approx(table.loc[own.index, column].to_numpy(), abs=1e-3), column
    markdown = (methods_run / "results" / "mini_methods_seeds.md").read_text()
    assert "| gradient | learned |" in markdown and " ± " in markdown


@pytest.mark.slow
def test_each_method_has_its_own_stores_recording_how_they_were_made(methods_run) -> None:
    results = methods_run / "results"
    for method in list_map_methods():
        folder = results / ("mini" if method == "guided_backprop" else f"mini__{method}") / "maps"
        for store_path in sorted(folder.glob("*.zarr")):
            attrs = MapStore(store_path).attrs
            assert attrs["method"] == method and attrs["map_seconds"] > 0
            assert attrs["attention"] == (method not in ("gradcam", "cam"))
        assert len(list(folder.glob("*.zarr"))) == 1
    assert MapStore(results / "mini__smoothgrad" / "maps" / "1-of-1.zarr").attrs["method_settings"] == \
        {"samples": 2, "noise": 0.15, "seed": 0}


@pytest.mark.slow
def test_a_method_setting_reruns_only_that_method(methods_run) -> None:
    changed = CHEAP | {"map_methods": CHEAP["map_methods"] | {"smoothgrad": {"samples": 3}}}
    (methods_run / "changed.yaml").write_text(yaml.safe_dump(changed))
    result = snakemake(methods_run, "-n", "results/mini_methods.csv", configs=("changed.yaml",), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert planned_jobs(result.stdout + result.stderr) == {
        "extract_maps": 1, "fit_regressor": 1, "method_scores": 1, "methods_speed": 1, "methods_table": 1}


@pytest.mark.slow
def test_report_holds_the_table_and_the_figure(methods_run) -> None:
    result = snakemake(methods_run, "--report", "report.html", "results/mini_methods.csv", configs=("cheap.yaml",),
                       timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html = (methods_run / "report.html").read_text()
    assert "mini_methods.csv" in html and "mini_methods.png" in html and "accuracy against cost" in html
