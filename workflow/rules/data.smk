# Stage 1: datasets. Public archives are downloaded (resumable, checksum-verified) and unpacked;
# every dataset becomes one manifest: one row per (image, class) with all that class's boxes.


rule download_archive:
    output:
        "resources/{dataset}/downloads/{archive}",
    params:
        source=lambda wc: dataset(wc.dataset)["download"][wc.archive],
    log:
        "logs/{dataset}/download/{archive}.log",
    conda:
        "../../envs/sensitivity.yaml"
    retries: 2
    script:
        "../scripts/download.py"


rule unpack_archives:
    input:
        lambda wc: expand("resources/{{dataset}}/downloads/{archive}", archive=dataset(wc.dataset)["download"]),
    output:
        touch("resources/{dataset}/.extracted"),
    log:
        "logs/{dataset}/unpack.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/unpack.py"


rule manifest:
    input:
        dataset_root_input,
        code=code_of("manifest.py"),
    output:
        manifest="results/{dataset}/manifest.csv",
        skipped="results/{dataset}/manifest_skipped.csv",
    params:
        reading=reading_params,
    log:
        "logs/{dataset}/manifest.log",
    benchmark:
        "results/benchmarks/{dataset}/manifest.tsv"
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/manifest.py"


rule variant_manifest:
    input:
        manifest=lambda wc: f"results/{VARIANT_BASE[wc.dataset]}/manifest.csv",
        skipped=lambda wc: f"results/{VARIANT_BASE[wc.dataset]}/manifest_skipped.csv",
    output:
        manifest="results/{dataset}/manifest.csv",
        skipped="results/{dataset}/manifest_skipped.csv",
    wildcard_constraints:
        dataset="[A-Za-z0-9_]+__[A-Za-z0-9_]+",
    log:
        "logs/{dataset}/manifest.log",
    localrule: True
    conda:
        "../../envs/sensitivity.yaml"
    shell:
        "(cp {input.manifest} {output.manifest} && cp {input.skipped} {output.skipped}) 2> {log}"


ruleorder: variant_manifest > manifest
