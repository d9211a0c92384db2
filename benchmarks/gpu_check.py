"""GPU numbers in one prepared run (issue 15): the parts of ``benchmarks/gpu_check.sh``, one sub-command each.

- ``maps``: the class and Gestalt maps, each with and without the Grad-CAM channel, against the forward pass
  (:func:`sensitivity.speed.map_paths`, timed by :func:`sensitivity.speed.time_interleaved`) for
  EfficientNet-Lite0 and VGG16 (random weights: speed does not depend on their values) at every batch size and
  autocast dtype, ``cudnn.benchmark`` on; and each stage's memory peak (``torch.cuda.max_memory_allocated``,
  reset before the stage; NA on the CPU). Rows are appended after every (model, batch, dtype), so a part
  stopped by its timeout keeps what it measured.
- ``peers``: Captum ``Saliency`` and pytorch-grad-cam ``GradCAM`` beside our class map on the same batches
  (:func:`bench_peers.methods`); a peer library that is not installed gets a row saying so.
- ``extraction``: the workflow's extraction of an ImageNet tree (the shared 910-image sample by default), or of
  the first demo photos (``--demo N``: the quick run, which needs no ``../shared``), with
  ``extraction: {device, amp, workers, batch_size}``, in images/s against the pure map rate of the same model,
  method, batch and dtype (:func:`sensitivity.speed.method_speed_table` on the same manifest, as many torch
  threads as the extraction job).
- ``summary``: ``summary.md`` from the parts' CSVs and ``status.csv`` (written by the shell script).

Batches are the demo photos (``data/demo``), repeated to fill the batch. Run through the shell script:

    bash benchmarks/gpu_check.sh [--device cuda|cpu] [--quick] OUT_DIR
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import yaml

# bench_peers: benchmarks/, this script's folder, is first on sys.path
from bench_peers import OURS, demo_paths, methods

from sensitivity.models import AMP_DTYPES, LoadedModel, load_model, resolve_device
from sensitivity.speed import (
    FORWARD,
    load_batch,
    machine_description,
    map_paths,
    method_speed_table,
    summarise,
    time_interleaved,
)

REPO = Path(__file__).resolve().parents[1]
MODELS = ("efficientnet_lite0", "vgg16")
DTYPE_NAMES = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
AGGREGATE = "max"
MAPS_COLUMNS = ["model", "weights", "device", "dtype", "batch_size", "input_size", "stage", "seconds_per_batch", "images_per_s",
                "ratio_to_forward", "spread_s", "repeats", "cudnn_benchmark"]
MEMORY_COLUMNS = ["model", "device", "dtype", "batch_size", "input_size", "stage", "allocated_before_mib", "peak_mib", "source"]
PEERS_COLUMNS = ["model", "device", "dtype", "batch_size", "input_size", "method", "seconds_per_batch", "images_per_s",
                 "ratio_to_forward", "time_vs_ours", "spread_s", "repeats", "note"]
EXTRACTION_COLUMNS = [
    "dataset", "images", "device", "amp", "batch_size", "workers", "model", "method", "target", "aggregate",
    "extraction_images_per_s", "pure_map_images_per_s", "extraction_to_pure", "map_seconds_in_extraction",
    "map_only_images_per_s_in_extraction", "extract_job_s", "non_map_s", "extract_max_rss_mb", "snakemake_s"]
#: The issue's targets: class map ≤ 2.1 forward passes at bf16, extraction ≥ 85 % of the pure map rate.
MAP_RATIO_TARGET = 2.1
EXTRACTION_TARGET = 0.85


@dataclass(frozen=True)
class Plan:
    """Batch sizes, autocast dtypes (AMP_DTYPES keys), interleaved rounds and the input side (None: the model's)."""

    batch_sizes: tuple[int, ...]
    amps: tuple[str, ...]
    warmup: int
    repeats: int
    input_size: int | None = None


def make_plan(device: torch.device, quick: bool) -> Plan:
    """The issue's grid (batch 32/64/128, fp32/bf16/fp16), or tiny batches and few rounds with ``quick`` (on the
    CPU also 64×64 inputs: a twelfth of the work at 224×224, and both models take them). The CPU runs fp32
    only: its autocast is not what is measured here (``tests/test_maps.py`` checks it), and without native
    bf16 a VGG16 forward pass of 2 images at 64×64 takes 7 s in bf16 against 0.3 s in fp32."""
    if device.type != "cuda":
        return Plan((2,), ("none",), warmup=1, repeats=2, input_size=64) if quick else Plan((32,), ("none",), 2, 5)
    amps = ("none", "bf16", "fp16")
    return Plan((4, 8), amps, warmup=1, repeats=3) if quick else Plan((32, 64, 128), amps, warmup=3, repeats=10)


def checked_device(name: str) -> torch.device:
    """``name`` as a device; SystemExit with one line when CUDA is asked for and torch sees none."""
    device = resolve_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu_check: --device {name}, but torch {torch.__version__} sees no CUDA device")
    return device


def append_rows(path: Path, rows: Sequence[Mapping[str, object]], columns: list[str]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header when new), so that what was measured survives a kill."""
    pd.DataFrame(list(rows), columns=columns).to_csv(path, mode="a", header=not path.exists(), index=False,
                                                     float_format="%.6g")


def photo_batch(model: LoadedModel, plan: Plan, device: torch.device) -> torch.Tensor:
    """The largest batch of ``plan`` in demo photos preprocessed for ``model`` (the photos repeated when there
    are fewer), resized to ``plan.input_size`` if set."""
    photos, size = demo_paths(), max(plan.batch_sizes)
    batch = load_batch(photos * math.ceil(size / len(photos)), model, size, device)
    if plan.input_size is None:
        return batch
    return torch.nn.functional.interpolate(batch, size=plan.input_size, mode="bilinear", antialias=True)


def map_stages(model: LoadedModel, images: torch.Tensor, amp: str) -> dict[str, Callable[[], object]]:
    """Forward, class and Gestalt maps, and each map with the Grad-CAM channel and logits the extraction stores."""
    stages = map_paths(model, images, AGGREGATE, "class", amp_dtype=AMP_DTYPES[amp])
    with_gestalt_cam = map_paths(model, images, AGGREGATE, "gestalt", amp_dtype=AMP_DTYPES[amp])
    return stages | {"gestalt map + Grad-CAM": with_gestalt_cam["gestalt map + Grad-CAM"]}


def memory_peaks(stages: Mapping[str, Callable[[], object]], device: torch.device) -> dict[str, tuple[float, float]]:
    """Per stage: MiB allocated before it and its peak (``max_memory_allocated``, reset before each stage)."""
    peaks = {}
    for name, run in stages.items():
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        peaks[name] = (before / 2**20, torch.cuda.max_memory_allocated(device) / 2**20)
    return peaks


def maps_part(device: torch.device, plan: Plan, out: Path, memory_out: Path) -> None:
    """Time every model × batch × dtype and append its rows to ``out`` and its memory peaks to ``memory_out``."""
    torch.backends.cudnn.benchmark = True
    for name in MODELS:
        model = load_model(name, weights="random", device=device)
        photos = photo_batch(model, plan, device)
        for batch_size in plan.batch_sizes:
            images = photos[:batch_size]
            for amp in plan.amps:
                stages = map_stages(model, images, amp)
                times = time_interleaved(stages, device, plan.warmup, plan.repeats, rotate=True)
                common = {"model": name, "device": str(device), "dtype": DTYPE_NAMES[amp], "batch_size": batch_size,
                          "input_size": images.shape[-1]}
                extra = {"weights": model.weights, "cudnn_benchmark": torch.backends.cudnn.benchmark}
                append_rows(out, [common | extra | row for row in summarise(times, batch_size)], MAPS_COLUMNS)
                if device.type == "cuda":
                    memory = [common | {"stage": stage, "allocated_before_mib": before, "peak_mib": peak,
                                        "source": "torch.cuda.max_memory_allocated"}
                              for stage, (before, peak) in memory_peaks(stages, device).items()]
                else:
                    memory = [common | {"stage": stage, "source": "NA: no per-batch peak on the CPU"}
                              for stage in stages]
                append_rows(memory_out, memory, MEMORY_COLUMNS)
                print(f"maps: {name} batch {batch_size} {DTYPE_NAMES[amp]} done", flush=True)


def missing_peers() -> list[str]:
    """The peer libraries (import names) that are not installed."""
    import importlib.util

    return [name for name in ("captum", "pytorch_grad_cam") if importlib.util.find_spec(name) is None]


def peers_part(device: torch.device, plan: Plan, out: Path) -> None:
    """Our class map, Captum Saliency and GradCAM in the same interleaved rounds, per model and batch (fp32)."""
    missing = missing_peers()
    if missing:
        append_rows(out, [{"method": name, "device": str(device),
                           "note": f"not installed ({name}): pip install -e '.[test]'"} for name in missing],
                    PEERS_COLUMNS)
        return
    torch.backends.cudnn.benchmark = True
    for name in MODELS:
        model = load_model(name, weights="random", device=device)
        photos = photo_batch(model, plan, device)
        for batch_size in plan.batch_sizes:
            images, cams = photos[:batch_size], []
            try:
                table, check, _, _ = methods(model, images, cams)
                times = time_interleaved(table, device, plan.warmup, plan.repeats, rotate=True)
            finally:
                for cam in cams:
                    cam.activations_and_grads.release()
            versus_ours = {row["stage"]: row["ratio_to_forward"] for row in summarise(times, batch_size, OURS)}
            common = {"model": name, "device": str(device), "dtype": "fp32", "batch_size": batch_size,
                      "input_size": images.shape[-1], "note": check}
            append_rows(out, [common | row | {"method": row["stage"], "time_vs_ours": versus_ours[row["stage"]]}
                              for row in summarise(times, batch_size)], PEERS_COLUMNS)
            print(f"peers: {name} batch {batch_size} done ({check})", flush=True)


def sample_tree(root: Path, part: str, count: int, dest: Path) -> Path:
    """An ImageNet tree at ``dest`` with the first ``count`` annotated images of ``root``'s ``part`` (links)."""
    annotations = sorted((root / "ILSVRC" / "Annotations" / "CLS-LOC" / part).rglob("*.xml"))[:count]
    if not annotations:
        raise SystemExit(f"gpu_check: {root}: no ILSVRC/Annotations/CLS-LOC/{part}/*.xml to sample")
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "LOC_synset_mapping.txt").parent.mkdir(parents=True)
    (dest / "LOC_synset_mapping.txt").symlink_to(root / "LOC_synset_mapping.txt")
    for xml in annotations:
        relative = xml.relative_to(root / "ILSVRC" / "Annotations")
        (image,) = (root / "ILSVRC" / "Data" / relative.parent).glob(f"{xml.stem}.*")
        for source, target in ((xml, dest / "ILSVRC" / "Annotations" / relative),
                               (image, dest / "ILSVRC" / "Data" / relative.parent / image.name)):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return dest


