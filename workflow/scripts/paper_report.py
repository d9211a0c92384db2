"""Adapter for rule paper_report: every paper table, figure and speed number → results/paper/RESULTS.md."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.paper.report import write_results  # noqa: E402

write_results(snakemake.params.datasets, snakemake.params.specs, "results/paper", snakemake.output[0])
