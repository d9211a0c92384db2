# Stage 3: sensitivity maps, sharded. Each shard job loads the model once and writes its own Zarr
# store; a GPU job takes the one `gpu` resource, so GPU jobs never share a device by accident.


rule extract_maps:
    input:
        manifest="results/{dataset}/manifest.csv",
        code=code_of("extract.py"),
    output:
        directory("results/{dataset}/maps/{scatteritem}.zarr"),
    params:
        maps=map_params,
    threads: config["extraction"]["workers"] + 1
    # Batch size and device change speed, not the maps (maps are batch-invariant), so they are
    # resources: editing them does not re-extract.
    resources:
        batch_size=config["extraction"]["batch_size"],
        device=config["extraction"]["device"],
        gpu=1 if config["extraction"]["device"] == "cuda" else 0,
        mem_mb=config["extraction"]["mem_mb"],
        runtime=config["extraction"]["runtime_min"],
    log:
        "logs/{dataset}/extract/{scatteritem}.log",
    benchmark:
        "results/benchmarks/{dataset}/extract/{scatteritem}.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/extract.py"
