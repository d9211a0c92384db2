"""Adapter for rule extract_maps: one shard of images → its own Zarr store of maps."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.extract import extract_shard  # noqa: E402

extract_shard(
    snakemake.input.manifest,
    snakemake.output[0],
    snakemake.wildcards.scatteritem,
    **snakemake.params.maps,
    batch_size=snakemake.resources.batch_size,
    device=snakemake.resources.device,
    num_workers=max(snakemake.threads - 1, 0),
)
