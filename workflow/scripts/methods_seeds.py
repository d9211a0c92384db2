"""Adapter for rule methods_seeds: the comparison's split, box models and scores again for each split seed."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.seeds import methods_seed_study  # noqa: E402

methods = [key.removeprefix("maps_") for key in snakemake.input.keys() if key.startswith("maps_")]
methods_seed_study(snakemake.input.manifest, {method: list(snakemake.input[f"maps_{method}"]) for method in methods},
                   snakemake.params.split["fractions"], snakemake.params.seeds, snakemake.params.regression,
                   snakemake.params.evaluation, snakemake.params.comparison, snakemake.output.table,
                   snakemake.output.markdown, synset_mapping=snakemake.input.synset_mapping or None,
                   title=f"Map methods × box methods on {snakemake.wildcards.dataset}, across split seeds")
