"""Speed of sensitivity maps against a plain forward pass (paper §3.7: "little more than twice").

For each model, on one batch of real demo photos (``data/demo/*/images/*.jpg``, squash-preprocessed),
times these variants, interleaved within every repeat (in a rotating order) so that load from other
processes hits them alike:

- ``forward``: the network under ``torch.inference_mode`` (the reference, ratio 1);
- ``forward + autograd``: the same forward with the input requiring grad, no backward (the cost of
  recording the graph);
- ``class map`` / ``gestalt map``: :func:`sensitivity.maps.sensitivity` (one forward, one backward);
- ``image → box``: class map, then :meth:`BoxRegressor.predict` (pool 28) on it;
- ``forward [channels_last]`` / ``class map [channels_last]``: with a channels_last copy of the network
  and input; ``class map [channels_last input]``: the unchanged network fed a channels_last input (the
  convolutions then run NHWC too);
- ``class map [compile]``: with a ``torch.compile``-d copy of the network (skip with ``--no-compile``).

The maps of the last variants (and of ``class map`` under ``--amp`` or ``--channels-last``) are compared
with eager fp32 maps of the unchanged network.

Each timing runs enough calls to last ``--min-time`` seconds and records wall and process CPU time; the
ratios are taken per repeat (against that repeat's forward) and the table shows medians over repeats
(CPU-time ratios are the steadier ones on a shared machine). The CPU / wall column (median cores kept busy)
shows contention: with 2 threads it is near 2 on an idle machine and near 1 when other processes compete,
and then small-kernel networks (EfficientNet) slow down far more than the ratios suggest. Run from the
repository root:

    python benchmarks/bench_maps.py [--device cuda] [--amp bf16] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sensitivity.images import read_image
from sensitivity.maps import sensitivity
from sensitivity.models import LoadedModel, load_model
from sensitivity.regress import BoxRegressor

REPO = Path(__file__).resolve().parents[1]
DEMO_IMAGES = sorted((REPO / "data" / "demo").glob("*/images/*.jpg"))
WEIGHTS = {"efficientnet_lite0": None, "vgg16": "random"}  # no VGG weights offline; speed ignores values
AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = 1e-3  # max |map - eager map| / max(eager map) accepted for the channels_last/compile maps


def machine(threads: int, device: torch.device) -> str:
    """One line describing the machine: CPU model, cores, RAM, torch, threads (and GPU)."""
    cpu = platform.processor() or "unknown CPU"
    ram = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
        ram = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    line = f"{cpu}, {os.cpu_count()} cores{ram}, torch {torch.__version__}, {threads} threads"
    if device.type == "cuda":
        line += f", GPU {torch.cuda.get_device_name(device)}"
    return line


def demo_batch(model: LoadedModel, size: int, device: torch.device) -> torch.Tensor:
    """`size` demo photos taken alternately from each class folder, squash-preprocessed."""
    folders: dict[str, list[Path]] = {}
    for path in DEMO_IMAGES:
        folders.setdefault(path.parent.parent.name, []).append(path)
    mixed = [p for group in zip(*folders.values()) for p in group]
    if len(mixed) < size:
        raise SystemExit(f"need {size} demo images under {REPO / 'data' / 'demo'}, found {len(mixed)}")
    transform = model.preprocessing.transform("squash")
    return torch.stack([transform(read_image(p)) for p in mixed[:size]]).to(device)


def box_regressor(map_size: int, pool: int = 28, n: int = 256) -> BoxRegressor:
    """A ridge BoxRegressor fitted on random maps: predict's cost does not depend on the weights."""
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 1, size=(n, 2, 2))
    boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)  # x1, y1, x2, y2
    maps = rng.random((n, map_size, map_size), dtype=np.float32)
    return BoxRegressor(solver="ridge", pool=pool).fit(maps, boxes)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], calls: int, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds per call; CPU time is less sensitive to other processes' load."""
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls


