"""Adapter for rule paper_figures: Figure 1 (maps) and Figures 3/4 (examples per class) of a dataset."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.paper.bank import MAP_VARIANTS  # noqa: E402
from sensitivity.paper.figures import paper_figures  # noqa: E402

f = snakemake.params.figures
paper_figures(snakemake.input.predictions, {v: list(snakemake.input[f"maps_{v}"]) for v in MAP_VARIANTS},
              snakemake.input.summary, list(snakemake.output), per_class=f.get("examples_per_class", 6),
              map_examples=f.get("map_examples", 6), dpi=f.get("dpi", 60), seed=snakemake.params.seed)
