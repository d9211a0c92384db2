"""benchmarks/gpu_check.sh in its CPU quick mode (the CI run of the GPU check), run once: every part's CSV,
plausible numbers, the summary, and a part stopped by its timeout leaving the others' files. About 1.5 minutes on
2 idle cores; needs no ../shared (the quick extraction is of demo photos)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # the benchmark scripts, importable once their folder is on the path
import gpu_check_tests

PARTS = ["maps", "peers", "extraction", "cuda_tests"]
#: The scale-tree extraction, given 1 s in the test's run: a part stopped by its timeout between parts that pass.
STOPPED = "extraction_scale"
MAP_STAGES = {"class map", "gestalt map", "class map + Grad-CAM", "gestalt map + Grad-CAM"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """The one quick run, each part given 300 s (what is checked here is the output, and on a loaded 2-core
    machine a part can take several times its default quick-mode timeout), except the scale-tree extraction:
    1 s, less than its Python takes to start, so that it is stopped by its timeout."""
    out = tmp_path_factory.mktemp("gpu_check")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GPU_CHECK_")}
    environment |= {f"GPU_CHECK_TIMEOUT_{part.upper()}": "300" for part in PARTS}
    environment |= {"PYTHON": sys.executable, "GPU_CHECK_SCALE_ROOT": str(out / "scale_tree"),
                    "GPU_CHECK_TIMEOUT_EXTRACTION_SCALE": "1"}
    process = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick",
                              str(out)], check=False, env=environment, capture_output=True, text=True, timeout=1300)
    assert process.returncode == 0, process.stderr
    return out


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


def assert_positive_finite(values: pd.Series) -> None:
    assert len(values) and all(math.isfinite(value) and value > 0 for value in values), values.tolist()


def test_every_part_passes_and_the_summary_says_so(quick_run):
    status = read(quick_run, "status.csv").set_index("part")
    assert status.index.tolist() == ["maps", "peers", "extraction", STOPPED, "cuda_tests"]
    assert (status.loc[PARTS, "status"] == "pass").all(), status
    summary = (quick_run / "summary.md").read_text()
    assert "Device: CPU" in summary and "torch " in summary and "1 torch threads" in summary
    for part in PARTS:
        assert f"| {part} | pass |" in summary
        assert f"Last lines of logs/{part}.log" not in summary


def test_maps_of_both_models_cost_a_plausible_number_of_forward_passes(quick_run):
    maps = read(quick_run, "maps.csv")
    assert list(maps.columns) == gpu_check.MAPS_COLUMNS
    assert set(maps["model"]) == set(gpu_check.MODELS)
    for _, rows in maps.groupby("model"):
        assert set(rows["stage"]) == MAP_STAGES | {gpu_check.FORWARD}
    assert_positive_finite(maps["seconds_per_batch"])
    assert_positive_finite(maps["images_per_s"])
    assert (maps.loc[maps["stage"] == gpu_check.FORWARD, "ratio_to_forward"] == 1).all()
    ratios = maps.loc[maps["stage"].isin(MAP_STAGES), "ratio_to_forward"]
    assert ratios.between(1.0, 8.0).all(), maps[["model", "stage", "ratio_to_forward"]]
    memory = read(quick_run, "memory.csv")
    assert list(memory.columns) == gpu_check.MEMORY_COLUMNS and len(memory) == len(maps)
    assert memory["peak_mib"].isna().all() and memory["source"].str.startswith("NA").all()


def test_peers_are_timed_beside_our_map(quick_run):
    peers = read(quick_run, "peers.csv")
    assert list(peers.columns) == gpu_check.PEERS_COLUMNS
    assert set(peers["model"]) == set(gpu_check.MODELS)
    assert {"ours", "Captum Saliency", "GradCAM"} <= set(peers["method"])
    assert_positive_finite(peers["seconds_per_batch"])
    assert (peers.loc[peers["method"] == "ours", "time_vs_ours"] == 1).all()
    assert peers["note"].str.contains("same classes True").all()


def test_extraction_through_the_workflow_against_the_pure_map_rate(quick_run):
    extraction = read(quick_run, "extraction.csv")
    assert list(extraction.columns) == gpu_check.EXTRACTION_COLUMNS
    (row,) = extraction.itertuples()
    assert row.dataset == "demo photos" and row.images == 16 and row.batch_size == 4 and row.device == "cpu"
    for value in (row.extraction_images_per_s, row.pure_map_images_per_s, row.map_seconds_in_extraction,
                  row.extract_job_s):
        assert_positive_finite(pd.Series([value]))
    assert row.extraction_to_pure == pytest.approx(row.extraction_images_per_s / row.pure_map_images_per_s, rel=1e-5)
    assert 0 < row.non_map_s < row.extract_job_s
    assert "- demo photos: " in (quick_run / "summary.md").read_text()  # the extraction target's verdict line


def test_cuda_tests_are_selected_and_skip_without_a_gpu(quick_run):
    tests = read(quick_run, "cuda_tests.csv")
    assert list(tests.columns) == gpu_check_tests.TEST_COLUMNS
    assert len(tests) >= 4 and tests["test"].str.contains("test_cuda_autocast").all()
    assert (tests["outcome"] == "skipped").all()


def test_a_part_stopped_by_its_timeout_leaves_the_other_parts_files(quick_run):
    status = read(quick_run, "status.csv").set_index("part")
    assert status.loc[STOPPED, "status"] == "timeout" and status.loc[STOPPED, "exit_code"] == 124
    assert status.loc["cuda_tests", "status"] == "pass"  # the part after it still ran
    assert len(read(quick_run, "extraction.csv")) == 1  # and the one before keeps its row
    summary = (quick_run / "summary.md").read_text()
    assert f"| {STOPPED} | timeout |" in summary and f"Last lines of logs/{STOPPED}.log" in summary


def test_the_summary_judges_the_bf16_map_cost_against_its_target():
    """The bf16 verdict lines, which the CPU run (fp32 only) does not write."""
    stages = [gpu_check.FORWARD, "class map"]
    maps = pd.DataFrame({"model": ["vgg16"] * 2 + ["efficientnet_lite0"] * 2, "dtype": "bf16", "batch_size": 64,
                         "input_size": 224, "stage": stages * 2, "ratio_to_forward": [1, 2.0, 1, 2.3],
                         "images_per_s": [100.0, 50, 400, 174]})
    lines = gpu_check.maps_section(maps, None)
    assert "- vgg16, batch 64, bf16: class map 2.00× forward (target ≤ 2.1: met)" in lines
    assert "- efficientnet_lite0, batch 64, bf16: class map 2.30× forward (target ≤ 2.1: missed)" in lines
