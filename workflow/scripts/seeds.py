"""Adapter for rule split_seeds: split, fit and evaluate again for each configured split seed."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.seeds import seed_study  # noqa: E402

seed_study(snakemake.input.manifest, list(snakemake.input.maps), snakemake.params.split["fractions"],
           snakemake.params.seeds, snakemake.params.regression, snakemake.params.evaluation,
           snakemake.output.table, snakemake.output.markdown,
           title=f"Test CorLoc on {snakemake.wildcards.dataset} by split seed")
