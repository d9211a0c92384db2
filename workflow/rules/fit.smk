# Stage 4: the linear map from sensitivity maps to boxes, fitted on train, chosen on val.


rule fit_regressor:
    input:
        manifest="results/{dataset}/manifest.csv",
        split="results/{dataset}/split.csv",
        maps=map_stores,
        code=code_of("fit.py"),
        prior=prior_box_model,
    output:
        model="results/{dataset}/regressor.npz",
        summary="results/{dataset}/fit_summary.json",
    params:
        regression=config["regression"],
        iou_threshold=config["evaluation"]["iou_threshold"],
        fit_on=fit_splits,
    log:
        "logs/{dataset}/fit.log",
    benchmark:
        "results/benchmarks/{dataset}/fit.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/fit.py"
