"""The workflow through a real SLURM cluster (one node on this machine) with workflow/profiles/slurm.

tests/slurm/start_slurm.sh starts munged, slurmctld and slurmd (Debian packages slurmctld, slurmd,
slurm-client, munge; root needed), or reuses the cluster it started before. The demo then runs as SLURM
jobs and must give the same results as a local run. A second workflow submits two one-GPU jobs to the
node's single stand-in GPU: each must see its own device, and SLURM must run them one after the other.

Without SLURM (or when it cannot be started) the tests skip, saying why; with CI set they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = Path(__file__).resolve().parent / "slurm"
FAST = Path(__file__).resolve().parent / "workflow_configs" / "demo_fast.yaml"
# Used only when tests/workflow_configs/demo_fast.yaml is absent: a small grid, one thread per shard.
FAST_FALLBACK = {
    "targets": ["demo"],
    "extraction": {"shards": 2, "workers": 0},
    "regression": {"grid": {"alpha": [0.1, 1.0, 10.0], "pool": [7, 14], "normalize": ["max"],
                            "parameterisation": ["corners"]}},
}
TARGET = "results/demo_corloc.csv"
RUN_TIMEOUT_S = 900  # bound on one Snakemake run (SIGINT, so that Snakemake cancels its SLURM jobs)
# Poll SLURM every second at first (the plugin's default waits 40 s before the first status check).
FAST_POLL = ("--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1")
DEMO_RULES = ("manifest", "split", "extract_maps", "fit_regressor", "evaluate")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip, or fail in CI: there the SLURM tests must never be skipped silently."""
    if in_ci():
        pytest.fail(f"CI is set, so the SLURM tests may not skip: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_env() -> dict[str, str]:
    """Environment for commands talking to the test cluster; stops the cluster afterwards if it started it."""
    if shutil.which("bash") is None:
        unavailable("bash is not available")
    try:
        started = subprocess.run(["bash", str(SLURM_DIR / "start_slurm.sh")], capture_output=True, text=True,
                                 timeout=180)
    except subprocess.TimeoutExpired:
        unavailable("tests/slurm/start_slurm.sh did not finish within 180 s")
    if started.returncode == 2:
        unavailable(f"SLURM is not installed: {started.stderr.strip()}")
    if started.returncode != 0:
        unavailable(f"could not start SLURM (exit {started.returncode}):\n{started.stderr.strip()[-3000:]}")
    match = re.search(r"export SLURM_CONF=(\S+)", started.stdout)
    assert match, f"start_slurm.sh printed no SLURM_CONF:\n{started.stdout}\n{started.stderr}"
    print(f"\n{started.stderr.strip()}")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SNAKEMAKE", "SLURM_"))}
    env["SLURM_CONF"] = match.group(1)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", ""), "/usr/sbin", "/sbin"])
    yield env
    if "reusing" not in started.stderr:
        subprocess.run(["bash", str(SLURM_DIR / "stop_slurm.sh")], capture_output=True, timeout=120)


def copy_project(dest: Path) -> Path:
    """Workflow, package sources (rule inputs), config and data (directories linked), without results."""
    dest.mkdir(parents=True)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("workflow", "envs", "sensitivity"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (dest / "data").mkdir()
    for entry in (REPO / "data").iterdir():
        if entry.is_dir():
            (dest / "data" / entry.name).symlink_to(entry, target_is_directory=True)
        else:
            shutil.copy2(entry, dest / "data" / entry.name)
    if FAST.is_file():
        shutil.copy2(FAST, dest / "fast.yaml")
    else:
        (dest / "fast.yaml").write_text(yaml.safe_dump(FAST_FALLBACK))
    return dest


def start_snakemake(workdir: Path, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Snakemake in ``workdir`` under `timeout -s INT`, its output in ``log``; SIGINT is reset to default
    in case this process inherited it ignored (SIGINT is what makes Snakemake cancel its SLURM jobs)."""
    command = ["timeout", "-s", "INT", "-k", "60", str(RUN_TIMEOUT_S), sys.executable, "-m", "snakemake", *args]
    with open(log, "w") as out:
        return subprocess.Popen(command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process: subprocess.Popen, log: Path, what: str) -> str:
    try:
        code = process.wait(timeout=RUN_TIMEOUT_S + 120)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    output = log.read_text()
    assert code == 0, f"{what} exited with {code}{' (timed out)' if code in (124, 137) else ''}:\n{output[-8000:]}"
    return output


def scontrol_job(job_id: str, env: dict[str, str]) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def test_demo_through_slurm_matches_a_local_run(slurm_env, tmp_path):
    on_slurm = copy_project(tmp_path / "slurm")
    local = copy_project(tmp_path / "local")
    started = time.monotonic()
    # The local run works meanwhile: the SLURM run mostly waits for its status polls.
    local_run = start_snakemake(local, [TARGET, "--cores", "2", "--configfile", "fast.yaml"], slurm_env,
                                tmp_path / "local.log")
    slurm_run = start_snakemake(on_slurm, [TARGET, "--profile", "workflow/profiles/slurm", *FAST_POLL,
                                           "--slurm-keep-successful-logs", "--configfile", "fast.yaml"],
                                slurm_env, tmp_path / "slurm.log")
    try:
        slurm_output = finish(slurm_run, tmp_path / "slurm.log", "snakemake --executor slurm")
        finish(local_run, tmp_path / "local.log", "snakemake --cores 2")
    finally:
        for process in (slurm_run, local_run):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=120)
    print(f"\nSLURM and local demo runs together: {time.monotonic() - started:.0f} s")

    # Every job ran as a SLURM job: sbatch wrote its output to .snakemake/slurm_logs/rule_<rule>/<wildcards>/
    # <job id>.log, and the job step ran Snakemake's slurm-jobstep executor there.
    logs = sorted((on_slurm / ".snakemake" / "slurm_logs").glob("rule_*/*/*.log"))
    job_ids: dict[str, list[str]] = {}
    for log in logs:
        assert "--executor slurm-jobstep" in log.read_text(), log
        job_ids.setdefault(log.parent.parent.name.removeprefix("rule_"), []).append(log.stem)
    assert all(job_ids.get(rule) for rule in DEMO_RULES), (job_ids, slurm_output[-4000:])
    assert len(job_ids["extract_maps"]) == 2, job_ids
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", slurm_output)
    assert sorted(submitted) == sorted(log.stem for log in logs), (submitted, job_ids)
    # The last job is still known to slurmctld (MinJobAge=300): completed, with the plugin's rule comment.
    shown = scontrol_job(job_ids["evaluate"][0], slurm_env)
    assert "JobState=COMPLETED" in shown and "Comment=rule_evaluate" in shown, shown

    # Same results: CPU extraction and the exact least-squares fit are deterministic, so equal to the bit.
    for name in ("results/demo_corloc.csv", "results/demo_corloc.md", "results/demo/manifest.csv",
                 "results/demo/split.csv"):
        assert (on_slurm / name).read_text().replace(str(on_slurm), "<dir>") == \
            (local / name).read_text().replace(str(local), "<dir>"), name
    predictions = [pd.read_csv(root / "results/demo_predictions.csv").replace(re.escape(str(root)), "<dir>", regex=True)
                   for root in (on_slurm, local)]
    pd.testing.assert_frame_equal(*predictions, check_exact=True)
    with np.load(on_slurm / "results/demo/regressor.npz") as a, np.load(local / "results/demo/regressor.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    summaries = [json.loads((root / "results/demo/fit_summary.json").read_text()) for root in (on_slurm, local)]
    assert summaries[0] == summaries[1]
    table = pd.read_csv(on_slurm / TARGET)
    assert list(table["class"]) == ["kangaroo", "raccoon", "Average", "All images"]


def test_gpu_jobs_each_get_the_gpu_and_never_share_it(slurm_env, tmp_path):
    workdir = tmp_path / "gpu_probe"
    workdir.mkdir()
    shutil.copy2(SLURM_DIR / "gpu_probe" / "Snakefile", workdir / "Snakefile")
    log = tmp_path / "gpu_probe.log"
    run = start_snakemake(workdir, ["--profile", str(REPO / "workflow" / "profiles" / "slurm"),
                                    *FAST_POLL], slurm_env, log)
    try:
        output = finish(run, log, "snakemake --executor slurm (GPU probe)")
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.wait(timeout=120)

    # Snakemake submitted both jobs at once (no local `gpu` limit in the SLURM profile) ...
    submitted = [m.end() for m in re.finditer(r"has been submitted with SLURM jobid \d+", output)]
    assert len(submitted) == 2, output[-4000:]
    assert max(submitted) < output.index("Finished jobid"), f"the second GPU job was held back by Snakemake:\n{output}"
    probes = []
    for i in (1, 2):
        fields = dict(line.split("=", 1) for line in (workdir / "probe" / f"{i}.txt").read_text().split())
        probes.append(fields)
        # ... each job step saw the GPU SLURM allocated to it ...
        assert fields["cuda_visible_devices"] not in ("", "unset"), fields
        assert fields["slurm_step_gpus"] not in ("", "unset"), fields
        # ... because the profile turned `gpu=1` into `sbatch --gpus=1` (and cpus_per_gpu into --cpus-per-gpu).
        shown = scontrol_job(fields["slurm_job_id"], slurm_env)
        assert "TresPerJob=gres:gpu:1" in shown and "CpusPerTres=gres:gpu:1" in shown, shown
    assert probes[0]["slurm_job_id"] != probes[1]["slurm_job_id"]
    # ... and SLURM ran them one after the other on the single GPU.
    first, second = sorted(probes, key=lambda p: float(p["start"]))
    assert float(first["end"]) <= float(second["start"]), probes
