"""benchmarks/gpu_check.sh in its CPU quick mode (the CI run of the GPU check): every part's CSV, plausible
numbers, the summary, and a part stopped by its timeout leaving the others' files."""

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
import gpu_check  # the benchmark script, importable once its folder is on the path

PARTS = ["maps", "peers", "extraction", "cuda_tests"]
MAP_STAGES = {"class map", "gestalt map", "class map + Grad-CAM", "gestalt map + Grad-CAM"}

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def run_check(out: Path, imagenet: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("GPU_CHECK_")}
    environment |= {"PYTHON": sys.executable, "GPU_CHECK_IMAGENET_ROOT": str(imagenet), **env}
    return subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick", str(out)],
                          check=False, env=environment, capture_output=True, text=True, timeout=1300)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, shared_data) -> Path:
    """The quick run, each part given 300 s: what is checked here is the output, and on a loaded 2-core machine
    a part can take several times its default quick-mode timeout (measured: docs/PERFORMANCE.md, "GPU")."""
    out = tmp_path_factory.mktemp("gpu_check")
    timeouts = {f"GPU_CHECK_TIMEOUT_{part.upper()}": "300" for part in PARTS}
    process = run_check(out, shared_data / "imagenet_loc", **timeouts)
    assert process.returncode == 0, process.stderr
    return out


def read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name)


def assert_positive_finite(values: pd.Series) -> None:
    assert len(values) and all(math.isfinite(value) and value > 0 for value in values), values.tolist()


def test_every_part_passes_and_the_summary_says_so(quick_run):
    status = read(quick_run, "status.csv")
    assert status["part"].tolist() == PARTS
    assert status["status"].tolist() == ["pass"] * len(PARTS), status
    summary = (quick_run / "summary.md").read_text()
    assert "Device: CPU" in summary and "torch " in summary
    for part in PARTS:
        assert f"| {part} | pass |" in summary
    assert "Last lines of" not in summary


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
    assert row.images == 8 and row.batch_size == 4 and row.device == "cpu"
    for value in (row.extraction_images_per_s, row.pure_map_images_per_s, row.map_seconds_in_extraction,
                  row.extract_job_s):
        assert_positive_finite(pd.Series([value]))
    assert row.extraction_to_pure == pytest.approx(row.extraction_images_per_s / row.pure_map_images_per_s, rel=1e-5)
    assert 0 < row.non_map_s < row.extract_job_s


def test_cuda_tests_are_selected_and_skip_without_a_gpu(quick_run):
    tests = read(quick_run, "cuda_tests.csv")
    assert list(tests.columns) == gpu_check.TEST_COLUMNS
    assert len(tests) >= 4 and tests["test"].str.contains("test_cuda_autocast").all()
    assert (tests["outcome"] == "skipped").all()


def test_a_part_stopped_by_its_timeout_leaves_the_other_parts_files(tmp_path, shared_data):
    process = run_check(tmp_path, shared_data / "imagenet_loc", GPU_CHECK_PARTS="maps cuda_tests",
                        GPU_CHECK_TIMEOUT_MAPS="1", GPU_CHECK_TIMEOUT_CUDA_TESTS="300")
    assert process.returncode == 0, process.stderr
    status = read(tmp_path, "status.csv").set_index("part")
    assert status.loc["maps", "status"] == "timeout" and status.loc["maps", "exit_code"] == 124
    assert status.loc["cuda_tests", "status"] == "pass"
    assert len(read(tmp_path, "cuda_tests.csv")) >= 4
    summary = (tmp_path / "summary.md").read_text()
    assert "| maps | timeout |" in summary and "Last lines of logs/maps.log" in summary
