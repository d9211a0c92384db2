# Stage 2: a deterministic, per-class stratified train / val / test split of the images.


rule split:
    input:
        manifest="results/{dataset}/manifest.csv",
        code=code_of("split.py"),
    output:
        "results/{dataset}/split.csv",
    params:
        split=split_params,
    log:
        "logs/{dataset}/split.log",
    benchmark:
        "results/benchmarks/{dataset}/split.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/split.py"
