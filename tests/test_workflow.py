"""The Snakemake workflow end to end on the shipped demo sample, and what reruns when the config changes.

The real workflow runs once per module (in a temporary copy of the project, with
tests/workflow_configs/demo_fast.yaml layered over config.yaml); the other tests read its results or
dry-run against it. The interrupted-extraction tests call the extraction stage as a library; the SIGKILL
tests kill a real Snakemake run (its whole process group) mid-extraction and mid-fit, and check that the
rerun redoes only the unfinished jobs and ends with the same results as the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from PIL import Image

import sensitivity.pipeline.extract as extract_module
from sensitivity import __version__
from sensitivity.datasets import read_manifest, read_split
from sensitivity.pipeline.extract import extract_shard
from sensitivity.pipeline.prepare import build_manifest
from sensitivity.regress import read_arrays
from sensitivity.store import MapStore, StoreError

REPO = Path(__file__).resolve().parents[1]
FAST = Path(__file__).parent / "workflow_configs" / "demo_fast.yaml"
SHARDS = ["1-of-2", "2-of-2"]
DOWNSTREAM = {"fit_regressor": 1, "evaluate": 1, "example_figure": 1, "all": 1}


def copy_project(dest: Path) -> Path:
    """The workflow, the package sources (rule inputs), the demo data (linked) and the published numbers,
    without results."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "envs", "sensitivity"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "data").mkdir()
    (dest / "data" / "demo").symlink_to(REPO / "data" / "demo", target_is_directory=True)
    shutil.copy2(REPO / "data" / "published_results.csv", dest / "data" / "published_results.csv")
    shutil.copy2(FAST, dest / "demo_fast.yaml")
    return dest


def snakemake_command(workdir: Path, *args: str, configs: tuple[Path | str, ...] = (), cores: int = 2) -> list[str]:
    return [sys.executable, "-m", "snakemake", *args, "--cores", str(cores), "--directory", str(workdir),
            "--configfile", "demo_fast.yaml", *map(str, configs)]


def make_demo_arguments() -> list[str]:
    """The Snakemake arguments of the Makefile's `make demo` (the README's first command), after `--cores N`."""
    lines = (REPO / "Makefile").read_text().splitlines()
    recipe = lines[lines.index("demo: setup") + 1:]
    words = next(line for line in recipe if "$(BIN)/snakemake" in line).split()
    words = words[words.index("$(BIN)/snakemake") + 1:]
    cores = words.index("--cores")
    return words[:cores] + words[cores + 2:]


def snakemake_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SNAKEMAKE")}


def snakemake(workdir: Path, *args: str, configs: tuple[Path | str, ...] = (), timeout: int = 600):
    """Run Snakemake in ``workdir`` (config.yaml + demo_fast.yaml + ``configs``); returns the process."""
    return subprocess.run(snakemake_command(workdir, *args, configs=configs), cwd=workdir, env=snakemake_env(),
                          capture_output=True, text=True, timeout=timeout)


def planned_jobs(output: str) -> dict[str, int]:
    """Job name → count from a dry run's "Job stats" table ({} when there is nothing to do)."""
    if "Nothing to be done" in output:
        return {}
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3  # title, header, dashes
    jobs = {}
    for line in lines[start:]:
        name, count = line.split()
        if name == "total":
            return jobs
        jobs[name] = int(count)
    raise AssertionError(f"no total row in the job stats:\n{output}")


def dry_run(workdir: Path, tmp_path: Path, override: dict | None = None) -> dict[str, int]:
    configs = ()
    if override is not None:
        path = tmp_path / "override.yaml"
        path.write_text(yaml.safe_dump(override))
        configs = (path,)
    result = snakemake(workdir, "-n", configs=configs, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return planned_jobs(result.stdout + result.stderr)


def markdown_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]  # skip header and rule
    return [[cell.strip().strip("*") for cell in row.strip("|").split("|")] for row in rows]


def tree_mtimes(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in [path, *path.rglob("*")]}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """A finished run of the workflow on the 120 demo photos: what `make demo` runs (the default target)."""
    workdir = copy_project(tmp_path_factory.mktemp("workflow") / "project")
    result = snakemake(workdir, *make_demo_arguments())
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


# --- the finished run -------------------------------------------------------------------------------


