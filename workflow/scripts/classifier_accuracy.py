"""Adapter for rule classifier_accuracy: top-1 / top-5 of the classifier from the map stores."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.classify import classifier_accuracy  # noqa: E402

classifier_accuracy(snakemake.input.manifest, snakemake.input.split, list(snakemake.input.maps),
                    snakemake.input.synset_mapping, snakemake.output[0])
