"""Adapter for rule manifest: dataset folder → manifest CSV."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.prepare import build_manifest  # noqa: E402

build_manifest(snakemake.params.reading, snakemake.output.manifest, snakemake.output.skipped)
