"""Adapter for rule evaluate: test maps → predictions and per-class CorLoc tables."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.evaluate import evaluate  # noqa: E402

e = snakemake.params.evaluation
evaluate(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.maps),
    snakemake.input.model,
    snakemake.output.predictions,
    snakemake.output.table,
    snakemake.output.markdown,
    sigma=e["heuristic"]["sigma"],
    fraction=e["heuristic"]["fraction"],
    iou_threshold=e["iou_threshold"],
    title=f"CorLoc on {snakemake.wildcards.dataset} (test split)",
    skipped_path=snakemake.input.skipped,
    classifier_path=snakemake.input.classifier[0] if snakemake.input.classifier else None,
    fit_split=snakemake.params.fit_on["train"],
    summary_path=snakemake.input.summary,
    table_html=snakemake.output.html,
)
