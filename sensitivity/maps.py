"""Sensitivity maps: |d target / d pixels| aggregated over colour channels, one forward + one backward.

Targets:
- ``"class"``: the score (logit) of the predicted class, or of a given class index per image;
- ``"gestalt"``: the Gestalt Total, the mean of the attention-map activations over (C, H, W); only the
  network's `features` part runs.

Gradients go to the input alone (`torch.autograd.grad`), parameters stay frozen and nothing is retained
after the call. With ``with_attention`` the pass also gives the class's Grad-CAM map
ReLU(Σ_k mean_ij(d score / d A_k) A_k) on the attention map (the last convolutional block's output A), for
the predicted or given class whatever the target: for the class target from the same backward pass, for the
Gestalt Total from a backward pass through the head alone (the Gestalt Total's own Grad-CAM would be the
channel mean of A, which the embedding already summarises; the class's map localizes better,
docs/RESULTS.md). Each image's objective depends on that image only, so a map never depends on the other
images of its batch (networks are in eval mode).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sensitivity.models import LoadedModel

Target = Literal["class", "gestalt"]
Aggregate = Literal["max", "mean"]
TARGETS: tuple[str, ...] = ("class", "gestalt")
AGGREGATES: tuple[str, ...] = ("max", "mean")


def pooled_activations(activations: torch.Tensor) -> torch.Tensor:
    """The classifier's embedding of each image (N, K) float32: the spatial mean of its last conv block's
    activations A (N, K, h, w), whose mean is the Gestalt Total."""
    return _at_least_float32(activations.detach()).mean(dim=(2, 3))


@dataclass
class Sensitivity:
    """Result of one batch: maps (N, H, W) float32; for the class target the class used; the logits when
    computed; with ``with_attention`` the class's Grad-CAM map (N, h, w) float32 at the attention map's size; and,
    where the pass ran the last conv block on its own (``with_attention``, the Gestalt target, or a clean
    pass), the classifier's embedding (:func:`pooled_activations`)."""

    maps: torch.Tensor
    classes: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    embedding: torch.Tensor | None = None


def _network(model: LoadedModel | nn.Module) -> nn.Module:
    return model.network if isinstance(model, LoadedModel) else model


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def aggregate_channels(gradient: torch.Tensor, aggregate: Aggregate) -> torch.Tensor:
    """(N, C, H, W) gradient → (N, H, W) map: max or mean of |gradient| over channels."""
    magnitude = gradient.abs()
    if aggregate == "max":
        return magnitude.amax(dim=1)
    if aggregate == "mean":
        return magnitude.mean(dim=1)
    raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Half-precision (autocast) outputs in float32; float32 and float64 unchanged."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def grad_cam(activations: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) attention map and its gradient → (N, h, w) ReLU(Σ_k mean_ij(gradient_k) activations_k),
    in float32 (float64 for a float64 network)."""
    weights = _at_least_float32(gradient).mean(dim=(2, 3), keepdim=True)
    return (weights * _at_least_float32(activations)).sum(dim=1).clamp_min(0)


def class_attention(head: nn.Module, activations: torch.Tensor, classes: torch.Tensor | None,
                    amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Grad-CAM map of the predicted (or given) class from the attention map A (N, C, h, w) alone: the head's
    forward and backward, never the convolutions below A. Returns the map (N, h, w), the logits and the class."""
    leaf = activations.detach().requires_grad_(True)
    with torch.enable_grad(), _autocast(leaf.device, amp_dtype):
        logits = _at_least_float32(head(leaf))
        chosen = chosen_classes(logits, classes)
        (gradient,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), leaf)
    return grad_cam(activations.detach(), gradient).detach(), logits.detach(), chosen


def chosen_classes(logits: torch.Tensor, classes: torch.Tensor | None) -> torch.Tensor:
    """The class per image (N,): the given ``classes``, else the predicted one."""
    chosen = logits.argmax(dim=1) if classes is None else torch.as_tensor(classes, device=logits.device).long()
    if chosen.shape != (len(logits),):
        raise ValueError(f"classes must have shape ({len(logits)},), got {tuple(chosen.shape)}")
    return chosen


