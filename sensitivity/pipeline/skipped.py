"""All inputs a dataset's run left out (``on_bad_input: skip``), from every stage, in one table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sensitivity.store import MapStore

COLUMNS = ["stage", "path", "reason"]


def collect_skipped(manifest_skipped: str | Path, stores: list[str], out_path: str | Path) -> pd.DataFrame:
    """Join the manifest stage's skips (bad annotations, missing files) and extraction's (undecodable images)."""
    reading = pd.read_csv(manifest_skipped, dtype=str, keep_default_na=False).assign(stage="manifest")
    decoding = pd.DataFrame([{"stage": "extract", "path": item["path"], "reason": item["reason"]}
                             for path in stores for item in MapStore(path).attrs.get("skipped", [])])
    table = pd.concat([reading, decoding], ignore_index=True).reindex(columns=COLUMNS)
    table.to_csv(out_path, index=False)
    return table