@pytest.mark.slow
def test_corloc_tables_agree_and_regression_beats_centre_box(demo_run) -> None:
    table = pd.read_csv(demo_run / "results" / "demo_corloc.csv")
    assert list(table.columns) == ["class", "n_images", "corloc_regression", "corloc_heuristic", "corloc_centre"]
    assert table["class"].tolist() == ["kangaroo", "raccoon", "Average", "All images"]
    per_class = table.iloc[:2]
    average = table.iloc[2]
    assert (per_class["n_images"] > 0).all() and average["n_images"] == per_class["n_images"].sum()
    for column in ("corloc_regression", "corloc_heuristic", "corloc_centre"):
        assert ((table[column] >= 0) & (table[column] <= 100)).all()
        assert average[column] == pytest.approx(per_class[column].mean(), abs=1e-3)

    markdown = (demo_run / "results" / "demo_corloc.md").read_text()
    assert "| class | test images | learned box, % | heuristic box, % | centre box, % |" in markdown
    rows = markdown_rows(markdown)
    assert [row[0] for row in rows] == table["class"].tolist()
    for row, expected in zip(rows, table.itertuples(index=False)):
        assert int(row[1]) == expected.n_images
        assert [float(v.split()[0]) for v in row[2:]] == pytest.approx(list(expected[2:]), abs=0.051)
    # which maps and which box model: the chosen grid point of fit_summary.json
    chosen = json.loads((demo_run / "results" / "demo" / "fit_summary.json").read_text())["chosen"]
    assert "Maps: efficientnet_lite0, guided_backprop (gestalt target, max aggregation)" in markdown
    if "ensemble" in chosen:
        assert f"Learned box: the average box of {len(chosen['members'])} ridge box models (" in markdown
    else:
        assert f"Learned box: {chosen['features']} features, ridge, alpha {chosen['alpha']:g}" in markdown
    assert "Wilson 95 % interval" in markdown and "Few test images: one image moves" in markdown

    # the paper's point, on genuine photos: the learned map beats the prior-only centre box
    assert average["corloc_regression"] > average["corloc_centre"], table.to_string()


@pytest.mark.slow
def test_predictions_have_one_row_per_test_image_and_class(demo_run) -> None:
    results = demo_run / "results"
    predictions = pd.read_csv(results / "demo_predictions.csv", dtype={"image_id": str, "label": str})
    manifest = read_manifest(results / "demo" / "manifest.csv")
    split = read_split(results / "demo" / "split.csv")
    assert len(manifest) == 120 and len(split) == 120
    test_rows = manifest[manifest["image_id"].map(split) == "test"]
    assert sorted(zip(predictions["image_id"], predictions["label"])) == \
        sorted(zip(test_rows["image_id"], test_rows["label"]))
    table = pd.read_csv(results / "demo_corloc.csv").set_index("class")
    assert len(predictions) == table.loc["Average", "n_images"]
    for label, group in predictions.groupby("label"):
        assert 100 * group["regression_correct"].mean() == pytest.approx(table.loc[label, "corloc_regression"],
                                                                         abs=1e-3)


@pytest.mark.slow
def test_skipped_inputs_table_is_empty_for_the_demo(demo_run) -> None:
    skipped = pd.read_csv(demo_run / "results" / "demo_skipped.csv")
    assert list(skipped.columns) == ["stage", "path", "reason"] and skipped.empty


@pytest.mark.slow
def test_example_figure_is_a_png(demo_run) -> None:
    path = demo_run / "results" / "demo" / "examples.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.slow
def test_map_stores_have_the_documented_attributes(demo_run) -> None:
    maps = demo_run / "results" / "demo" / "maps"
    assert sorted(p.name for p in maps.iterdir()) == [f"{s}.zarr" for s in SHARDS]  # no .partial left
    ids = []
    for shard in SHARDS:
        store = MapStore(maps / f"{shard}.zarr")
        attrs = store.attrs
        assert attrs["complete"] is True and attrs["shard"] == shard
        assert attrs["model"] == "efficientnet_lite0" and attrs["target"] == "gestalt"
        assert attrs["aggregate"] == "max" and attrs["map_size"] == 56
        assert attrs["package_version"] == __version__
        assert attrs["preprocessing"]["size"] == 224 and attrs["preprocessing"]["mode"] == "squash"
        assert {"mean", "std"} <= set(attrs["preprocessing"])
        assert attrs["skipped"] == [] and store.valid.all()
        raw = zarr.open_group(maps / f"{shard}.zarr", mode="r")["maps"]
        assert raw.dtype == np.float16 and raw.shape == (len(store), 56, 56)
        ids += store.image_ids.tolist()
    assert len(ids) == len(set(ids)) == 120


