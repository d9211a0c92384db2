"""Speed of the map paths against a plain forward pass, measured on one batch of real images.

Shared timing code of the workflow's ``results/speed.csv`` (:func:`speed_table`), the paper's §3.7
(:mod:`sensitivity.paper.speed`) and the scripts in ``benchmarks/``:

- :func:`machine_description`: CPU model, cores, torch and its threads, GPU;
- :func:`time_interleaved`: every stage once per round, rounds repeated, so that slow drifts of a
  shared machine hit every stage alike; :func:`summarise` turns the rounds into medians and ratios;
- :func:`load_batch`: the first readable images of a list, preprocessed as the extraction does;
  :func:`timing_setup` loads the model with them; :func:`load_average` says how busy the machine was;
- :func:`map_paths` / :func:`measure_paths`: the stages of the workflow's paths (forward, class map,
  Gestalt map, image → box).

The ratio of a stage to the forward pass is taken within each round (both measured seconds apart)
and the median over rounds is reported: steadier on a loaded machine than a ratio of medians.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sensitivity.localize import map_options, regression_boxes
from sensitivity.maps import sensitivity
from sensitivity.models import AMP_DTYPES, LoadedModel, device_clock, resolve_device

FORWARD = "forward"


def machine_description() -> dict[str, object]:
    """CPU model, usable cores, torch and its threads, and the GPU if any."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu or "unknown", "usable_cores": cores, "logical_cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "python": platform.python_version()}


def time_interleaved(stages: Mapping[object, Callable[[], object]], device: torch.device, warmup: int = 2,
                     repeats: int = 7, rotate: bool = False) -> dict[object, list[float]]:
    """Seconds of each stage per round, rounds interleaving the stages, after ``warmup`` untimed rounds.

    ``rotate`` starts round r at stage r (mod the number of stages), so that no stage always runs right
    after the same other one. CUDA work is synchronised before each clock read.
    """
    for _ in range(warmup):
        for run in stages.values():
            run()
    names = list(stages)
    times: dict[object, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names) if rotate and names else 0
        for name in names[shift:] + names[:shift]:
            start = device_clock(device)
            stages[name]()
            times[name].append(device_clock(device) - start)
    return times


def summarise(times: Mapping[object, list[float]], batch_size: int, reference: object = FORWARD) -> list[dict]:
    """Per stage: median seconds per batch, images/s and the median over rounds of its time / ``reference``'s."""
    rows = []
    for name, values in times.items():
        median = statistics.median(values)
        ratios = [value / ref for value, ref in zip(values, times[reference])]
        rows.append({"stage": name, "seconds_per_batch": median, "images_per_s": batch_size / median,
                     "ratio_to_forward": statistics.median(ratios), "repeats": len(values),
                     "spread_s": max(values) - min(values)})
    return rows


