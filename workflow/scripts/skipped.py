"""Adapter for rule collect_skipped: every input left out by any stage → one CSV."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.skipped import collect_skipped  # noqa: E402

collect_skipped(snakemake.input.manifest_skipped, list(snakemake.input.maps), snakemake.output[0])
