"""Adapter for rule paper_analysis: all map variants → every method, variant and seed (fit/choose/test)."""
from sensitivity.pipeline.logs import log_to

log_to(snakemake.log[0])
import json  # noqa: E402
import logging  # noqa: E402

from sensitivity.datasets import list_split, read_manifest  # noqa: E402
from sensitivity.paper.bank import MAP_VARIANTS, load_bank  # noqa: E402
from sensitivity.paper.experiments import run_analysis, seed_splits  # noqa: E402
from sensitivity.paper.variants import study_variants  # noqa: E402

log = logging.getLogger("paper_analysis")
p = snakemake.params
stores = {v: list(snakemake.input[f"maps_{v}"]) for v in MAP_VARIANTS}
bank = load_bank(snakemake.input.manifest, stores)
log.info("%d rows with maps in all variants; %d images without: %s", len(bank.rows), len(bank.missing), bank.missing)
split = p.split
# The paper analysis always fits on train and chooses on val, so a list split needs all three.
official = (list_split(read_manifest(snakemake.input.manifest), split["root"], split["image_sets"])
            if split["method"] == "lists" else None)
splits = seed_splits(snakemake.input.manifest, split.get("fractions"), p.analysis["seeds"], official)
splits.to_csv(snakemake.output.splits, index=False)
variants = study_variants(p.primary, p.grid)
out = run_analysis(bank, splits, p.analysis["seeds"], p.primary, variants, p.analysis["sigma"], p.analysis["fraction"],
                   p.iou_threshold, log=log.info, cv_folds=p.analysis["cv_folds"], dataset=snakemake.wildcards.dataset)
out["variants"].to_csv(snakemake.output.variants, index=False, float_format="%.6g")
out["seeds"].to_csv(snakemake.output.seeds, index=False, float_format="%.6g")
out["predictions"].to_csv(snakemake.output.predictions, index=False, float_format="%.6g")
out["sweep"].to_csv(snakemake.output.sweep, index=False, float_format="%.6g")
for name, model in out["models"].items():
    model.save(snakemake.output[name])
attributes = bank.attributes[p.primary]
summary = {
    "dataset": snakemake.wildcards.dataset, "primary_variant": p.primary,
    "model": attributes.get("model"), "weights": attributes.get("weights"),
    "preprocessing": attributes.get("preprocessing"), "map_size": attributes.get("map_size"),
    "package_version": attributes.get("package_version"),
    "n_rows": len(bank.rows), "n_images": int(bank.rows["image_id"].nunique()),
    "images_without_maps": bank.missing, "seeds": p.analysis["seeds"], "split_fractions": split.get("fractions"),
    "best_variant_seed0": out["predictions"].attrs.get("best"), "iou_threshold": p.iou_threshold,
    "cv_folds": p.analysis["cv_folds"],
    "n_variants": len(variants), "variant_candidates": sum(v.n_candidates for v in variants),
}
with open(snakemake.output.summary, "w") as fh:
    json.dump(summary, fh, indent=2)
