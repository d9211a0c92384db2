"""Map methods by name: the paper's gradient map and the saliency methods the field compares against.

Every method turns a batch of preprocessed images (N, 3, H, W) into one map per image at the input
resolution (N, H, W), float32, for the class target (a class score: the predicted class or a given one)
or the Gestalt Total, and returns it as a :class:`~sensitivity.maps.Sensitivity` with the class used, the
logits and, where asked, the class's Grad-CAM map (the second channel of the shape box model).

| name | map | passes (N images) |
|---|---|---|
| ``gradient`` | the paper's \\|d target / d x\\|, max or mean over RGB | 1 forward + 1 backward |
| ``input_x_gradient`` | \\|x ⊙ d target / d x\\| | 1 forward + 1 backward |
| ``smoothgrad`` | mean of the gradient map over ``samples`` noisy copies (σ = ``noise`` × the image's range) | 1 + ``samples`` forward/backward |
| ``integrated_gradients`` | \\|(x − 0) ⊙ ∫ d target / d x along 0 → x\\|, Gauss–Legendre, ``steps`` nodes | 1 + ``steps`` forward/backward |
| ``guided_backprop`` | the gradient with every ReLU/ReLU6 passing back only positive gradients | 1 forward + 1 backward |
| ``gradcam`` | ReLU(Σ_k mean(d target / d A_k) A_k) on the last conv block A, upsampled | 1 forward + the head's backward |
| ``cam`` | Σ_k w_k A_k (the class's weights of a global-average-pool + linear head; the channel mean for Gestalt) | 1 forward |

All are our own code on :func:`sensitivity.maps.input_gradient`, not Captum's, for three reasons
measured or checked in ``tests/test_map_methods.py`` and ``benchmarks/bench_peers.py``: they share the
class/Gestalt targets, autocast and channels-last layout of the paper's map; the noisy and interpolated
copies run as batches of N (Captum's NoiseTunnel stacks all ``samples`` × N copies into one batch, and
its default IntegratedGradients expands to ``steps`` × N); and Captum's GuidedBackprop overrides only
``nn.ReLU`` modules, so on EfficientNet-Lite0 (ReLU6) it silently returns the plain gradient. Where
the definitions agree, the tests check that our maps equal Captum's.

Maps never depend on the other images of their batch: SmoothGrad's noise is drawn per image from a
generator seeded by ``seed`` and the image's own bytes. Hooks (guided backprop only) are registered
inside one call and removed in ``finally``; parameters never receive gradients.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sensitivity.maps import (
    AGGREGATES,
    TARGETS,
    Aggregate,
    Sensitivity,
    Target,
    _at_least_float32,
    _autocast,
    aggregate_channels,
    chosen_classes,
    class_attention,
    grad_cam,
    input_gradient,
    pooled_activations,
    resize_attention,
    sensitivity,
)
from sensitivity.models import LoadedModel

MapFunction = Callable[..., Sensitivity]


@dataclass(frozen=True)
class MapMethod:
    """A registered method: its function and its settings with their defaults (ints and floats)."""

    name: str
    compute: MapFunction
    defaults: Mapping[str, int | float] = field(default_factory=dict)


_METHODS: dict[str, MapMethod] = {}
#: Methods whose map is of the last conv block, not of the input's channels: ``aggregate`` does not apply.
CONV_BLOCK_METHODS = ("gradcam", "cam")


def register_map_method(name: str, **defaults: int | float) -> Callable[[MapFunction], MapFunction]:
    """Decorator registering ``compute(model, images, target, aggregate, classes, amp_dtype, with_attention,
    **settings) -> Sensitivity`` under ``name``, with the defaults of its settings."""

    def decorate(compute: MapFunction) -> MapFunction:
        _METHODS[name] = MapMethod(name, compute, dict(defaults))
        return compute

    return decorate


def list_map_methods() -> list[str]:
    """Registered method names, in registration order."""
    return list(_METHODS)


def get_map_method(name: str) -> MapMethod:
    if name not in _METHODS:
        raise ValueError(f"unknown map method {name!r}; expected one of {list_map_methods()}")
    return _METHODS[name]


def method_settings(name: str, settings: Mapping[str, object] | None = None) -> dict[str, int | float]:
    """``settings`` checked against the method's (no unknown keys, positive numbers) with defaults filled in."""
    method = get_map_method(name)
    given = dict(settings or {})
    unknown = sorted(set(given) - set(method.defaults))
    if unknown:
        raise ValueError(f"map method {name!r} has no setting {unknown[0]!r}; its settings: {sorted(method.defaults)}")
    out = dict(method.defaults) | given
    for key, value in out.items():
        integer = isinstance(method.defaults[key], int)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise ValueError(f"map method {name!r}: {key} must be {'an integer' if integer else 'a number'}, "
                             f"got {value!r}")
        if value < (1 if integer and key != "seed" else 0):
            raise ValueError(f"map method {name!r}: {key} must be >= {1 if integer and key != 'seed' else 0}, "
                             f"got {value!r}")
    return out


