"""Send a stage's stderr (progress bars, warnings, tracebacks) and logging to its rule's log file; the error
that ends a stage also goes to the console, in one line, so a failed run says why without opening the log."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path


def log_to(path: str | Path) -> None:
    """Redirect stderr and the root logger to ``path`` (line-buffered, so a killed job keeps its log).

    An uncaught exception is written to the log with its traceback, and as ``Type: message (traceback in
    <path>)`` to the original stderr (Snakemake's console).
    """
    console = sys.stderr
    stream = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job's process
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def report(kind: type[BaseException], error: BaseException, trace) -> None:
        traceback.print_exception(kind, error, trace, file=stream)
        print(f"{kind.__name__}: {error} (traceback in {path})", file=console, flush=True)

    sys.excepthook = report
