"""Adapter for rule paper_centre_check: the mean-size centre box on genuine ImageNet validation images."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.paper.report import centre_box_check  # noqa: E402

c = snakemake.params.check
centre_box_check(c["root"], c.get("layout", "auto"), snakemake.output[0], snakemake.params.threshold)