def compute_maps(
    model: LoadedModel | nn.Module,
    images: torch.Tensor,
    method: str = "gradient",
    settings: Mapping[str, object] | None = None,
    target: Target = "class",
    aggregate: Aggregate = "max",
    classes: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    with_attention: bool = False,
) -> Sensitivity:
    """Maps (N, H, W) float32 of ``method`` for a batch (N, 3, H, W), with the class used (class target) and
    the logits; ``with_attention`` adds the class's Grad-CAM map (N, h, w), for either target, where the method is not itself
    a map of the last conv block (``gradcam``, ``cam``: None)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    chosen = get_map_method(method)
    return chosen.compute(model, images, target, aggregate, classes, amp_dtype, with_attention,
                          **method_settings(method, settings))


# --- shared passes ---------------------------------------------------------------------------------


def _split_network(model: LoadedModel | nn.Module, method: str) -> nn.Module:
    network = model.network if isinstance(model, LoadedModel) else model
    if not (hasattr(network, "features") and hasattr(network, "head")):
        raise ValueError(f"map method {method!r} needs a network with `features` and `head` modules (use load_model)")
    return network


def _layout(model: LoadedModel | nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.layout(images) if isinstance(model, LoadedModel) else images


@dataclass
class _CleanPass:
    """The last conv block's activations A of the clean images, the class used, the logits, the class's Grad-CAM
    map (the attention channel) and the target's Grad-CAM map (the ``gradcam`` method's map), where asked."""

    activations: torch.Tensor
    classes: torch.Tensor | None
    logits: torch.Tensor
    attention: torch.Tensor | None
    target_cam: torch.Tensor | None = None

    @property
    def embedding(self) -> torch.Tensor:
        return pooled_activations(self.activations)


def _clean_pass(network: nn.Module, images: torch.Tensor, target: Target, classes: torch.Tensor | None,
                amp_dtype: torch.dtype | None, with_attention: bool, target_cam: bool = False) -> _CleanPass:
    """One forward pass without gradients through ``features``; then the head (and, for Grad-CAM maps, its
    backward to A only, so never through the convolutions)."""
    with torch.no_grad(), _autocast(images.device, amp_dtype):
        activations = network.features(images)
    if target == "class" and (with_attention or target_cam):
        cam, logits, chosen = class_attention(network.head, activations, classes, amp_dtype)
        return _CleanPass(activations, chosen, logits, cam if with_attention else None, cam if target_cam else None)
    with torch.no_grad(), _autocast(images.device, amp_dtype):
        logits = _at_least_float32(network.head(activations))
    chosen = chosen_classes(logits, classes) if target == "class" else None
    attention = class_attention(network.head, activations, classes, amp_dtype)[0] if with_attention else None
    cam = None
    if target_cam:  # the Gestalt Total's Grad-CAM: its gradient at A is 1 / (C h w) everywhere
        cam = grad_cam(activations, torch.full_like(activations, 1.0 / activations[0].numel()))
    return _CleanPass(activations, chosen, logits, attention, cam)


# --- the methods -----------------------------------------------------------------------------------


@register_map_method("gradient")
def gradient_map(model, images, target, aggregate, classes, amp_dtype, with_attention) -> Sensitivity:
    """The paper's sensitivity map: one forward, one backward."""
    return sensitivity(model, images, target, aggregate, classes, amp_dtype, with_logits=True,
                       with_attention=with_attention)


