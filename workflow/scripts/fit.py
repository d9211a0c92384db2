"""Adapter for rule fit_regressor: train/val maps → chosen box model + summary."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
from sensitivity.pipeline.fit import fit_regressor  # noqa: E402

r = snakemake.params.regression
fit_regressor(
    snakemake.input.manifest,
    snakemake.input.split,
    list(snakemake.input.maps),
    snakemake.output.model,
    snakemake.output.summary,
    grid=r["grid"],
    solver=r["solver"],
    sgd=r["sgd"] if r["solver"] == "sgd" else None,
    iou_threshold=snakemake.params.iou_threshold,
    train_split=snakemake.params.fit_on["train"],
    val_split=snakemake.params.fit_on["val"],
    selection=r["selection"],
    prior=r["prior"],
    ensemble=r["ensemble"],
)
