"""Adapter for rule speed: images/s of forward, class map, Gestalt map and image → box → results/speed.csv."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.speed import speed_table  # noqa: E402

speed_table(snakemake.input.manifest, snakemake.input.regressor, snakemake.output[0], snakemake.params.model,
            snakemake.params.target, snakemake.params.aggregate, **snakemake.params.speed, threads=snakemake.threads)