def resize_attention(attention: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (N, h, w) → (N, size, size), pixel centres aligned as in image resizing."""
    if attention.shape[-2:] == (size, size):
        return attention
    return F.interpolate(attention[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def pool_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool (N, H, W) maps to (N, size, size) in exact blocks; H and W must be multiples of size."""
    height, width = maps.shape[-2:]
    if (height, width) == (size, size):
        return maps
    if height % size or width % size:
        raise ValueError(f"maps of {height}x{width} cannot be pooled to {size}x{size} in whole blocks")
    return F.avg_pool2d(maps[:, None], (height // size, width // size))[:, 0]


@dataclass
class InputGradient:
    """d target / d input of one batch (N, C, H, W) in the network's dtype, with what the pass also gave."""

    gradient: torch.Tensor
    classes: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    embedding: torch.Tensor | None = None


def input_gradient(
    model: LoadedModel | nn.Module,
    images: torch.Tensor,
    target: Target = "class",
    classes: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    with_logits: bool = False,
    with_attention: bool = False,
) -> InputGradient:
    """One forward and one backward pass: the gradient of the target with respect to ``images``.

    The shared core of the gradient map methods; see :func:`sensitivity` for the arguments.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    network = _network(model)
    if isinstance(model, LoadedModel):
        images = model.layout(images)
    split = hasattr(network, "features") and hasattr(network, "head")
    if (target == "gestalt" or with_attention) and not split:
        raise ValueError("the gestalt target and with_attention need a network with `features` and `head` "
                         "modules (use load_model)")
    inputs = images.detach().requires_grad_(True)
    logits = chosen = activations = None
    with torch.enable_grad(), _autocast(inputs.device, amp_dtype):
        if target == "gestalt":
            activations = network.features(inputs)
            objective = _at_least_float32(activations).mean(dim=tuple(range(1, activations.ndim))).sum()
            if with_logits and not with_attention:
                with torch.no_grad():
                    logits = _at_least_float32(network.head(activations.detach()))
        else:
            if with_attention:
                activations = network.features(inputs)
                logits = _at_least_float32(network.head(activations))
            else:
                logits = _at_least_float32(network(inputs))
            chosen = chosen_classes(logits, classes)
            objective = logits.gather(1, chosen[:, None]).sum()
    attention = None
    if with_attention and target == "class":
        gradient, activation_gradient = torch.autograd.grad(objective, (inputs, activations))
        attention = grad_cam(activations.detach(), activation_gradient).detach()
    else:
        (gradient,) = torch.autograd.grad(objective, inputs)
        if with_attention:  # the Gestalt Total's map, with the class's Grad-CAM from the head alone
            attention, logits, _ = class_attention(network.head, activations, classes, amp_dtype)
    return InputGradient(gradient, None if chosen is None else chosen.detach(),
                         None if logits is None else logits.detach(), attention,
                         None if activations is None else pooled_activations(activations))


def sensitivity(
    model: LoadedModel | nn.Module,
    images: torch.Tensor,
    target: Target = "class",
    aggregate: Aggregate = "max",
    classes: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    with_logits: bool = False,
    with_attention: bool = False,
) -> Sensitivity:
    """Sensitivity maps of a batch of preprocessed images (N, 3, H, W) on the model's device.

    `classes` (N,) int fixes the class per image for the class target and for the Grad-CAM map of
    `with_attention` (default: the predicted class).
    `amp_dtype` (torch.bfloat16 / torch.float16) runs the network under autocast; maps are float32.
    The gestalt target needs a network with a `features` module (every `load_model` network has one);
    its map never involves the head, but `with_logits` also runs the head on the (detached) attention
    map for the class, which costs only the head, not another forward pass. `with_attention` also returns
    the class's Grad-CAM map (needs the `features`/`head` split): from the same backward pass for the class
    target, from the head's own backward for the Gestalt Total.
    """
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    result = input_gradient(model, images, target, classes, amp_dtype, with_logits, with_attention)
    return Sensitivity(aggregate_channels(result.gradient.float(), aggregate), result.classes, result.logits,
                       result.attention, result.embedding)


def sensitivity_maps(
    model: LoadedModel | nn.Module,
    images: torch.Tensor,
    target: Target = "class",
    aggregate: Aggregate = "max",
    classes: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(N, H, W) float32 sensitivity maps; see `sensitivity` for the arguments."""
    return sensitivity(model, images, target, aggregate, classes, amp_dtype).maps