def load_batch(paths: Iterable[str | Path], model: LoadedModel, batch_size: int,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The first ``batch_size`` readable images of ``paths``, squash-preprocessed: (B, 3, S, S) on ``device``.

    Images are decoded as the extraction does (``max_side`` twice the input size); unreadable ones are
    passed over, so B is smaller when fewer can be read. Raises ValueError when none can.
    """
    from sensitivity.images import ImageReadError, read_image

    transform = model.preprocessing.transform("squash")
    batch = []
    for path in paths:
        try:
            batch.append(transform(read_image(path, max_side=2 * model.preprocessing.size)))
        except ImageReadError:  # an unreadable image is just not used for timing
            continue
        if len(batch) == batch_size:
            break
    if not batch:
        raise ValueError("no readable image to time")
    return torch.stack(batch).to(device)


def forward_stage(model: LoadedModel, images: torch.Tensor,
                  amp_dtype: torch.dtype | None = None) -> Callable[[], torch.Tensor]:
    """The classification the maps are measured against: the network under ``torch.inference_mode`` (and
    autocast to ``amp_dtype``) on ``images`` in the layout the maps get them."""
    forward_images = model.layout(images)

    def forward() -> torch.Tensor:
        with torch.inference_mode(), contextlib.ExitStack() as stack:
            if amp_dtype is not None:
                stack.enter_context(torch.autocast(images.device.type, dtype=amp_dtype))
            return model.network(forward_images)

    return forward


def map_paths(model: LoadedModel, images: torch.Tensor, aggregate: str, box_target: str,
              regressor=None, amp_dtype: torch.dtype | None = None) -> dict[str, Callable[[], object]]:
    """The timed stages: ``forward`` (the classification), ``class map``, ``gestalt map``, ``<target> map +
    Grad-CAM`` (the ``box_target`` map with the attention map and logits the extraction stores) and, with a
    fitted :class:`~sensitivity.regress.BoxRegressor`, ``image → box`` (what ``sensitivity localize`` does:
    the map of the regressor's map method, and the attention map for a shape regressor, then its boxes),
    each a no-argument callable on ``images``."""
    def map_of(target: str, extras: bool = False) -> Callable[[], torch.Tensor]:
        return lambda: sensitivity(model, images, target, aggregate, amp_dtype=amp_dtype, with_logits=extras,
                                   with_attention=extras).maps

    stages = {FORWARD: forward_stage(model, images, amp_dtype), "class map": map_of("class"), "gestalt map": map_of("gestalt"),
              f"{box_target} map + Grad-CAM": map_of(box_target, extras=True)}
    if regressor is not None:
        options = map_options(regressor, model=model.name, target=box_target, aggregate=aggregate)
        method, settings = options["method"], options["settings"]

        def image_to_box() -> np.ndarray:
            return regression_boxes(model, images, box_target, aggregate, regressor, amp_dtype, method, settings)[1]

        stages["image → box"] = image_to_box
    return stages


def measure_paths(model: LoadedModel, images: torch.Tensor, aggregate: str, box_target: str, regressor=None,
                  amp: str = "none", warmup: int = 2, repeats: int = 7) -> pd.DataFrame:
    """One row per stage of :func:`map_paths` (column ``path``) with images/s and the ratio to the forward pass."""
    stages = map_paths(model, images, aggregate, box_target, regressor, AMP_DTYPES[amp])
    times = time_interleaved(stages, images.device, warmup, repeats, rotate=True)
    table = pd.DataFrame(summarise(times, len(images))).rename(columns={"stage": "path"})
    dtype = "float32" if amp == "none" else f"autocast {str(AMP_DTYPES[amp]).removeprefix('torch.')}"
    table.insert(1, "target", [box_target if path == "image → box" else "" for path in table["path"]])
    return table.assign(model=model.name, weights=model.weights, device=str(images.device), dtype=dtype,
                        batch_size=len(images), input_size=images.shape[-1], aggregate=aggregate)


def load_average() -> float:
    """The 1-minute load average (NaN where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def timing_setup(paths: Iterable[str | Path], model: dict, batch_size: int, device: str,
                 threads: int) -> tuple[LoadedModel, torch.Tensor]:
    """The model on its device, torch limited to ``threads``, and the first ``batch_size`` readable images of
    ``paths``."""
    from sensitivity.models import load_model

    torch.set_num_threads(max(1, threads))
    torch_device = resolve_device(device)
    loaded = load_model(model["name"], model.get("weights"), torch_device)
    return loaded, load_batch(paths, loaded, batch_size, torch_device)


def manifest_images(manifest_path: str | Path) -> pd.Series:
    """The image paths of a dataset's manifest, each once, in manifest order."""
    from sensitivity.datasets import read_manifest

    return read_manifest(manifest_path).drop_duplicates("image_id")["path"]


def _with_machine(table: pd.DataFrame, load_before: float, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``table``, then the machine's description and its load average before and after: other
    processes slow every stage and skew the ratios, and the load average says how busy the machine was."""
    machine = machine_description()
    table = table.assign(**machine, load_average_1min_before=load_before, load_average_1min_after=load_average())
    return table[[*columns, *machine, "load_average_1min_before", "load_average_1min_after"]]


def speed_table(manifest_path: str | Path, regressor_path: str | Path | None, output_path: str | Path,
                model: dict, target: str, aggregate: str, batch_size: int = 16, warmup: int = 2,
                repeats: int = 7, device: str = "auto", amp: str = "none", threads: int = 2) -> pd.DataFrame:
    """``results/speed.csv``: the map paths of ``model`` on the first ``batch_size`` readable images of a
    dataset's manifest, the box step with the dataset's fitted regressor (``regressor_path``; None leaves
    ``image → box`` out). ``target``/``aggregate`` are the dataset's. Machine columns are appended."""
    from sensitivity.box_model import load_box_model

    loaded, images = timing_setup(manifest_images(manifest_path), model, batch_size, device, threads)
    regressor = load_box_model(regressor_path) if regressor_path else None
    load_before = load_average()
    table = measure_paths(loaded, images, aggregate, target, regressor, amp, warmup, repeats)
    table = _with_machine(table, load_before, [
        "model", "weights", "device", "dtype", "batch_size", "input_size", "aggregate", "path", "target",
        "images_per_s", "ratio_to_forward", "seconds_per_batch", "spread_s", "repeats"])
    table.to_csv(output_path, index=False, float_format="%.6g")
    return table


def method_speed_table(manifest_path: str | Path, output_path: str | Path, model: dict, target: str,
                       aggregate: str, methods: Mapping[str, Mapping[str, object]], batch_size: int = 16,
                       warmup: int = 1, repeats: int = 3, device: str = "auto", amp: str = "none",
                       threads: int = 2) -> pd.DataFrame:
    """Images/s of each map method of ``methods`` (name → settings) as the extraction computes it (the map, the
    logits and the Grad-CAM map where the method gives one), beside the forward pass in the same interleaved
    rounds, on the first ``batch_size`` readable images of a dataset's manifest. Machine columns are appended."""
    from sensitivity.map_methods import compute_maps

    loaded, images = timing_setup(manifest_images(manifest_path), model, batch_size, device, threads)
    amp_dtype = AMP_DTYPES[amp]

    def method_map(name: str, settings: Mapping[str, object]) -> Callable[[], torch.Tensor]:
        return lambda: compute_maps(loaded, images, name, settings, target, aggregate, amp_dtype=amp_dtype,
                                    with_attention=True).maps

    stages = {FORWARD: forward_stage(loaded, images, amp_dtype)} | {name: method_map(name, settings)
                                                                   for name, settings in methods.items()}
    load_before = load_average()
    times = time_interleaved(stages, images.device, warmup, repeats, rotate=True)
    table = pd.DataFrame(summarise(times, len(images))).rename(columns={"stage": "path"})
    table = table.assign(model=loaded.name, device=str(images.device), amp=amp, batch_size=len(images),
                         target=target, aggregate=aggregate)
    table = _with_machine(table, load_before, [
        "model", "device", "amp", "batch_size", "target", "aggregate", "path", "images_per_s", "ratio_to_forward",
        "seconds_per_batch", "spread_s", "repeats"])
    table.to_csv(output_path, index=False, float_format="%.6g")
    return table
