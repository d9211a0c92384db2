"""Adapter for rule example_figure: a grid of test images with true (green) and predicted (red) boxes."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.report import example_figure  # noqa: E402

example_figure(snakemake.input.predictions, snakemake.output[0], snakemake.params.per_class, snakemake.params.seed,
               snakemake.params.max_classes,
               title=f"{snakemake.wildcards.dataset}: test split, {snakemake.params.method} maps "
               f"(✓: IoU > {snakemake.params.iou_threshold})")
