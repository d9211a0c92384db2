"""Adapter for rule unpack_archives: unpack each verified archive into the dataset's folder."""
from pathlib import Path

from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.datasets import extract_tar  # noqa: E402

for archive in snakemake.input:
    extract_tar(archive, Path(snakemake.output[0]).parent)
