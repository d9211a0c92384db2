# The `paper` target: the paper's Tables 1-4, §3.6 (aggregation), §3.7 (speed) and Figures 1/3/4 on
# each dataset of `paper.datasets`, plus the "beat it" study of map → box variants, under
# results/paper/<dataset>/, and results/paper/RESULTS.md (copied to docs/RESULTS.md).
#
# Map variants. §3.6 compares max / mean aggregation and the class / Gestalt target on the same images,
# so every paper dataset needs the paper's gradient maps for all four (target, aggregate) combinations.
# Each becomes a generated variant `<name>__<target>_<aggregate>` (common.smk: add_variant) with
# `method: gradient`, extracted by the unchanged `extract_maps` rule; where the dataset itself has gradient
# maps of that combination, its own maps are used (shared with the main workflow).
import re

PAPER = config.get("paper", {})
PAPER_DATASETS = list(PAPER.get("datasets", []))
# (target, aggregate), in the order of sensitivity.paper.bank.MAP_VARIANTS.
PAPER_MAP_VARIANTS = [("class", "max"), ("class", "mean"), ("gestalt", "max"), ("gestalt", "mean")]
# Each paper dataset's own map variant (`<target>_<aggregate>`); an unknown name fails here, naming the
# configured ones.
PAPER_PRIMARY = {name: "{target}_{aggregate}".format(**dataset(name)) for name in PAPER_DATASETS}
# (dataset, target, aggregate) → the dataset whose gradient maps those are: the dataset itself where it has them.
PAPER_VARIANT_DATASET = {
    (name, t, a): name if (PAPER_PRIMARY[name], dataset(name)["method"]) == (f"{t}_{a}", "gradient")
    else add_variant(name, f"{t}_{a}", target=t, aggregate=a, method="gradient")
    for name in PAPER_DATASETS
    for t, a in PAPER_MAP_VARIANTS
}
# The map stores of all four variants of a dataset, as inputs named maps_<target>_<aggregate>.
paper_maps = lambda wc: {
    f"maps_{t}_{a}": gather.extract(f"results/{PAPER_VARIANT_DATASET[(wc.dataset, t, a)]}/maps/{{scatteritem}}.zarr")
    for t, a in PAPER_MAP_VARIANTS
}
# Paper rules match only the paper datasets (their variants exist only for those).
PAPER_DATASET_PATTERN = "|".join(re.escape(name) for name in PAPER_DATASETS) or "(?!)"


PAPER_TABLES = ("counts", "table1", "table2", "table3", "table4", "aggregation", "variants", "seeds")
PAPER_FIGURES = ("maps", "examples_linear", "examples_best")


rule paper:
    input:
        "results/paper/RESULTS.md",


rule paper_analysis:
    input:
        unpack(paper_maps),
        manifest="results/{dataset}/manifest.csv",
        code=code_of("paper_analysis.py"),
    output:
        variants="results/paper/{dataset}/analysis/variants.csv",
        seeds="results/paper/{dataset}/analysis/seeds.csv",
        predictions="results/paper/{dataset}/analysis/predictions.csv",
        sweep="results/paper/{dataset}/analysis/heuristic_sweep.csv",
        splits="results/paper/{dataset}/analysis/splits.csv",
        summary="results/paper/{dataset}/analysis/summary.json",
        # the first seed's box models chosen on val (sensitivity.paper.experiments.SAVED_MODELS)
        linear="results/paper/{dataset}/analysis/linear.npz",
        best="results/paper/{dataset}/analysis/best.npz",
        ensemble="results/paper/{dataset}/analysis/ensemble.npz",
    params:  # exactly what the analysis reads: editing a figure's or the speed's setting does not rerun it
        analysis={key: PAPER.get(key) for key in ("seeds", "sigma", "fraction")} | {"cv_folds": PAPER.get("cv_folds", 5)},
        primary=lambda wc: PAPER_PRIMARY[wc.dataset],
        grid=config["regression"]["grid"],
        iou_threshold=config["evaluation"]["iou_threshold"],
        split=split_params,
    wildcard_constraints:
        dataset=PAPER_DATASET_PATTERN,
    log:
        "logs/paper/{dataset}/analysis.log",
    benchmark:
        "results/benchmarks/paper/{dataset}/analysis.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_analysis.py"


rule paper_tables:
    input:
        rules.paper_analysis.output.variants,
        rules.paper_analysis.output.seeds,
        rules.paper_analysis.output.predictions,
        rules.paper_analysis.output.sweep,
        rules.paper_analysis.output.splits,
        rules.paper_analysis.output.summary,
        manifest="results/{dataset}/manifest.csv",
        published="data/published_results.csv",
        code=code_of("paper_tables.py"),
    output:
        expand("results/paper/{{dataset}}/{table}.{ext}", table=PAPER_TABLES, ext=("csv", "md")),
    wildcard_constraints:
        dataset=PAPER_DATASET_PATTERN,
    log:
        "logs/paper/{dataset}/tables.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_tables.py"


rule paper_speed:
    input:
        manifest="results/{dataset}/manifest.csv",
        splits=rules.paper_analysis.output.splits,
        linear=rules.paper_analysis.output.linear,
        best=rules.paper_analysis.output.best,
        code=code_of("paper_speed.py"),
    output:
        speed="results/paper/{dataset}/speed.csv",
        machine="results/paper/{dataset}/machine.json",
    params:
        speed=PAPER.get("speed", {}),
        model=config["model"],
        map_size=config["extraction"]["map_size"],
        primary=lambda wc: PAPER_PRIMARY[wc.dataset],
    threads: 2
    wildcard_constraints:
        dataset=PAPER_DATASET_PATTERN,
    log:
        "logs/paper/{dataset}/speed.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_speed.py"


rule paper_figures:
    input:
        unpack(paper_maps),
        predictions=rules.paper_analysis.output.predictions,
        summary=rules.paper_analysis.output.summary,
        code=code_of("paper_figures.py"),
    output:
        expand("results/paper/figures/{{dataset}}_{figure}.png", figure=PAPER_FIGURES),
    params:
        figures=PAPER.get("figures", {}),
        seed=config["report"]["seed"],
    wildcard_constraints:
        dataset=PAPER_DATASET_PATTERN,
    log:
        "logs/paper/{dataset}/figures.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_figures.py"


CENTRE_CHECK = PAPER.get("centre_box_check") or {}


rule paper_centre_check:
    output:
        "results/paper/centre_box_imagenet.json",
    params:
        check=CENTRE_CHECK,
        threshold=config["evaluation"]["iou_threshold"],
    log:
        "logs/paper/centre_check.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_centre_check.py"


rule paper_report:
    input:
        centre_check=["results/paper/centre_box_imagenet.json"] if CENTRE_CHECK.get("root") else [],
        tables=expand("results/paper/{dataset}/{table}.md", dataset=PAPER_DATASETS, table=PAPER_TABLES),
        summaries=expand("results/paper/{dataset}/analysis/summary.json", dataset=PAPER_DATASETS),
        speed=expand("results/paper/{dataset}/speed.csv", dataset=PAPER_DATASETS),
        machine=expand("results/paper/{dataset}/machine.json", dataset=PAPER_DATASETS),
        figures=expand("results/paper/figures/{dataset}_{figure}.png", dataset=PAPER_DATASETS, figure=PAPER_FIGURES),
        code=code_of("paper_report.py"),
    output:
        "results/paper/RESULTS.md",
    params:
        datasets=PAPER_DATASETS,
        specs={name: dataset(name) for name in PAPER_DATASETS},
    log:
        "logs/paper/report.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/paper_report.py"
