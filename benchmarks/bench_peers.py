"""Our class-score map against its peers: Captum `Saliency` and pytorch-grad-cam `GradCAM`, same model,
batch and device.

For each model, one batch of real demo photos (``data/demo/*/images/*.jpg``, alternating classes,
squash-preprocessed) goes through these methods, all timed in the same interleaved rounds (the order
rotating every round, so that load from other processes hits them alike):

- ``forward``: the classifier under ``torch.inference_mode`` (the reference, ratio 1);
- ``ours``: :func:`sensitivity.maps.sensitivity`, class target, max over channels: one forward, one
  backward to the input, the predicted class found in the same forward;
- ``Captum Saliency``: ``Saliency(network).attribute(images, target=classes)`` (|gradient|), then max
  over channels, the map ours computes. The classes are given (the predicted ones, computed once,
  untimed): the method alone;
- ``Captum Saliency + class``: the same preceded by the forward pass a user needs to know the predicted
  class (Captum needs the target before its own forward);
- ``GradCAM``: ``GradCAM(model, target_layers=[network.features])(images)``, the predicted class, on the
  last convolutional block (the same attention layer as our Gestalt target), the map upsampled to the
  input size as the library returns it. It runs on a copy of the network (its hooks stay off ours); the
  network is frozen, so the input is made to require grad (else the library has nothing to
  back-propagate), and the backward reaches the input as ours does;
- ``GradCAM, trainable copy``: as the library is usually run, on a network whose parameters require
  grad (weight gradients are computed too) and a plain input.

The table gives ms per batch, images/s, time / forward and the peer's time / ours, each the median over
rounds of the within-round value. Before timing, our maps are compared with Captum's (same model, same
classes): they must agree to ``--tolerance`` × the largest map value. Run from the repository root (needs
``pip install '.[bench]'``):

    python benchmarks/bench_peers.py [--models efficientnet_lite0 vgg16] [--device cuda] [--json out.json]

``--suite methods`` times the other map methods of :mod:`sensitivity.map_methods` against Captum's
implementations of the same methods, class target, the classes given to Captum (untimed), as above:
InputXGradient, NoiseTunnel(Saliency) as SmoothGrad and IntegratedGradients (Gauss–Legendre), each with
Captum's default batching (all samples or steps in one batch of samples × N) and with ``N`` per batch as
ours, and GuidedBackprop. Where the two define the same map (InputXGradient, Integrated Gradients, Guided
Backprop on ReLU networks) the maps are compared first; Captum's GuidedBackprop overrides ``nn.ReLU`` only,
so on EfficientNet-Lite0 (ReLU6) its map is the plain gradient and the check reports the difference.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from sensitivity.maps import sensitivity
from sensitivity.models import LoadedModel, load_model
from sensitivity.speed import FORWARD, load_batch, machine_description, summarise, time_interleaved

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = {"efficientnet_lite0": None, "vgg16": "random"}  # no VGG weights offline; speed ignores values
OURS = "ours"


def demo_paths() -> list[Path]:
    """The demo photos, alternating between the class folders."""
    folders: dict[str, list[Path]] = {}
    for path in sorted((REPO / "data" / "demo").glob("*/images/*.jpg")):
        folders.setdefault(path.parent.parent.name, []).append(path)
    return [path for group in zip(*folders.values()) for path in group]


def relative_difference(maps: torch.Tensor, reference: torch.Tensor) -> float:
    """max |maps - reference| / max |reference| over the batch."""
    return float((maps - reference).abs().max() / reference.abs().max().clamp_min(1e-30))


def methods(model: LoadedModel, images: torch.Tensor,
            stack: list) -> tuple[dict[str, Callable[[], object]], str, float, bool]:
    """Method name → no-argument callable, then the check of our maps against Captum's: its description,
    the max relative difference and whether the classes agree.

    ``stack`` collects the GradCAM objects, to release their hooks when the caller is done.
    """
    from captum.attr import Saliency
    from pytorch_grad_cam import GradCAM

    network = model.network
    images = model.layout(images)  # every method gets the batch in the layout our maps use
    with torch.no_grad():  # not inference_mode: Captum indexes its graph's output with these
        classes = network(images).argmax(dim=1)
    saliency = Saliency(network)

    def forward() -> object:
        with torch.inference_mode():
            return network(images)

    def captum_map() -> torch.Tensor:
        return saliency.attribute(images, target=classes, abs=True).amax(dim=1)

    def captum_with_class() -> torch.Tensor:
        with torch.no_grad():
            predicted = network(images).argmax(dim=1)
        return saliency.attribute(images, target=predicted, abs=True).amax(dim=1)

    frozen = copy.deepcopy(network)
    trainable = copy.deepcopy(network).requires_grad_(True)
    frozen_cam = GradCAM(model=frozen, target_layers=[frozen.features])
    trainable_cam = GradCAM(model=trainable, target_layers=[trainable.features])
    stack.extend([frozen_cam, trainable_cam])

    ours = sensitivity(model, images, "class", "max")
    error = relative_difference(ours.maps, captum_map())
    same_classes = bool(torch.equal(ours.classes, classes))
    check = f"ours vs Captum Saliency max over channels: max rel. diff {error:.1e}, same classes {same_classes}"
    table = {
        FORWARD: forward,
        OURS: lambda: sensitivity(model, images, "class", "max").maps,
        "Captum Saliency": captum_map,
        "Captum Saliency + class": captum_with_class,
        "GradCAM": lambda: frozen_cam(input_tensor=images.detach().requires_grad_(True), targets=None),
        "GradCAM, trainable copy": lambda: trainable_cam(input_tensor=images, targets=None),
    }
    return table, check, error, same_classes


def map_method_peers(model: LoadedModel, images: torch.Tensor,
                     samples: int) -> tuple[dict[str, Callable[[], object]], str, dict[str, str]]:
    """Our SmoothGrad, Integrated Gradients, Input × Gradient and Guided Backprop beside Captum's, ``samples``
    noisy copies or quadrature steps each; the check of the maps both define the same way; and each stage's
    own implementation (the reference of its time / ours)."""
    from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency

    from sensitivity.map_methods import compute_maps

    network = model.network
    images = model.layout(images)
    n = len(images)
    with torch.no_grad():
        classes = network(images).argmax(dim=1)
    spread = float((images.amax() - images.amin()) * 0.15)

    def ours(method: str, **settings) -> Callable[[], torch.Tensor]:
        return lambda: compute_maps(model, images, method, settings, "class", "max").maps

    def smoothgrad(batch: int | None) -> Callable[[], torch.Tensor]:
        tunnel = NoiseTunnel(Saliency(network))
        return lambda: tunnel.attribute(images, nt_type="smoothgrad", nt_samples=samples, stdevs=spread, target=classes,
                                        nt_samples_batch_size=batch, abs=True).amax(dim=1)

    def integrated(batch: int | None) -> Callable[[], torch.Tensor]:
        return lambda: IntegratedGradients(network).attribute(images, baselines=0.0, target=classes, n_steps=samples,
                                                              method="gausslegendre", internal_batch_size=batch
                                                              ).abs().amax(dim=1)

    def captum(attribution) -> Callable[[], torch.Tensor]:
        return lambda: attribution(network).attribute(images, target=classes).abs().amax(dim=1)

    checks = []
    for label, method, settings, peer in (("Input × Gradient", "input_x_gradient", {}, captum(InputXGradient)),
                                          ("Integrated Gradients", "integrated_gradients", {"steps": samples},
                                           integrated(None)),
                                          ("Guided Backprop", "guided_backprop", {}, captum(GuidedBackprop))):
        difference = relative_difference(ours(method, **settings)(), peer())
        checks.append(f"{label}: max rel. diff {difference:.1e}")
    table = {
        FORWARD: lambda: network(images).detach(),
        "ours input_x_gradient": ours("input_x_gradient"),
        "Captum InputXGradient": captum(InputXGradient),
        f"ours smoothgrad ({samples})": ours("smoothgrad", samples=samples),
        f"Captum NoiseTunnel smoothgrad ({samples}, one batch)": smoothgrad(None),
        f"Captum NoiseTunnel smoothgrad ({samples}, batches of N)": smoothgrad(n),
        f"ours integrated_gradients ({samples})": ours("integrated_gradients", steps=samples),
        f"Captum IntegratedGradients ({samples}, one batch)": integrated(None),
        f"Captum IntegratedGradients ({samples}, batches of N)": integrated(n),
        "ours guided_backprop": ours("guided_backprop"),
        "Captum GuidedBackprop": captum(GuidedBackprop),
    }
    pairs, current = {FORWARD: FORWARD}, FORWARD
    for stage in list(table)[1:]:
        current = stage if stage.startswith("ours") else current
        pairs[stage] = current
    return table, "; ".join(checks), pairs


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> tuple[list[dict], str]:
    model = load_model(name, weights=WEIGHTS.get(name), device=device)
    images = load_batch(demo_paths(), model, args.batch_size, device)
    if len(images) < args.batch_size:
        raise SystemExit(f"only {len(images)} readable demo photos for a batch of {args.batch_size}")
    cams: list = []
    try:
        if args.suite == "methods":
            table, check, pairs = map_method_peers(model, images, args.samples)
        else:
            table, check, error, same_classes = methods(model, images, cams)
            pairs = dict.fromkeys(table, OURS)
            if error > args.tolerance or not same_classes:
                raise SystemExit(f"{name}: {check}: our maps differ from Captum's")
        times = time_interleaved(table, device, args.warmup, args.repeats, rotate=True)
    finally:
        for cam in cams:
            cam.activations_and_grads.release()
    rows = summarise(times, len(images))
    versus_ours = {stage: next(row["ratio_to_forward"] for row in summarise(times, len(images), reference=ours)
                               if row["stage"] == stage) for stage, ours in pairs.items()}
    for row in rows:
        method = row.pop("stage")
        row.update(model=name, weights=model.weights, method=method, batch_size=len(images), device=str(device),
                   ms_per_batch=1e3 * row["seconds_per_batch"], time_vs_ours=versus_ours[method],
                   seconds=times[method])
    return rows, f"{name}: {check}"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | method | ms / batch | images / s | time / forward | time / ours |",
             "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['method']} | {row['ms_per_batch']:.0f} | {row['images_per_s']:.1f} "
                     f"| {row['ratio_to_forward']:.2f} | {row['time_vs_ours']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(WEIGHTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tolerance", type=float, default=1e-5, help="accepted max |ours - Captum| / max map")
    parser.add_argument("--suite", choices=("saliency", "methods"), default="saliency",
                        help="the gradient map against Saliency and GradCAM, or the other map methods against Captum's")
    parser.add_argument("--samples", type=int, default=8, help="methods suite: SmoothGrad samples and IG steps")
    parser.add_argument("--json", type=Path, help="also write the rows, checks and settings here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    warnings.filterwarnings("ignore", message=".*(requires_grad|did not already require gradients).*")
    rows, checks = [], []
    for name in args.models:
        model_rows, check = bench_model(name, args, device)
        rows += model_rows
        checks.append(check)
    machine = machine_description()
    settings = (f"batch {args.batch_size}, 224×224 real demo photos, device {device}, {args.threads} threads, "
                f"{args.warmup} warm-up + {args.repeats} interleaved rounds (medians)")
    machine_line = ", ".join(f"{key} {value}" for key, value in machine.items())
    print(f"Machine: {machine_line}\nSettings: {settings}\n" + "\n".join(checks) + "\n")
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": settings, "checks": checks,
                                         "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
