"""Adapter for rule download_archive: resumable, checksum-verified download."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.datasets import download  # noqa: E402

source = snakemake.params.source
download(source["url"], snakemake.output[0], source["checksum"])
