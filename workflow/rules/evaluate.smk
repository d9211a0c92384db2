# Stage 5: per-class CorLoc on the test split for the learned map, the heuristic and the centre box.


rule evaluate:
    input:
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        maps=map_stores,
        model="results/{dataset}/regressor.npz",
        skipped="results/{dataset}_skipped.csv",
        code=code("pipeline/evaluate.py", "pipeline/tables.py", "pipeline/rows.py", "boxes.py"),
    output:
        predictions="results/{dataset}_predictions.csv",
        table=report("results/{dataset}_corloc.csv", category="CorLoc", labels={"dataset": "{dataset}"}),
        markdown="results/{dataset}_corloc.md",
    params:
        evaluation=config["evaluation"],
        fit_on=fit_splits,
    log:
        "logs/{dataset}/evaluate.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/evaluate.py"


rule collect_skipped:
    input:
        manifest_skipped="results/{dataset}/manifest_skipped.csv",
        maps=map_stores,
        code=code("pipeline/skipped.py"),
    output:
        report("results/{dataset}_skipped.csv", category="Skipped inputs", labels={"dataset": "{dataset}"}),
    log:
        "logs/{dataset}/skipped.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/skipped.py"
