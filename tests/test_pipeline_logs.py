"""A stage's log gets the traceback; the console gets the error that ended the stage, in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_uncaught_error_goes_to_the_log_and_one_line_to_the_console(tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    script = ("from sensitivity.pipeline.logs import log_to\n"
              f"log_to({str(log)!r})\n"
              "import sys\n"
              "print('progress', file=sys.stderr)\n"
              "raise ValueError('data/demo/x: not a folder dataset')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"ValueError: data/demo/x: not a folder dataset (traceback in {log})"]
    text = log.read_text()
    assert text.startswith("progress\nTraceback (most recent call last):")
    assert text.rstrip().endswith("ValueError: data/demo/x: not a folder dataset")
