# Speed (docs/PERFORMANCE.md): images/s of the configured model's forward pass, class map, Gestalt map and
# image → box path on one batch of real images of a dataset (`speed.dataset`, by default the first of
# `targets`), with each one's time relative to the forward pass. The box step uses that dataset's fitted
# regressor, so this target runs the pipeline up to `fit` first. A `cuda` job takes the single `gpu`
# resource, so two GPU measurements never share the device (nor one with an extraction job).

SPEED = config["speed"]
SPEED_DATASET = SPEED["dataset"] or config["targets"][0]


rule speed:
    input:
        manifest=f"results/{SPEED_DATASET}/manifest.csv",
        regressor=f"results/{SPEED_DATASET}/regressor.npz",
        code=code_of("speed.py"),
    output:
        report("results/speed.csv", caption="../report/speed.rst", category="Speed", labels={"dataset": SPEED_DATASET}),
    params:
        model=config["model"],
        target=dataset(SPEED_DATASET)["target"],
        aggregate=dataset(SPEED_DATASET)["aggregate"],
        speed={key: SPEED[key] for key in ("batch_size", "warmup", "repeats", "device", "amp")},
    threads: SPEED["threads"]
    resources:
        gpu=1 if SPEED["device"] == "cuda" else 0,
    log:
        "logs/speed.log",
    conda:
        "../../envs/sensitivity.yaml"
    script:
        "../scripts/speed.py"
