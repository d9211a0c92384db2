# The comparison (results/{dataset}_methods.csv / .md / .png): every map method of `map_methods` with the
# heuristic, wsolevaluation and learned boxes, scored with GT-known / Top-1 Loc, MaxBoxAccV2 and CorLoc on the
# test split, beside the cost of each image → box path.
#
# Each map method other than the dataset's own is a generated variant `<dataset>__<method>` (common.smk:
# add_variant) that the unchanged extract_maps and fit_regressor rules turn into its own sharded stores and
# its own box model; the dataset's own method is the dataset itself, so its maps are shared with the main
# workflow.
COMPARISON = config["comparison"]
MAP_METHODS = COMPARISON["methods"] or list(config["map_methods"])
if unknown := [method for method in MAP_METHODS if method not in config["map_methods"]]:
    raise ValueError(f"comparison.methods: {unknown} not in map_methods {list(config['map_methods'])}")
METHOD_DATASET = {
    (name, method): name if dataset(name)["method"] == method else add_variant(name, method, method=method)
    for name in [name for name in config["datasets"] if name not in VARIANT_BASE]
    for method in MAP_METHODS
}


def method_dataset(wildcards):
    return METHOD_DATASET[(wildcards.dataset, wildcards.method)]


rule method_scores:
    input:
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        maps=lambda wc: gather.extract(f"results/{method_dataset(wc)}/maps/{{scatteritem}}.zarr"),
        model=lambda wc: f"results/{method_dataset(wc)}/regressor.npz",
        synset_mapping=lambda wc: dataset(wc.dataset)["synset_mapping"] or [],
        code=code_of("method_scores.py"),
    output:
        scores="results/{dataset}/methods/{method}.csv",
        predictions="results/{dataset}/methods/{method}_predictions.csv",
    params:
        wsol={key: COMPARISON[key] for key in ("thresholds", "iou_levels")},
        heuristic=config["evaluation"]["heuristic"],
        iou_threshold=config["evaluation"]["iou_threshold"],
        val_split=lambda wc: fit_splits(wc)["val"],
    wildcard_constraints:
        method="|".join(MAP_METHODS),
    log:
        "logs/{dataset}/methods/{method}.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/method_scores.py"


rule methods_speed:
    input:
        manifest="results/{dataset}/manifest.csv",
        code=code_of("methods_speed.py"),
    output:
        "results/{dataset}/methods/speed.csv",
    params:
        model=config["model"],
        target=lambda wc: dataset(wc.dataset)["target"],
        aggregate=lambda wc: dataset(wc.dataset)["aggregate"],
        methods={method: config["map_methods"][method] for method in MAP_METHODS},
        speed={key: COMPARISON["speed"][key] for key in ("batch_size", "warmup", "repeats", "device", "amp")},
    threads: COMPARISON["speed"]["threads"]
    resources:
        gpu=1 if COMPARISON["speed"]["device"] == "cuda" else 0,
    log:
        "logs/{dataset}/methods/speed.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/methods_speed.py"


rule methods_table:
    input:
        scores=expand("results/{{dataset}}/methods/{method}.csv", method=MAP_METHODS),
        predictions=expand("results/{{dataset}}/methods/{method}_predictions.csv", method=MAP_METHODS),
        speed="results/{dataset}/methods/speed.csv",
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        published="data/published_results.csv",
        code=code_of("methods_table.py"),
    output:
        table=report("results/{dataset}_methods.csv", caption="../report/methods_table.rst", category="Methods",
                     labels={"dataset": "{dataset}", "what": "table"}),
        markdown="results/{dataset}_methods.md",
        figure=report("results/{dataset}_methods.png", caption="../report/methods_figure.rst", category="Methods",
                      labels={"dataset": "{dataset}", "what": "accuracy against cost"}),
    params:
        iou_levels=COMPARISON["iou_levels"],
        iou_threshold=config["evaluation"]["iou_threshold"],
        fit_split=lambda wc: fit_splits(wc)["train"],
    log:
        "logs/{dataset}/methods/table.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/methods_table.py"


rule methods_seeds:
    input:
        unpack(lambda wc: {f"maps_{method}": gather.extract(f"results/{METHOD_DATASET[(wc.dataset, method)]}/maps/{{scatteritem}}.zarr")
                           for method in MAP_METHODS}),
        manifest="results/{dataset}/manifest.csv",
        synset_mapping=lambda wc: dataset(wc.dataset)["synset_mapping"] or [],
        code=code_of("methods_seeds.py"),
    output:
        table="results/{dataset}_methods_seeds.csv",
        markdown="results/{dataset}_methods_seeds.md",
    params:
        split=lambda wc: seeded_split(wc.dataset),
        seeds=config["evaluation"]["split_seeds"],
        regression=config["regression"],
        evaluation={key: config["evaluation"][key] for key in ("iou_threshold", "heuristic")},
        comparison={key: COMPARISON[key] for key in ("thresholds", "iou_levels")},
    log:
        "logs/{dataset}/methods/seeds.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/methods_seeds.py"
