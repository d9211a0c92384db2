"""Adapter for rule paper_speed: §3.7 images/s of forward, map and image → box on a batch of real images."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.paper.speed import speed_analysis  # noqa: E402

s = snakemake.params.speed
speed_analysis(snakemake.input.manifest, snakemake.input.splits,
               {"linear map": snakemake.input.linear, "best": snakemake.input.best}, snakemake.params.model,
               snakemake.params.map_size, snakemake.output.speed, snakemake.output.machine,
               batch_size=s.get("batch_size", 16), warmup=s.get("warmup", 2), repeats=s.get("repeats", 7),
               device=s.get("device", "cpu"), threads=snakemake.threads)
