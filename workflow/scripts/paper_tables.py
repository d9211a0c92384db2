"""Adapter for rule paper_tables: analysis frames + published numbers → the paper-style tables (CSV + Markdown)."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from pathlib import Path  # noqa: E402

from sensitivity.paper.report import build_tables  # noqa: E402

# The analysis folder holds the first inputs; the tables go next to the first output.
build_tables(Path(snakemake.input[0]).parent, snakemake.input.manifest, snakemake.input.published,
             Path(snakemake.output[0]).parent)
