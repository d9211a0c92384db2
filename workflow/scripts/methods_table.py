"""Adapter for rule methods_table: the method scores and timings → results/{dataset}_methods.csv / .md / .png."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.methods import methods_table  # noqa: E402

methods_table(
    list(snakemake.input.scores),
    list(snakemake.input.predictions),
    snakemake.input.speed,
    snakemake.input.manifest,
    snakemake.input.split,
    snakemake.output.table,
    snakemake.output.markdown,
    snakemake.output.figure,
    published_path=snakemake.input.published,
    iou_levels=snakemake.params.iou_levels,
    iou_threshold=snakemake.params.iou_threshold,
    fit_split=snakemake.params.fit_split,
    title=f"Map methods × box methods on {snakemake.wildcards.dataset} (test split)",
)