@register_map_method("input_x_gradient")
def input_x_gradient_map(model, images, target, aggregate, classes, amp_dtype, with_attention) -> Sensitivity:
    """|x ⊙ gradient| of the same single pass (x: the preprocessed input)."""
    result = input_gradient(model, images, target, classes, amp_dtype, with_logits=True, with_attention=with_attention)
    maps = aggregate_channels((images * result.gradient).float(), aggregate)
    return Sensitivity(maps, result.classes, result.logits, result.attention, result.embedding)


def _image_seeds(images: torch.Tensor, seed: int) -> list[int]:
    """One 63-bit seed per image from ``seed`` and the image's bytes, so noise never depends on the batch."""
    data = images.detach().float().cpu().contiguous().numpy()
    return [int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8, key=seed.to_bytes(8, "little")).digest(),
                           "little") >> 1 for image in data]


def smoothgrad_noise(images: torch.Tensor, samples: int, noise: float, seed: int) -> Iterator[torch.Tensor]:
    """``samples`` noise tensors like ``images``: per image, Gaussian with σ = ``noise`` × (max − min) of that
    image (Smilkov et al.'s noise level), from a generator seeded by ``seed`` and the image itself."""
    spread = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))).float() * noise
    generators = [torch.Generator().manual_seed(s) for s in _image_seeds(images, seed)]
    for _ in range(samples):
        draws = torch.stack([torch.randn(images.shape[1:], generator=g) for g in generators])
        yield (draws * spread.cpu()[:, None, None, None]).to(images.device, images.dtype)


@register_map_method("smoothgrad", samples=8, noise=0.15, seed=0)
def smoothgrad_map(model, images, target, aggregate, classes, amp_dtype, with_attention, samples, noise,
                   seed) -> Sensitivity:
    """Mean over ``samples`` noisy copies of the gradient map, the class fixed by the clean image."""
    network = _split_network(model, "smoothgrad")
    clean = _clean_pass(network, _layout(model, images), target, classes, amp_dtype, with_attention)
    total = torch.zeros(images.shape[0], *images.shape[2:], device=images.device)
    for draw in smoothgrad_noise(images, samples, noise, seed):
        gradient = input_gradient(model, images + draw, target, clean.classes, amp_dtype).gradient
        total += aggregate_channels(gradient.float(), aggregate)
    return Sensitivity(total / samples, clean.classes, clean.logits, clean.attention, clean.embedding)


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α in (0, 1) and weights (summing to 1) of ``steps``-point Gauss–Legendre quadrature on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


@register_map_method("integrated_gradients", steps=16)
def integrated_gradients_map(model, images, target, aggregate, classes, amp_dtype, with_attention,
                             steps) -> Sensitivity:
    """|x ⊙ ∫_0^1 gradient(α x) dα| from the all-zero preprocessed input (the dataset's mean colour), by
    Gauss–Legendre quadrature; the class fixed by the clean image."""
    network = _split_network(model, "integrated_gradients")
    clean = _clean_pass(network, _layout(model, images), target, classes, amp_dtype, with_attention)
    integral = torch.zeros_like(images, dtype=torch.float32)
    for alpha, weight in zip(*gauss_legendre(steps)):
        gradient = input_gradient(model, images * float(alpha), target, clean.classes, amp_dtype).gradient
        integral += float(weight) * gradient.float()
    return Sensitivity(aggregate_channels(images.float() * integral, aggregate), clean.classes, clean.logits,
                       clean.attention, clean.embedding)


