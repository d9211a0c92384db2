"""Adapter for rule methods_speed: images/s of every map method beside the forward pass."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.speed import method_speed_table  # noqa: E402

method_speed_table(snakemake.input.manifest, snakemake.output[0], snakemake.params.model, snakemake.params.target,
                   snakemake.params.aggregate, snakemake.params.methods, **snakemake.params.speed,
                   threads=snakemake.threads)
