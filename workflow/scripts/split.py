"""Adapter for rule split: manifest → image_id, split."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.split import make_split, voc_test_ids  # noqa: E402

p = snakemake.params.split
official = voc_test_ids(p["root"], p["test_set"]) if p["official_test"] else None
make_split(snakemake.input.manifest, snakemake.output[0], p["fractions"], p["seed"], official)