@pytest.mark.slow
def test_finished_run_has_nothing_to_do(demo_run, tmp_path) -> None:
    assert dry_run(demo_run, tmp_path) == {}


@pytest.mark.slow
def test_report_after_make_demo_opens_on_what_ran_and_how_well(demo_run, tmp_path) -> None:
    """The README's report command, right after `make demo`: a landing page with the CorLoc table, captions."""
    report = tmp_path / "report.html"
    result = snakemake(demo_run, "--report", str(report), timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    text = report.read_text()
    table = pd.read_csv(demo_run / "results" / "demo_corloc.csv").set_index("class")
    # the landing page: the description and the demo's table (its Average row) with its notes
    average_cell = f'text-align:right\\">{table.loc["Average", "corloc_regression"]:.1f}</th>'
    for words in ("how well it localized objects", "Dataset demo", "<h3>CorLoc on demo (test split)</h3>",
                  "learned box, %", average_cell, "Maps: efficientnet_lite0, guided_backprop", "Learned box: "):
        assert words in text, words
    for caption in ("CorLoc per class on the test split", "true boxes green, the learned box red",
                    "left out as bad input"):
        assert caption in text, caption


# --- what a config change reruns --------------------------------------------------------------------

# new maps also mean a new list of inputs the extraction skipped (results/<dataset>_skipped.csv)
EXTRACT_AND_DOWNSTREAM = {"extract_maps": 2, "collect_skipped": 1, **DOWNSTREAM}
RERUNS = {
    "regression grid": ({"regression": {"grid": {"alpha": [0.5, 1.0]}}}, DOWNSTREAM),
    "regression solver": ({"regression": {"solver": "sgd"}}, DOWNSTREAM),
    "heuristic sigma": ({"evaluation": {"heuristic": {"sigma": 3.0}}},
                        {"evaluate": 1, "example_figure": 1, "all": 1}),
    "iou threshold": ({"evaluation": {"iou_threshold": 0.4}}, DOWNSTREAM),
    "examples per class": ({"report": {"examples_per_class": 3}}, {"example_figure": 1, "all": 1}),
    "map target": ({"datasets": {"demo": {"target": "class"}}}, EXTRACT_AND_DOWNSTREAM),
    "map aggregate": ({"datasets": {"demo": {"aggregate": "mean"}}}, EXTRACT_AND_DOWNSTREAM),
    "model": ({"model": {"name": "vgg16"}}, EXTRACT_AND_DOWNSTREAM),
    "split seed": ({"datasets": {"demo": {"split": {"seed": 1}}}}, {"split": 1, **DOWNSTREAM}),
    "extraction workers": ({"extraction": {"workers": 1}}, {}),
    "extraction batch size and device": ({"extraction": {"batch_size": 4, "device": "cpu"}}, {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", list(RERUNS))
def test_config_change_reruns_only_what_depends_on_it(demo_run, tmp_path, change) -> None:
    override, expected = RERUNS[change]
    assert dry_run(demo_run, tmp_path, override) == expected


@pytest.fixture(scope="module")
def moved_run(demo_run, tmp_path_factory) -> Path:
    """The finished project copied elsewhere (mtimes and Snakemake's records kept)."""
    dest = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(demo_run, dest, symlinks=True)
    return dest


@pytest.mark.slow
def test_moved_project_has_nothing_to_do(moved_run, tmp_path) -> None:
    assert dry_run(moved_run, tmp_path) == {}


@pytest.mark.slow
def test_regression_change_reruns_fit_but_keeps_the_maps(moved_run, tmp_path) -> None:
    results = moved_run / "results"
    stores = {shard: tree_mtimes(results / "demo" / "maps" / f"{shard}.zarr") for shard in SHARDS}
    kept = {name: (results / "demo" / name).stat().st_mtime_ns for name in ("manifest.csv", "split.csv")}
    rewritten = [results / "demo_corloc.csv", results / "demo_corloc.md", results / "demo_predictions.csv",
                 results / "demo" / "regressor.npz", results / "demo" / "fit_summary.json",
                 results / "demo" / "examples.png"]
    before = {path: path.stat().st_mtime_ns for path in rewritten}
    time.sleep(0.05)

    override = tmp_path / "alpha.yaml"
    override.write_text("regression:\n  grid:\n    alpha: [3.0]\n")
    result = snakemake(moved_run, configs=(override,))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    assert planned_jobs(result.stdout + result.stderr) == DOWNSTREAM

    for shard in SHARDS:
        assert tree_mtimes(results / "demo" / "maps" / f"{shard}.zarr") == stores[shard]
    assert {name: (results / "demo" / name).stat().st_mtime_ns for name in kept} == kept
    for path in rewritten:
        assert path.stat().st_mtime_ns > before[path], path
    summary = json.loads((results / "demo" / "fit_summary.json").read_text())
    # the grid's candidates take the new alpha; the shipped prior's keep theirs (its own, and regression.prior's)
    alphas = {(m.get("start"), m["alpha"]) for c in summary["candidates"] for m in c.get("members", [c])}
    assert {alpha for start, alpha in alphas if start is None} == {3.0}
    assert {alpha for start, alpha in alphas if start is not None} <= {10.0, 100.0, 1000.0, 10000.0}
    assert pd.read_csv(results / "demo_corloc.csv")["class"].tolist() == ["kangaroo", "raccoon", "Average", "All images"]
    result = snakemake(moved_run, "-n", configs=(override,), timeout=120)
    assert planned_jobs(result.stdout + result.stderr) == {}


# --- config validation ------------------------------------------------------------------------------

INVALID = {
    "unknown top-level key": ("foo: 1\n", "'foo' was unexpected"),
    "unknown extraction key": ("extraction:\n  shard_count: 3\n", "'shard_count' was unexpected"),
    "bad aggregate": ("datasets:\n  demo:\n    aggregate: median\n", "'median' is not one of ['max', 'mean']"),
    "bad enum": ("extraction:\n  device: tpu\n", "'tpu' is not one of"),
    "unknown map method": ("map_methods:\n  saliency: {}\n", "'saliency' was unexpected"),
    "unknown map method setting": ("map_methods:\n  smoothgrad: {sample: 4}\n", "'sample' was unexpected"),
    "bad map method setting": ("map_methods:\n  integrated_gradients: {steps: 0}\n", "0 is less than the minimum of 1"),
}

# Valid by the schema, but naming what the config does not have: stopped before any job, the key named.
INCONSISTENT = {
    "dataset method not among map_methods": ("datasets:\n  demo:\n    method: saliency\n",
                                              "datasets.demo.method: 'saliency' is not one of map_methods"),
    "compared method not among map_methods": ("comparison:\n  methods: [gradient, saliency]\n",
                                              "comparison.methods: ['saliency'] not in map_methods"),
}


@pytest.fixture(scope="module")
def fresh_project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("fresh") / "project")


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_config_fails_before_any_job(fresh_project, tmp_path, case) -> None:
    text, message = INVALID[case]
    override = tmp_path / "bad.yaml"
    override.write_text(text)
    result = snakemake(fresh_project, configs=(override,), timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error validating config file" in output and message in output, output[:3000]
    # a few lines: the key and value, the problem, what is allowed, where it is documented (no schema dump)
    assert "documented in workflow/schemas/config.schema.yaml" in output and len(output.splitlines()) <= 10, output
    assert not (fresh_project / "results").exists() and not (fresh_project / "logs").exists()


@pytest.mark.parametrize("case", list(INCONSISTENT))
def test_inconsistent_config_fails_before_any_job_naming_the_key(fresh_project, tmp_path, case) -> None:
    text, message = INCONSISTENT[case]
    override = tmp_path / "bad.yaml"
    override.write_text(text)
    result = snakemake(fresh_project, configs=(override,), timeout=120)
    assert result.returncode != 0 and message in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    assert not (fresh_project / "results").exists() and not (fresh_project / "logs").exists()


def test_documented_null_options_validate(fresh_project, tmp_path) -> None:
    """Options the config documents as "null to skip" pass validation (defaults are not forced into null)."""
    override = tmp_path / "nulls.yaml"
    override.write_text("paper:\n  centre_box_check: null\n  datasets: [demo]\n")  # no ../shared in the copy
    result = snakemake(fresh_project, "-n", "paper", configs=(override,), timeout=120)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "paper_centre_check" not in result.stdout + result.stderr


# --- an interrupted extraction never leaves a half-written store behind -----------------------------


@pytest.fixture(scope="module")
def small_manifest(tmp_path_factory, make_demo_subset) -> Path:
    root = tmp_path_factory.mktemp("interrupt")
    roots = make_demo_subset(root / "data", 2)  # 4 images: 2 batches of 2
    build_manifest({"kind": "folder", "roots": [str(r) for r in roots]}, root / "manifest.csv", root / "skip.csv")
    return root / "manifest.csv"


EXTRACT = {"model": {"name": "efficientnet_lite0", "weights": None}, "target": "gestalt", "aggregate": "max",
           "map_size": 56, "batch_size": 2, "device": "cpu", "num_workers": 0}


@pytest.fixture(scope="module")
def uninterrupted(small_manifest, lite0) -> Path:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(extract_module, "load_model", lambda *args, **kwargs: lite0)
        return extract_shard(small_manifest, small_manifest.parent / "reference.zarr", "1-of-1", **EXTRACT)


def assert_same_store(path: Path, reference: Path) -> None:
    store, ref = MapStore(path), MapStore(reference)
    assert store.image_ids.tolist() == ref.image_ids.tolist()
    assert np.array_equal(store.read(0, len(store)), ref.read(0, len(ref)))
    assert np.array_equal(zarr.open_group(path, mode="r")["maps"][:], zarr.open_group(reference, mode="r")["maps"][:])
    assert np.array_equal(store.scale, ref.scale) and store.valid.all()
    assert without_timing(store.attrs) == without_timing(ref.attrs)
    assert store.attrs["map_seconds"] > 0


def without_timing(attrs: dict) -> dict:
    """A store's attributes but the seconds its maps took, which no two runs share."""
    return {key: value for key, value in attrs.items() if key != "map_seconds"}


class Interrupted(RuntimeError):
    pass


def test_interrupted_extraction_leaves_only_a_partial_store(small_manifest, uninterrupted, lite0, monkeypatch,
                                                            tmp_path) -> None:
    real = extract_module.compute_maps
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first batch is already written
            raise Interrupted("killed mid-shard")
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_module, "load_model", lambda *args, **kwargs: lite0)
    monkeypatch.setattr(extract_module, "compute_maps", failing)
    store = tmp_path / "1-of-1.zarr"
    with pytest.raises(Interrupted):
        extract_shard(small_manifest, store, "1-of-1", **EXTRACT)
    partial = tmp_path / "1-of-1.zarr.partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]
    with pytest.raises(StoreError, match="incomplete"):
        MapStore(partial)
    with pytest.raises(StoreError, match="no map store"):
        MapStore(store)

    monkeypatch.setattr(extract_module, "compute_maps", real)
    assert extract_shard(small_manifest, store, "1-of-1", **EXTRACT) == store
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.name]
    assert_same_store(store, uninterrupted)


@pytest.mark.slow
def test_killed_extraction_process_leaves_only_a_partial_store(small_manifest, tmp_path) -> None:
    store = tmp_path / "1-of-1.zarr"
    partial = tmp_path / "1-of-1.zarr.partial"
    script = textwrap.dedent(f"""
        import time
        import sensitivity.pipeline.extract as extract
        real = extract.compute_maps
        def slow(*args, **kwargs):
            result = real(*args, **kwargs)
            time.sleep(30)  # stays mid-shard after its first batch until killed
            return result
        extract.compute_maps = slow
        extract.extract_shard({str(small_manifest)!r}, {str(store)!r}, "1-of-1", **{EXTRACT!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (partial / "maps" / "zarr.json").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "extraction never started"
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert sorted(p.name for p in tmp_path.iterdir()) == [partial.name]
    with pytest.raises(StoreError, match="incomplete"):
        MapStore(partial)
    with pytest.raises(StoreError):
        MapStore(store)
    # (that a rerun replaces the leftover .partial by a whole, identical store is tested above)


# --- PASCAL VOC 2007 in the devkit layout, split by its official lists (plumbing on the shared sample) ---

SHARED = REPO.parent / "shared"


@pytest.fixture(scope="module")
def voc_sample_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """configs/voc2007_sample.yaml as documented, in a project copy that sees ../shared like the checkout."""
    if not (SHARED / "data" / "voc2007").is_dir():
        pytest.skip(f"{SHARED / 'data' / 'voc2007'} is absent (fresh clone without the shared folder)")
    parent = tmp_path_factory.mktemp("voc")
    workdir = copy_project(parent / "project")
    (parent / "shared").symlink_to(SHARED, target_is_directory=True)
    (workdir / "configs").mkdir()
    shutil.copy2(REPO / "configs" / "voc2007_sample.yaml", workdir / "configs")
    (workdir / "one_shard.yaml").write_text("extraction:\n  shards: 1\n")  # 5 images: one model load
    configs = ("configs/voc2007_sample.yaml", "one_shard.yaml")
    result = snakemake(workdir, "results/voc2007_corloc.csv", configs=configs)
    return workdir, result


@pytest.mark.slow
@pytest.mark.shared
def test_voc2007_sample_runs_on_the_official_lists(voc_sample_run, tmp_path) -> None:
    workdir, result = voc_sample_run
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    results = workdir / "results"
    ids = ["000342", "001763", "003123", "004545", "008591"]
    assert read_split(results / "voc2007" / "split.csv").to_dict() == {f"voc2007/{i}": "test" for i in ids}
    skipped = pd.read_csv(results / "voc2007_skipped.csv")
    assert len(skipped) == 2501 + 2510 + 4947 and set(skipped["stage"]) == {"manifest"}
    assert skipped["path"].map(lambda p: Path(p).name).value_counts().to_dict() == \
        {"train.txt": 2501, "val.txt": 2510, "test.txt": 4947}
    summary = json.loads((results / "voc2007" / "fit_summary.json").read_text())
    # the shipped box model is a candidate here too (Gestalt Guided Backprop maps): taken as it is, it was
    # fitted on its 910 ImageNet photos, anything else on the 12 test images
    chosen = summary["chosen"]
    as_is = any(member.get("start") == "as is" for member in chosen.get("members", [chosen]))
    assert (summary["fitted_on"], summary["chosen_on"], summary["n_fit_rows"]) == (
        ["test"], "5-fold cross-validation on test", 910 if as_is else 12)
    table = pd.read_csv(results / "voc2007_corloc.csv")
    assert table["class"].tolist()[-2:] == ["Average", "All images"] and table["n_images"].iloc[-1] == 12
    assert "tvmonitor" not in set(table["class"]) and "chair" not in set(table["class"])  # difficult only
    markdown = (results / "voc2007_corloc.md").read_text()
    assert "not a held-out result" in markdown and "9958 input(s) skipped" in markdown

    # without fit_on_test, the empty train split stops the run at the split stage, naming the list
    override = tmp_path / "no_fit_on_test.yaml"
    override.write_text("datasets:\n  voc2007:\n    fit_on_test: false\n")
    failed = snakemake(workdir, "results/voc2007_corloc.csv",
                       configs=("configs/voc2007_sample.yaml", "one_shard.yaml", override), timeout=120)
    log = (workdir / "logs" / "voc2007" / "split.log").read_text()
    assert failed.returncode != 0 and "train.txt: the train split is empty" in log, log


# --- SIGKILL mid-run: the rerun redoes only what was unfinished --------------------------------------

# What a user runs after a kill (README, "The workflow"): `snakemake --unlock`, then the same command with
# --rerun-incomplete, which redoes a job whose outputs exist but that Snakemake never saw finish.
AFTER_KILL = ("--rerun-incomplete",)


def session_members(session: int) -> list[int]:
    """Live (non-zombie) processes of a session, from /proc (empty where there is no /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            state, _ppid, _group, sid = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if state != "Z" and int(sid) == session:
                members.append(int(stat.parent.name))
    return members


def kill_midway(workdir: Path, *args: str, ready, cores: int = 2, timeout: float = 300) -> str:
    """Run Snakemake in a session of its own; SIGKILL the whole process group once ``ready()``; its output.

    Fails, with Snakemake's output, if the run ends (or ``timeout`` s pass) before ``ready()`` holds.
    """
    log = workdir / "killed_run.log"
    with log.open("w") as out:
        process = subprocess.Popen(snakemake_command(workdir, *args, cores=cores), cwd=workdir, env=snakemake_env(),
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"Snakemake ended (exit {process.returncode}) before the kill point:\n"
                            f"{log.read_text()[-5000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no kill point within {timeout} s:\n{log.read_text()[-5000:]}")
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 30
    while session_members(process.pid):  # the jobs (Snakemake's children) die with it
        assert time.monotonic() < deadline, f"processes survived the kill: {session_members(process.pid)}"
        time.sleep(0.05)
    return log.read_text()


def assert_same_results(workdir: Path, reference: Path) -> None:
    """The regressor, its summary, the CorLoc tables and the predictions equal those of ``reference``."""
    results, expected = workdir / "results", reference / "results"
    for name in ("demo/fit_summary.json", "demo_corloc.csv", "demo_corloc.md", "demo_skipped.csv"):
        assert (results / name).read_text() == (expected / name).read_text(), name
    # predictions give each image's path, which starts with the location of the project that read the images
    predictions = [(path / "demo_predictions.csv").read_text().replace(str(workdir), "<project>")
                   .replace(str(reference), "<project>") for path in (results, expected)]
    assert predictions[0] == predictions[1]
    model, ref = (read_arrays(path / "demo" / "regressor.npz") for path in (results, expected))  # either kind
    assert sorted(model) == sorted(ref)
    for key in model:
        np.testing.assert_array_equal(model[key], ref[key], err_msg=key)


@pytest.mark.slow
def test_killed_extraction_reruns_only_the_unfinished_shard(demo_run, tmp_path) -> None:
    workdir = copy_project(tmp_path / "project")
    maps = workdir / "results" / "demo" / "maps"

    def one_store_published_one_half_written() -> bool:
        names = [p.name for p in maps.iterdir()] if maps.is_dir() else []
        return any(name.endswith(".zarr") for name in names) and \
            any((maps / name / "maps" / "c").is_dir() for name in names if name.endswith(".partial"))

    # on one core the shards run one after the other: the kill lands in the second, after its first batch
    killed = kill_midway(workdir, ready=one_store_published_one_half_written, cores=1)
    names = sorted(p.name for p in maps.iterdir())
    assert names in (["1-of-2.zarr", "2-of-2.zarr.partial"], ["1-of-2.zarr.partial", "2-of-2.zarr"]), killed
    (done,) = [shard for shard in SHARDS if f"{shard}.zarr" in names]
    (unfinished,) = [shard for shard in SHARDS if shard != done]
    with pytest.raises(StoreError, match="incomplete"):
        MapStore(maps / f"{unfinished}.zarr.partial")
    finished = maps / f"{done}.zarr"
    assert_same_store(finished, demo_run / "results" / "demo" / "maps" / f"{done}.zarr")
    kept, inode = tree_mtimes(finished), finished.stat().st_ino
    split_done = (workdir / "results" / "demo" / "split.csv").exists()  # one core: nothing else was running

    # Snakemake's lock outlives a SIGKILL: the rerun refuses until `snakemake --unlock`
    locked = snakemake(workdir, *AFTER_KILL, timeout=120)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr, locked.stderr[-3000:]
    unlock = snakemake(workdir, "--unlock", timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-3000:]

    rerun = snakemake(workdir, *AFTER_KILL)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-5000:]
    assert planned_jobs(output) == {"extract_maps": 1, "collect_skipped": 1, **DOWNSTREAM} | \
        ({} if split_done else {"split": 1})
    assert re.findall(r"scatteritem=(\S+)", output) == [unfinished]
    assert tree_mtimes(finished) == kept and finished.stat().st_ino == inode  # the finished store is untouched
    assert sorted(p.name for p in maps.iterdir()) == [f"{shard}.zarr" for shard in SHARDS]
    for shard in SHARDS:
        assert_same_store(maps / f"{shard}.zarr", demo_run / "results" / "demo" / "maps" / f"{shard}.zarr")
    assert_same_results(workdir, demo_run)


@pytest.mark.slow
def test_killed_fit_reruns_only_the_fit_and_what_follows(demo_run, tmp_path) -> None:
    workdir = tmp_path / "project"
    shutil.copytree(demo_run, workdir, symlinks=True)  # a finished project; -R fit_regressor redoes its fit
    results = workdir / "results"
    model, log = results / "demo" / "regressor.npz", workdir / "logs" / "demo" / "fit.log"
    stores = {shard: tree_mtimes(results / "demo" / "maps" / f"{shard}.zarr") for shard in SHARDS}
    inputs = [results / "demo" / "manifest.csv", results / "demo" / "split.csv", results / "demo_skipped.csv"]
    kept = {path: path.stat().st_mtime_ns for path in inputs}
    started = time.time_ns()

    summary = results / "demo" / "fit_summary.json"

    def fitting_candidates() -> bool:
        # Snakemake deletes a job's outputs and log before starting it; the fit script then opens its log anew
        with contextlib.suppress(FileNotFoundError):
            return log.stat().st_mtime_ns >= started and "candidate setting 2:" in log.read_text()
        return False

    killed = kill_midway(workdir, "--forcerun", "fit_regressor", ready=fitting_candidates)
    # killed while cross-validating the candidates: nothing of the fit was published
    assert "candidate setting 2:" in log.read_text() and "wrote" not in log.read_text()
    assert not model.exists() and not summary.exists(), f"the killed fit left outputs:\n{killed[-5000:]}"

    unlock = snakemake(workdir, "--unlock", timeout=120)
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = snakemake(workdir, *AFTER_KILL)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-5000:]
    # no extraction, manifest, split or skipped-inputs job; the fit runs again although the previous run's
    # tables are still there, because `all` asks for the regressor too
    assert planned_jobs(output) == DOWNSTREAM
    assert {shard: tree_mtimes(results / "demo" / "maps" / f"{shard}.zarr") for shard in SHARDS} == stores
    assert {path: path.stat().st_mtime_ns for path in inputs} == kept
    assert not list(results.rglob("*.partial"))
    assert_same_results(workdir, demo_run)


# --- what a newcomer meets first: console noise, missing folders, failing jobs --------------------------


def test_profile_prints_no_empty_shell_commands(fresh_project) -> None:
    result = snakemake(fresh_project, "-n", "--workflow-profile", "workflow/profiles/default", timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "rule extract_maps" in output, output[-3000:]
    assert "Shell command: None" not in output


@pytest.mark.slow
def test_missing_dataset_root_fails_before_any_job_and_keeps_finished_results(demo_run, tmp_path) -> None:
    workdir = tmp_path / "project"
    shutil.copytree(demo_run, workdir, symlinks=True)
    results = workdir / "results"
    before = {path: path.stat().st_mtime_ns for path in results.rglob("*")}
    override = tmp_path / "typo.yaml"
    override.write_text("datasets:\n  demo:\n    roots: [data/demo/raccoon, data/demo/kangarooo]\n")
    for args in (("-n",), ()):
        result = snakemake(workdir, *args, configs=(override,), timeout=120)
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert (f"datasets.demo.roots[1]: data/demo/kangarooo does not exist (relative to {workdir})"
                in output), output
        assert len(output.splitlines()) <= 6, output
    assert {path: path.stat().st_mtime_ns for path in results.rglob("*")} == before  # nothing rerun or removed
    assert dry_run(workdir, tmp_path) == {}  # the path fixed: nothing to do, no extraction


def test_failing_job_says_why_on_the_console(tmp_path) -> None:
    workdir = copy_project(tmp_path / "project")
    (workdir / "empty" / "raccoon").mkdir(parents=True)
    override = tmp_path / "empty.yaml"
    override.write_text("datasets:\n  demo:\n    roots: [empty/raccoon]\n")
    result = snakemake(workdir, "results/demo/manifest.csv", configs=(override,), timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert (f"DatasetError: {workdir / 'empty' / 'raccoon'}: not a folder dataset: needs images/ and annotations/ "
            f"sub-folders (traceback in logs/demo/manifest.log)") in output, output[-3000:]
