# Stage 5: per-class CorLoc on the test split for the learned map, the heuristic and the centre box;
# for datasets whose labels are classifier synsets, the classifier's top-1 / top-5 beside it.


rule evaluate:
    input:
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        maps=map_stores,
        model="results/{dataset}/regressor.npz",
        summary="results/{dataset}/fit_summary.json",
        skipped="results/{dataset}_skipped.csv",
        classifier=classifier_table,
        code=code_of("evaluate.py"),
    output:
        predictions="results/{dataset}_predictions.csv",
        table="results/{dataset}_corloc.csv",
        markdown="results/{dataset}_corloc.md",
        html=report("results/{dataset}_corloc.html", caption="../report/corloc.rst", category="CorLoc",
                    labels={"dataset": "{dataset}"}),
    params:
        evaluation=config["evaluation"],
        fit_on=fit_splits,
    log:
        "logs/{dataset}/evaluate.log",
    benchmark:
        "results/benchmarks/{dataset}/evaluate.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/evaluate.py"


rule split_seeds:
    input:
        manifest="results/{dataset}/manifest.csv",
        maps=map_stores,
        code=code_of("seeds.py"),
        prior=prior_box_model,
    output:
        table="results/{dataset}_seeds.csv",
        markdown="results/{dataset}_seeds.md",
    params:
        split=lambda wc: seeded_split(wc.dataset),
        seeds=config["evaluation"]["split_seeds"],
        regression=config["regression"],
        evaluation=config["evaluation"],
    log:
        "logs/{dataset}/seeds.log",
    benchmark:
        "results/benchmarks/{dataset}/seeds.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/seeds.py"


rule classifier_accuracy:
    input:
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        maps=map_stores,
        synset_mapping=lambda wc: dataset(wc.dataset)["synset_mapping"],
        code=code_of("classifier_accuracy.py"),
    output:
        "results/{dataset}_classifier.csv",
    log:
        "logs/{dataset}/classifier.log",
    benchmark:
        "results/benchmarks/{dataset}/classifier.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/classifier_accuracy.py"


rule collect_skipped:
    input:
        manifest_skipped="results/{dataset}/manifest_skipped.csv",
        maps=map_stores,
        code=code_of("skipped.py"),
    output:
        report("results/{dataset}_skipped.csv", caption="../report/skipped.rst", category="Skipped inputs",
               labels={"dataset": "{dataset}"}),
    log:
        "logs/{dataset}/skipped.log",
    benchmark:
        "results/benchmarks/{dataset}/skipped.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/skipped.py"
