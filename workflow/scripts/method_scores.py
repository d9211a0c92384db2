"""Adapter for rule method_scores: one map method's test maps → scores of its heuristic, wsol and learned boxes."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.methods import score_method  # noqa: E402

score_method(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.maps),
    snakemake.input.model,
    snakemake.output.scores,
    snakemake.output.predictions,
    snakemake.wildcards.method,
    **snakemake.params.wsol,
    **snakemake.params.heuristic,
    iou_threshold=snakemake.params.iou_threshold,
    synset_mapping=snakemake.input.synset_mapping or None,
    val_split=snakemake.params.val_split,
)
