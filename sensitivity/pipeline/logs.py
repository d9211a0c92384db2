"""Send a stage's stderr (progress bars, warnings, tracebacks) and logging to its rule's log file."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Redirect stderr and the root logger to ``path`` (line-buffered, so a killed job keeps its log)."""
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job's process
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
