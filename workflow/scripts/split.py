"""Adapter for rule split: manifest → image_id, split."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.split import make_list_split, make_split  # noqa: E402

p = snakemake.params.split
if p["method"] == "lists":
    make_list_split(snakemake.input.manifest, snakemake.output[0], p["root"], p["image_sets"], p["needed"])
else:
    make_split(snakemake.input.manifest, snakemake.output[0], p["fractions"], p["seed"])
