"""Stage functions of the ``paper`` rules: the tables of a dataset, the speed measurement, RESULTS.md.

RESULTS.md is generated from the result files only (never edited by hand), so its numbers are the
workflow's; ``docs/RESULTS.md`` is a copy of ``results/paper/RESULTS.md`` and ``docs/figures/`` of
``results/paper/figures/`` (the Markdown links figures as ``figures/<name>.png``, valid in both places).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sensitivity.evaluation import labelled_rows, score_boxes, with_boxes
from sensitivity.paper import tables as T
from sensitivity.tables import read_published

COMMAND = "snakemake --cores 2 paper"


def _setting(summary: dict) -> str:
    target, aggregate = summary["primary_variant"].split("_")
    return f"this workflow: {summary['model']} ({summary['weights']}), {target} target, {aggregate} over channels"


def build_tables(analysis_dir: str | Path, manifest_path: str | Path, published_path: str | Path,
                 out_dir: str | Path) -> None:
    """Write every table of one dataset (CSV + Markdown) from the analysis frames."""
    analysis, out = Path(analysis_dir), Path(out_dir)
    summary = json.loads((analysis / "summary.json").read_text())
    published = read_published(published_path)
    predictions = pd.read_csv(analysis / "predictions.csv", dtype={"image_id": str, "label": str})
    variants = pd.read_csv(analysis / "variants.csv", dtype={"params": str, "cv_params": str, "map_variants": str})
    seeds = pd.read_csv(analysis / "seeds.csv", dtype={"params": str})
    sweep = pd.read_csv(analysis / "heuristic_sweep.csv")
    splits = pd.read_csv(analysis / "splits.csv", dtype=str)
    first_seed = int(summary["seeds"][0])
    setting = _setting(summary)
    ours = T.per_class(predictions)
    best = summary["best_variant_seed0"]
    n_test = int(ours.loc[ours["class"] == "Average", "n_images"].iloc[0])

    rows = labelled_rows(manifest_path)
    missing = summary["images_without_maps"]
    counts = T.counts_table(rows[~rows["image_id"].isin(missing)], splits, first_seed)
    where = splits.set_index("image_id")[f"seed{first_seed}"]
    T.write(counts, out / "counts.csv", out / "counts.md", "Images with a map per class and split (seed "
            f"{first_seed})", digits=0,
            note=("Left out everywhere (no map: unreadable image): "
                  + ", ".join(f"{i} ({where.get(i, '?')})" for i in missing) + ".") if missing else "")

    T.write(T.table1(published, ours, setting), out / "table1.csv", out / "table1.md",
            "Table 1 style: Average CorLoc (%), published (PASCAL VOC 2007, 6 classes) and ours", digits=1,
            note=f"Ours: test split of seed {first_seed} ({n_test} images), hyper-parameters chosen on val. "
                 f"Best variant (chosen on val among one-backward-pass variants): {best}.")
    T.write(T.table2(published, ours, setting), out / "table2.csv", out / "table2.md",
            "Table 2 style: per-class CorLoc (%), published (PASCAL VOC 2007) and ours", digits=1,
            note="`mean of classes` recomputes the mean of each row's class columns. For the published "
                 "Sensitivity Maps row it is 41.0, not the printed MeanCL 40.1 (the other six rows agree to "
                 "rounding); its six Table-1 classes average 52.8, not Table 1's 55.")
    primary = summary["primary_variant"]
    table3 = T.table3(sweep, primary, "test")
    note = ("The paper's Table 3 lists 27.2 / 38.4 / 32.5 % (PASCAL VOC 2007) without the sigma of each row. "
            f"Ours: heuristic box on the {primary} maps (56² stored maps; sigma in input pixels: pixels of a "
            f"224-pixel image side, whatever the map's size), test split of seed {first_seed}; every map variant "
            "and the val split are in table3.csv.")
    sweep.to_csv(out / "table3.csv", index=False, float_format="%.4f")
    (out / "table3.md").write_text(
        T.markdown(table3, f"Table 3 style: heuristic box, Average CorLoc (%) by sigma × kept fraction ({primary}, test)")
        + "\n" + T.markdown(T.published_table3(published), "Published Table 3 (PASCAL VOC 2007)") + "\n" + note + "\n")
    T.write(T.table4(published, ours, setting), out / "table4.csv", out / "table4.md",
            "Table 4 style: centre box vs heuristic vs learned map, Average CorLoc (%)", digits=2)
    T.write(T.aggregation_table(variants, published, first_seed), out / "aggregation.csv", out / "aggregation.md",
            "§3.6: aggregation (max / mean) × target (class / Gestalt), linear map chosen on val", digits=1,
            note="Published: ImageNet numbers use class-score maps, PASCAL VOC 2007 numbers Gestalt maps.")
    T.write(T.variants_table(variants, first_seed), out / "variants.csv", out / "variants.md",
            "Every map → box variant tried (val and test Average CorLoc, %)", digits=1,
            note="Each variant's own hyper-parameters are chosen on val (ties: higher val mean IoU, then grid order); "
                 "`backward_passes` > 1 means maps of both targets (not the paper's one-backward budget), so "
                 "such variants are reported but not eligible as the best variant. The seeds columns refit and "
                 "re-choose on each seed's split.")
    T.write(T.seeds_table(seeds), out / "seeds.csv", out / "seeds.md",
            f"Headline methods over {len(summary['seeds'])} split seeds: test Average CorLoc (%)", digits=1,
            note="Each method re-chooses its hyper-parameters (and the best variant) on each seed's val split, or, "
                 "in the rows `by CV on train+val`, by 5-fold cross-validation on all non-test rows (then refitted "
                 "there). Ensembles average the boxes of the k best one-backward variants reading the same maps as the "
                 "best (k = 3 and 5 are the only sizes tried). `val mean` is the choosing score (val CorLoc, or the "
                 "cross-validated CorLoc), so its gap to `test mean` shows the winner's curse of choosing among "
                 "many variants on few images. Maps are the same for every seed; only the split changes.")


def centre_box_check(root: str | Path, layout: str, out_path: str | Path, threshold: float = 0.5) -> dict:
    """CorLoc of the mean-size centre box on an ImageNet-layout folder of boxed validation images.

    Table 4's "Constant Center Box Baseline" (12.34 %) is far below what such a box scores on genuine
    ILSVRC images, whose objects are mostly large and central. The box (two numbers: mean width and
    height of the largest boxes) is fitted on the same images; with two parameters the optimism is
    negligible.
    """
    from sensitivity.boxes import CentreBoxBaseline
    from sensitivity.datasets import read_imagenet

    manifest, skipped = read_imagenet(root, split="val", layout=layout, on_bad_input="skip")
    rows = with_boxes(manifest)
    targets = np.stack(rows["target_box"].to_numpy())
    model = CentreBoxBaseline().fit(targets, targets)
    scores = score_boxes(model.predict(targets), rows, threshold)
    result = {"root": str(root), "images": int(rows["image_id"].nunique()), "rows": len(rows),
              "classes": int(rows["label"].nunique()), "skipped": len(skipped),
              "box": [round(float(v), 4) for v in model.box_], "corloc_rows": 100 * scores.micro,
              "average_corloc": scores.corloc}
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


def _load_note(machine: dict) -> str:
    loads = [x for x in machine.get("load_average_1min") or [] if x is not None and not np.isnan(x)]
    if not loads:
        return "load average not recorded"
    note = f"1-minute load average before / after the speed measurement: {' / '.join(f'{x:.1f}' for x in loads)}"
    if max(loads) > machine["usable_cores"]:
        note += f" (above the {machine['usable_cores']} cores: other processes competed for them)"
    return note


def speed_markdown(speed: pd.DataFrame) -> str:
    table = speed[["target", "stage", "images_per_s", "ms_per_image", "time_vs_forward"]].copy()
    table["spread (% of median)"] = 100 * speed["spread_s"] / speed["seconds_per_batch"]
    table = table.rename(columns={"images_per_s": "images/s", "ms_per_image": "ms/image",
                                  "time_vs_forward": "time ÷ forward"})
    return T.markdown(table, digits=2)


def write_results(datasets: Sequence[str], specs: Mapping[str, dict], paper_dir: str | Path,
                  out_path: str | Path) -> Path:
    """RESULTS.md: per dataset, the data, network and machine, every table and figure."""
    paper_dir = Path(paper_dir)
    parts = [
        "# Results: reproducing \"Fast Object Localization via Sensitivity Analysis\"\n",
        f"Generated by `{COMMAND}` (rule `paper_report`, from the files under `results/paper/`; do not edit by "
        "hand: rerun and copy `results/paper/RESULTS.md` to `docs/RESULTS.md` and `results/paper/figures/*.png` "
        "to `docs/figures/`). All CorLoc values are the paper's Average CorLoc: the unweighted mean over "
        "classes of the share of images whose box has IoU > 0.5 with a ground-truth box of the class, in %.\n",
        "Protocol: maps are extracted once per target × aggregation; every method is fitted on the train "
        "split, its hyper-parameters (and, for the best variant, the variant itself) are chosen on the val "
        "split only, and it is reported on the test split. The published numbers are on PASCAL VOC 2007 and "
        "ImageNet with VGG16 and are not directly comparable with ours (other images, classes and network); "
        "they are shown beside ours as in the paper's tables. Published values: `data/published_results.csv`.\n",
    ]
    check_path = paper_dir / "centre_box_imagenet.json"
    if check_path.exists():
        check = json.loads(check_path.read_text())
        parts.append(
            "**Table 4's centre box does not reproduce.** The paper's constant centre box scores 12.34 % on "
            f"ImageNet. On {check['images']} genuine ILSVRC-2012 validation images ({check['classes']} classes, "
            f"`{check['root']}`), the same baseline (a box of the mean width and height, centred) scores "
            f"{check['average_corloc']:.1f} % Average CorLoc ({check['corloc_rows']:.1f} % of images): most "
            "ImageNet objects are large and central. (Rule `paper_centre_check`.)\n")
    for name in datasets:
        d = paper_dir / name
        summary = json.loads((d / "analysis" / "summary.json").read_text())
        machine = json.loads((d / "machine.json").read_text())
        speed = pd.read_csv(d / "speed.csv")
        spec = specs[name]
        where = ", ".join(spec.get("roots", [])) or spec.get("root", "")
        parts.append(f"## Dataset `{name}`\n")
        parts.append(
            f"- Data: {spec['kind']} dataset {where}; {summary['n_images']} images with a map "
            f"({summary['n_rows']} image × class rows); split {summary['split_fractions']} per class, seeds "
            f"{summary['seeds']} (tables use seed {summary['seeds'][0]}, the workflow's split).\n"
            f"- Network: {summary['model']} ({summary['weights']}), preprocessing `squash` to "
            f"{summary['preprocessing']['size']}², maps stored at {summary['map_size']}²; the dataset's own maps: "
            f"{summary['primary_variant'].replace('_', ' target, ')} over colour channels.\n"
            f"- Machine (speed): {machine['cpu']}, {machine['usable_cores']} usable cores "
            f"({machine['logical_cpus']} logical CPUs), torch {machine['torch']} with {machine['torch_threads']} "
            f"threads, device {machine['device']}, GPU {machine['gpu']}; {_load_note(machine)}.\n"
            f"- Variants: {summary['n_variants']} variants, {summary['variant_candidates']} fitted candidates per seed.\n")
        seeds = pd.read_csv(d / "seeds.csv")
        first = next(c for c in seeds.columns if c.startswith("seed "))
        lines = [f"- {r['method']}: {r['test mean']:.1f} ± {r['test std']:.1f} ({first}: {r[first]:.1f})"
                 for _, r in seeds.iterrows()]
        parts.append("### Headline (test Average CorLoc, mean ± std over split seeds)\n\n" + "\n".join(lines) + "\n\n"
                     "`best variant` is chosen on the val split (protocol A, the workflow's); `chosen by CV on "
                     "train+val` (protocol B) chooses hyper-parameters and the variant by cross-validation on all "
                     "non-test rows and refits there. Every variant is a box model of the workflow's family "
                     "(`BoxRegressor`, the ensembles `BoxEnsemble`): the first seed's linear map, best variant and "
                     "largest ensemble on val are saved as `analysis/{linear,best,ensemble}.npz`, which `sensitivity "
                     "localize --regressor` applies. The shape descriptors (quantile levels, thresholds) were "
                     "designed while looking at cross-validated CorLoc on all images of this dataset, test images "
                     "included, so the study is exploratory; the split seeds and the val/CV choices are the "
                     "protection against overfitting one split.\n")
        parts.append((d / "counts.md").read_text())
        for table in ("table1", "table2", "table3", "table4", "aggregation"):
            parts.append((d / f"{table}.md").read_text())
        parts.append("### §3.7: speed (images/s, batch of "
                     f"{int(speed['batch_size'].iloc[0])} test images, median of {int(speed['repeats'].iloc[0])} "
                     "interleaved rounds)\n\n" + speed_markdown(speed)
                     + "\n`forward` is the classifier alone (no gradient); `map + class` is one forward and one backward pass with the class scores "
                     "(the Gestalt backward pass starts at the attention map); `image → box` adds pooling and the "
                     "map → box model (decoding and resizing the image are not timed). `time ÷ forward` is the median "
                     "over rounds of each round's ratio (as in `results/speed.csv`). `spread` is the range "
                     "of the timed rounds: the machine is shared, so absolute speeds (and, less so, the ratios) "
                     "vary between runs.\n")
        parts.append((d / "variants.md").read_text())
        parts.append((d / "seeds.md").read_text())
        parts.append("### Figures\n\n"
                     f"Figure 1 style: test images and their maps (each target × aggregation).\n\n![maps](figures/{name}_maps.png)\n\n"
                     f"Figures 3/4 style: test examples per class, ground truth green, the linear map's box red.\n\n"
                     f"![linear map examples](figures/{name}_examples_linear.png)\n\n"
                     f"The same images with the best variant ({summary['best_variant_seed0']}).\n\n"
                     f"![best variant examples](figures/{name}_examples_best.png)\n")
    Path(out_path).write_text("\n".join(parts))
    return Path(out_path)
