"""The ``cuda_tests`` part of ``benchmarks/gpu_check.sh`` (issue 15): ``pytest -m cuda`` over the test files that use
the marker, one row per test in a CSV. A script of its own so that it starts without importing torch (the tests'
own process does):

    python benchmarks/gpu_check_tests.py --out cuda_tests.csv --junit cuda_tests.xml
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TEST_COLUMNS = ["test", "outcome", "seconds", "message"]


def cuda_tests_part(out: Path, junit: Path) -> int:
    """``pytest -m cuda`` over the test files that use the marker (collecting the whole suite takes a minute on
    2 cores); one row per test in ``out``; returns pytest's exit code (0 when no test is selected)."""
    files = [str(path) for path in sorted((REPO / "tests").glob("test_*.py")) if "mark.cuda" in path.read_text()]
    if not files:
        raise SystemExit("gpu_check: no test file uses @pytest.mark.cuda")
    code = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", *files], check=False, cwd=REPO).returncode
    rows = []
    for case in ElementTree.parse(junit).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome, message = {"failure": "failed"}.get(child.tag, child.tag), child.get("message", "")
        rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                     "seconds": float(case.get("time", "nan")), "message": message[:200]})
    pd.DataFrame(rows, columns=TEST_COLUMNS).to_csv(out, index=False, float_format="%.6g")
    return code if code != 5 else 0  # 5: no test selected


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="CSV, one row per test")
    parser.add_argument("--junit", type=Path, required=True, help="pytest's JUnit XML report")
    args = parser.parse_args(argv)
    raise SystemExit(cuda_tests_part(args.out, args.junit))


if __name__ == "__main__":
    main()