def demo_tree(count: int, dest: Path) -> list[Path]:
    """Folder-dataset roots at ``dest``, one per demo class, with the first ``count`` demo photos (alternating
    classes) and their annotations (links)."""
    shutil.rmtree(dest, ignore_errors=True)
    roots = []
    for image in demo_paths()[:count]:
        source = image.parent.parent
        xml = source / "annotations" / f"{image.stem}.xml"
        for path in (image, xml):
            target = dest / path.relative_to(source.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
        if dest / source.name not in roots:
            roots.append(dest / source.name)
    return roots


def dataset_settings(root: Path | None, part: str, limit: int | None, demo: int | None,
                     work: Path) -> tuple[str, dict, list[Path]]:
    """The workflow's dataset key, its ``datasets`` entry and the config files it is layered on: the first
    ``demo`` demo photos, or the ImageNet tree ``root`` (its first ``limit`` annotated images if set)."""
    if demo:
        return "demo", {"roots": [str(path) for path in demo_tree(demo, work / "demo")]}, []
    if root is None or not root.is_dir():
        raise SystemExit(f"gpu_check: ImageNet tree {root} not found (set GPU_CHECK_IMAGENET_ROOT)")
    tree = sample_tree(root, part, limit, work / "tree") if limit else root.absolute()
    return "imagenet", {"root": str(tree), "parts": [part]}, [REPO / "configs" / "imagenet_sample.yaml"]


def extraction_part(device: torch.device, plan: Plan, root: Path | None, part: str, limit: int | None,
                    demo: int | None, amp: str, workers: int, batch_size: int, work: Path, out: Path,
                    dataset: str) -> None:
    """Run the workflow's extraction (one shard) of ``demo`` demo photos or of the ImageNet tree ``root`` and
    append its images/s beside the pure map rate."""
    import time

    from sensitivity.datasets import read_manifest
    from sensitivity.store import MapStore

    work.mkdir(parents=True, exist_ok=True)
    key, entry, configs = dataset_settings(root, part, limit, demo, work)
    settings = {"datasets": {key: entry},
                "extraction": {"shards": 1, "device": device.type, "amp": amp, "workers": workers,
                               "batch_size": batch_size}}
    (work / "gpu_check.yaml").write_text(yaml.safe_dump(settings))
    store_path = f"results/{key}/maps/1-of-1.zarr"
    command = [sys.executable, "-m", "snakemake", store_path, "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(work), "--cores", str(workers + 1), "--resources", "gpu=1",
               "--configfile", str(REPO / "config.yaml"), *map(str, configs), str(work / "gpu_check.yaml")]
    env = {name: value for name, value in os.environ.items() if not name.startswith("SNAKEMAKE")}
    start = time.perf_counter()
    subprocess.run(command, cwd=work, env=env, check=True)
    snakemake_s = time.perf_counter() - start
    job = pd.read_csv(work / "results" / "benchmarks" / key / "extract" / "1-of-1.tsv", sep="\t").iloc[0]
    store = MapStore(work / store_path).attrs
    manifest = work / "results" / key / "manifest.csv"
    images = read_manifest(manifest)["image_id"].nunique() - len(store.get("skipped", []))
    pure = method_speed_table(manifest, work / "pure_map_rate.csv", {"name": store["model"], "weights": "random"},
                              store["target"], store["aggregate"], {store["method"]: store["method_settings"]},
                              batch_size, plan.warmup, plan.repeats, str(device), amp,
                              threads=torch.get_num_threads())
    pure_rate = float(pure.loc[pure["path"] == store["method"], "images_per_s"].iloc[0])
    rate = images / job["s"]
    append_rows(out, [{
        "dataset": dataset, "images": images, "device": str(device), "amp": amp, "batch_size": batch_size,
        "workers": workers, "model": store["model"], "method": store["method"], "target": store["target"],
        "aggregate": store["aggregate"], "extraction_images_per_s": rate, "pure_map_images_per_s": pure_rate,
        "extraction_to_pure": rate / pure_rate, "map_seconds_in_extraction": store["map_seconds"],
        "map_only_images_per_s_in_extraction": images / store["map_seconds"], "extract_job_s": job["s"],
        "non_map_s": job["s"] - store["map_seconds"], "extract_max_rss_mb": job["max_rss"],
        "snakemake_s": snakemake_s}], EXTRACTION_COLUMNS)


def device_line(device: str) -> str:
    """The device by name (``torch.cuda.get_device_name``), with torch, CUDA and cuDNN versions."""
    machine = machine_description()
    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else f"CPU {machine['cpu']}"
    return (f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, cuDNN "
            f"{torch.backends.cudnn.version() or 'none'}; {machine['usable_cores']} usable cores, "
            f"{machine['torch_threads']} torch threads; Python {machine['python']}")


def read_part(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table of ``table`` (numbers to 3 significant digits)."""
    def cell(value: object) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def maps_section(maps: pd.DataFrame, memory: pd.DataFrame | None) -> list[str]:
    """Time / forward per stage for every model, dtype and batch, forward images/s and the memory peak."""
    keys = ["model", "dtype", "batch_size", "input_size"]
    ratios = maps.pivot_table(index=keys, columns="stage", values="ratio_to_forward", sort=False)
    forward = maps[maps["stage"] == FORWARD].set_index(keys)["images_per_s"]
    table = ratios.drop(columns=FORWARD, errors="ignore").assign(**{"forward images/s": forward})
    if memory is not None and memory["peak_mib"].notna().any():
        table["peak MiB"] = memory.groupby(keys, sort=False)["peak_mib"].max()
    lines = ["## Maps against the forward pass (time / forward, median of the within-round ratios)", "",
             markdown(table.reset_index()), ""]
    bf16 = maps[(maps["dtype"] == "bf16") & (maps["stage"] == "class map")]
    for row in bf16.itertuples():
        verdict = "met" if row.ratio_to_forward <= MAP_RATIO_TARGET else "missed"
        lines.append(f"- {row.model}, batch {row.batch_size}, bf16: class map {row.ratio_to_forward:.2f}× forward "
                     f"(target ≤ {MAP_RATIO_TARGET}: {verdict})")
    return [*lines, ""]


def summary(out: Path, device: str) -> str:
    """``summary.md``: the device, each part's status, and the tables of the parts that wrote any."""
    status = read_part(out / "status.csv")
    lines = ["# GPU check", "", f"Device: {device_line(device)}", "", "## Parts", ""]
    lines += [markdown(status) if status is not None else "(no status.csv: the parts did not run)", ""]
    maps = read_part(out / "maps.csv")
    if maps is not None:
        lines += maps_section(maps, read_part(out / "memory.csv"))
    peers = read_part(out / "peers.csv")
    if peers is not None:
        shown = peers.drop(columns=["device", "spread_s", "repeats", "note"])
        lines += ["## Peers on the same batches (fp32)", "", markdown(shown), "",
                  *sorted({f"- {note}" for note in peers["note"].dropna()}), ""]
    extraction = read_part(out / "extraction.csv")
    if extraction is not None:
        lines += ["## Extraction through the workflow against the pure map rate", "", markdown(extraction), ""]
        for row in extraction.itertuples():
            verdict = "met" if row.extraction_to_pure >= EXTRACTION_TARGET else "missed"
            lines.append(f"- {row.dataset}: {row.extraction_images_per_s:.1f} images/s = {row.extraction_to_pure:.0%} "
                         f"of the pure map rate (target ≥ {EXTRACTION_TARGET:.0%}: {verdict}); the job spent "
                         f"{row.non_map_s:.1f} of its {row.extract_job_s:.1f} s outside the maps")
        lines.append("")
    tests = read_part(out / "cuda_tests.csv")
    if tests is not None:
        counts = tests["outcome"].value_counts().to_dict()
        lines += ["## CUDA tests (`pytest -m cuda`)", "", ", ".join(f"{n} {k}" for k, n in counts.items()) or "none",
                  ""]
        failed = tests[tests["outcome"].isin(["failed", "error"])]
        if len(failed):
            lines += [markdown(failed), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="command", required=True)
    for name in ("maps", "peers", "extraction"):
        sub = parts.add_parser(name)
        sub.add_argument("--device", default="cuda")
        sub.add_argument("--quick", action="store_true", help="tiny batches and few rounds (the CI run)")
        sub.add_argument("--out", type=Path, required=True, help="CSV the rows are appended to")
    parts.choices["maps"].add_argument("--memory", type=Path, required=True, help="CSV of the memory peaks")
    extraction = parts.choices["extraction"]
    source = extraction.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help="an ImageNet tree in the download's layout")
    source.add_argument("--demo", type=int, help="the first N demo photos of data/demo instead (quick runs)")
    extraction.add_argument("--part", default="val", help="its part (val, or train for a generated scale tree)")
    extraction.add_argument("--dataset", default="imagenet sample", help="its name in the table")
    extraction.add_argument("--limit", type=int, help="only the first N annotated images of --root")
    extraction.add_argument("--amp", default="bf16", choices=sorted(AMP_DTYPES))
    extraction.add_argument("--workers", type=int, default=8)
    extraction.add_argument("--batch-size", type=int, default=64)
    extraction.add_argument("--work", type=Path, required=True, help="folder of the workflow run")
    summary_parser = parts.add_parser("summary")
    summary_parser.add_argument("out_dir", type=Path)
    summary_parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    if args.command == "summary":
        (args.out_dir / "summary.md").write_text(summary(args.out_dir, args.device) + "\n")
        return
    device = checked_device(args.device)
    plan = make_plan(device, args.quick)
    if args.command == "maps":
        maps_part(device, plan, args.out, args.memory)
    elif args.command == "peers":
        peers_part(device, plan, args.out)
    else:
        extraction_part(device, plan, args.root, args.part, args.limit, args.demo, args.amp, args.workers,
                        args.batch_size, args.work, args.out, args.dataset)


if __name__ == "__main__":
    main()