def relative_difference(maps: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """(max, mean) of |maps - reference| / max(reference) over the batch."""
    error = (maps.float() - reference).abs() / reference.abs().max().clamp_min(1e-30)
    return float(error.max()), float(error.mean())


def variants(model: LoadedModel, images: torch.Tensor, args: argparse.Namespace) -> tuple[dict, dict[str, str]]:
    """Name → no-argument callable, and name → note (map difference, compile time or failure)."""
    amp = AMP[args.amp]
    device = images.device
    eager = sensitivity(model, images, "class", args.aggregate)  # the fp32 eager reference maps
    images = model.layout(images)  # every stage gets the batch in the layout sensitivity() uses
    network = model.network
    if args.channels_last:
        network.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    regressor = box_regressor(images.shape[-1])

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=amp) if amp is not None else contextlib.nullcontext()

    def forward() -> object:
        with torch.inference_mode(), autocast():
            return network(images)

    def forward_autograd() -> object:
        with torch.enable_grad(), autocast():
            return network(images.detach().requires_grad_(True))

    def class_map(net: torch.nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
        return lambda: sensitivity(net, inputs, "class", args.aggregate, amp_dtype=amp)

    def image_to_box() -> np.ndarray:
        maps = sensitivity(model, images, "class", args.aggregate, amp_dtype=amp).maps
        return regressor.predict(maps.cpu().numpy())

    table: dict[str, Callable[[], object]] = {
        "forward": forward,
        "forward + autograd": forward_autograd,
        "class map": class_map(network, images),
        "gestalt map": lambda: sensitivity(model, images, "gestalt", args.aggregate, amp_dtype=amp),
        "image → box": image_to_box,
    }
    notes: dict[str, str] = {}

    def check(name: str) -> None:
        result = table[name]()
        worst, mean = relative_difference(result.maps, eager.maps)
        same = bool(torch.equal(result.classes, eager.classes))
        verdict = "ok" if worst <= TOLERANCE and same else "DIFFERS"
        notes[name] = (f"vs eager fp32 maps: max rel. diff {worst:.1e} (mean {mean:.0e}), same classes {same} "
                       f"({verdict})")

    if args.channels_last or amp is not None:
        check("class map")
    if not args.channels_last:
        cl_network = copy.deepcopy(network).to(memory_format=torch.channels_last)
        cl_images = images.contiguous(memory_format=torch.channels_last)

        def forward_channels_last() -> object:
            with torch.inference_mode(), autocast():
                return cl_network(cl_images)

        table["forward [channels_last]"] = forward_channels_last
        table["class map [channels_last]"] = class_map(cl_network, cl_images)
        table["class map [channels_last input]"] = class_map(network, cl_images)
        check("class map [channels_last]")
        check("class map [channels_last input]")
    if args.compile:
        table["class map [compile]"] = class_map(torch.compile(copy.deepcopy(network)), images)
        start = time.perf_counter()
        try:
            check("class map [compile]")
        except Exception as error:  # inductor needs a working C++ toolchain: report and go on
            del table["class map [compile]"]
            notes["class map [compile]"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        else:
            notes["class map [compile]"] += f"; compilation {time.perf_counter() - start:.0f} s"
    return table, notes


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    model = load_model(name, weights=WEIGHTS.get(name), device=device)
    images = demo_batch(model, args.batch_size, device)
    table, notes = variants(model, images, args)
    calls = {}
    for variant, fn in table.items():  # warm-up, then enough calls per timing to last --min-time
        fn()
        calls[variant] = max(1, math.ceil(args.min_time / seconds_per_call(fn, 1, device)[0]))
    times: dict[str, list[tuple[float, float]]] = {variant: [] for variant in table}
    order = list(table)
    for repeat in range(args.repeats):
        for variant in order[repeat % len(order):] + order[: repeat % len(order)]:
            times[variant].append(seconds_per_call(table[variant], calls[variant], device))
    rows = []
    for variant, samples in times.items():
        ratios = [t[0] / f[0] for t, f in zip(samples, times["forward"])]
        cpu_ratios = [t[1] / f[1] for t, f in zip(samples, times["forward"])]
        seconds = statistics.median(t[0] for t in samples)
        rows.append({
            "model": name, "weights": model.weights, "variant": variant, "batch_size": args.batch_size,
            "ms_per_batch": 1e3 * seconds, "images_per_s": args.batch_size / seconds,
            "ratio_to_forward": statistics.median(ratios), "cpu_ratio_to_forward": statistics.median(cpu_ratios),
            "cores_busy": statistics.median(t[1] / t[0] for t in samples),
            "wall_s": [t[0] for t in samples], "cpu_s": [t[1] for t in samples], "calls_per_timing": calls[variant],
            "note": notes.get(variant, ""),
        })
    rows.extend({"model": name, "variant": key, "note": note} for key, note in notes.items() if key not in table)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | variant | ms / batch | images / s | wall time / forward | CPU time / forward | CPU / wall "
             "| note |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if "ms_per_batch" not in row:
            lines.append(f"| {row['model']} | {row['variant']} | – | – | – | – | – | {row['note']} |")
            continue
        lines.append(f"| {row['model']} | {row['variant']} | {row['ms_per_batch']:.0f} | {row['images_per_s']:.1f} "
                     f"| {row['ratio_to_forward']:.2f} | {row['cpu_ratio_to_forward']:.2f} | {row['cores_busy']:.1f} "
                     f"| {row['note']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(WEIGHTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=list(AMP), default="none")
    parser.add_argument("--channels-last", action="store_true", help="run every variant channels_last")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile variant")
    parser.add_argument("--aggregate", choices=("max", "mean"), default="max")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timing (calls are repeated)")
    parser.add_argument("--json", type=Path, help="also write the rows and settings here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = [row for name in args.models for row in bench_model(name, args, device)]
    settings = (f"batch {args.batch_size}, 224×224, device {device}, amp {args.amp}, "
                f"channels_last {args.channels_last}, aggregate {args.aggregate}, {args.repeats} repeats")
    print(f"Machine: {machine(args.threads, device)}\nSettings: {settings}\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(args.threads, device), "settings": settings,
                                         "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
