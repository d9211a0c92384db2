"""Sensitivity maps: |d target / d pixels| aggregated over colour channels, one forward + one backward.

Targets:
- ``"class"``: the score (logit) of the predicted class, or of a given class index per image;
- ``"gestalt"``: the Gestalt Total, the mean of the attention-map activations over (C, H, W); only the
  network's `features` part runs.

Gradients go to the input alone (`torch.autograd.grad`), parameters stay frozen and nothing is retained
after the call. Each image's objective depends on that image only, so a map never depends on the other
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


@dataclass
class Sensitivity:
    """Result of one batch: maps (N, H, W) float32, and for the class target the class used and logits."""

    maps: torch.Tensor
    classes: torch.Tensor | None = None
    logits: torch.Tensor | None = None


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


def pool_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool (N, H, W) maps to (N, size, size) in exact blocks; H and W must be multiples of size."""
    height, width = maps.shape[-2:]
    if (height, width) == (size, size):
        return maps
    if height % size or width % size:
        raise ValueError(f"maps of {height}x{width} cannot be pooled to {size}x{size} in whole blocks")
    return F.avg_pool2d(maps[:, None], (height // size, width // size))[:, 0]


def sensitivity(
    model: LoadedModel | nn.Module,
    images: torch.Tensor,
    target: Target = "class",
    aggregate: Aggregate = "max",
    classes: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
    with_logits: bool = False,
) -> Sensitivity:
    """Sensitivity maps of a batch of preprocessed images (N, 3, H, W) on the model's device.

    `classes` (N,) int fixes the class per image for the class target (default: the predicted class).
    `amp_dtype` (torch.bfloat16 / torch.float16) runs the network under autocast; maps are float32.
    The gestalt target needs a network with a `features` module (every `load_model` network has one);
    its map never involves the head, but `with_logits` also runs the head on the (detached) attention
    map for the class, which costs only the head, not another forward pass.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {AGGREGATES}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    network = _network(model)
    inputs = images.detach().requires_grad_(True)
    logits = chosen = None
    with torch.enable_grad(), _autocast(inputs.device, amp_dtype):
        if target == "gestalt":
            if not hasattr(network, "features"):
                raise ValueError("the gestalt target needs a network with a `features` module (use load_model)")
            activations = network.features(inputs)
            objective = activations.float().mean(dim=tuple(range(1, activations.ndim))).sum()
            if with_logits:
                with torch.no_grad():
                    logits = network.head(activations.detach()).float()
        else:
            logits = network(inputs).float()
            chosen = logits.argmax(dim=1) if classes is None else torch.as_tensor(classes, device=logits.device)
            if chosen.shape != (len(inputs),):
                raise ValueError(f"classes must have shape ({len(inputs)},), got {tuple(chosen.shape)}")
            objective = logits.gather(1, chosen[:, None].long()).sum()
    (gradient,) = torch.autograd.grad(objective, inputs)
    maps = aggregate_channels(gradient.float(), aggregate)
    return Sensitivity(maps, None if chosen is None else chosen.detach(), None if logits is None else logits.detach())


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