GUIDED_MODULES = (nn.ReLU, nn.ReLU6)


class _PositiveGradient(torch.autograd.Function):
    """Identity forward (a copy, so in-place modules after it stay legal); backward keeps gradients > 0."""

    @staticmethod
    def forward(ctx, output: torch.Tensor) -> torch.Tensor:
        return output.clone()

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> torch.Tensor:
        return gradient.clamp_min(0)


@contextmanager
def guided_relus(network: nn.Module) -> Iterator[int]:
    """While open, every ReLU / ReLU6 module of ``network`` passes back only positive gradients (guided
    backpropagation); yields how many modules that is. The forward hooks are removed on exit."""
    handles = [module.register_forward_hook(lambda _module, _inputs, output: _PositiveGradient.apply(output))
               for module in network.modules() if isinstance(module, GUIDED_MODULES)]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


@register_map_method("guided_backprop")
def guided_backprop_map(model, images, target, aggregate, classes, amp_dtype, with_attention) -> Sensitivity:
    """The gradient map with guided ReLUs (Springenberg et al.): one forward, one backward. The Grad-CAM map
    of the same pass is exact where the head has no ReLU (EfficientNet, ResNet); VGG's head's ReLUs are
    guided too."""
    network = model.network if isinstance(model, LoadedModel) else model
    with guided_relus(network) as count:
        if count == 0:
            raise ValueError("guided_backprop needs nn.ReLU or nn.ReLU6 modules; this network has none")
        return sensitivity(model, images, target, aggregate, classes, amp_dtype, with_logits=True,
                           with_attention=with_attention)


@register_map_method("gradcam")
def gradcam_map(model, images, target, aggregate, classes, amp_dtype, with_attention) -> Sensitivity:
    """Grad-CAM of the target on the last conv block, upsampled to the input: one forward pass, then the
    head's backward only (``aggregate`` does not apply)."""
    network = _split_network(model, "gradcam")
    clean = _clean_pass(network, _layout(model, images), target, classes, amp_dtype, False, target_cam=True)
    return Sensitivity(resize_attention(clean.target_cam, images.shape[-1]).float(), clean.classes, clean.logits, None,
                       clean.embedding)


def linear_head_weights(head: nn.Module) -> nn.Linear:
    """The one linear layer of a global-average-pool + linear head (CAM's condition), else ValueError."""
    leaves = [module for module in head.modules() if not list(module.children())]
    linear = [module for module in leaves if isinstance(module, nn.Linear)]
    allowed = (nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Linear)
    others = [type(module).__name__ for module in leaves if not isinstance(module, allowed)]
    pools = [module for module in leaves if isinstance(module, nn.AdaptiveAvgPool2d)]
    if len(linear) != 1 or others or len(pools) != 1 or pools[0].output_size not in (1, (1, 1)):
        raise ValueError("cam needs a head that is a global average pool and one linear layer; this head has "
                         f"{len(linear)} linear layer(s) and {others or 'no'} other layer(s)")
    return linear[0]


@register_map_method("cam")
def cam_map(model, images, target, aggregate, classes, amp_dtype, with_attention) -> Sensitivity:
    """Class activation map (Zhou et al.): Σ_k w_ck A_k for the class target (its spatial mean plus the bias
    is the logit), the channel mean of A for Gestalt (its spatial mean is the Gestalt Total); one forward
    pass, no backward, upsampled to the input (``aggregate`` does not apply)."""
    network = _split_network(model, "cam")
    clean = _clean_pass(network, _layout(model, images), target, classes, amp_dtype, with_attention=False)
    activations = _at_least_float32(clean.activations)
    if target == "class":
        weights = linear_head_weights(network.head).weight[clean.classes].to(activations.dtype)
        maps = torch.einsum("nk,nkhw->nhw", weights, activations)
    else:
        maps = activations.mean(dim=1)
    return Sensitivity(resize_attention(maps, images.shape[-1]).float(), clean.classes, clean.logits, None,
                       clean.embedding)
