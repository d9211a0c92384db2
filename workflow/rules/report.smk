# Stage 6: figures for the report: example test images, ground truth green, prediction red.


rule example_figure:
    input:
        predictions="results/{dataset}_predictions.csv",
        code=code_of("examples.py"),
    output:
        report("results/{dataset}/examples.png", caption="../report/examples.rst", category="Examples",
               labels={"dataset": "{dataset}"}),
    params:
        per_class=config["report"]["examples_per_class"],
        seed=config["report"]["seed"],
        method=lambda wc: dataset(wc.dataset)["method"],
        iou_threshold=config["evaluation"]["iou_threshold"],
        max_classes=config["report"]["max_classes"],
    log:
        "logs/{dataset}/examples.log",
    benchmark:
        "results/benchmarks/{dataset}/examples.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/examples.py"
