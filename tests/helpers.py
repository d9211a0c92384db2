"""Helpers shared by the map tests: a tiny exact network, map comparison and hook inspection."""

from __future__ import annotations

import torch
from torch import nn

from sensitivity.models import SplitClassifier


def tiny_net(seed: int = 0) -> SplitClassifier:
    """conv → ReLU(inplace) → conv → ReLU | global average pool → linear, float64 (as captum's basic models)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    features = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(5, 3))
    torch.random.set_rng_state(generator_state)
    return SplitClassifier(features, head).double().eval()


def assert_maps_close(actual: torch.Tensor, expected: torch.Tensor, relative: float) -> None:
    """Equal up to `relative` × the largest value of the expected map (and not trivially zero)."""
    expected = expected.to(actual.dtype)
    scale = expected.abs().max()
    assert scale > 0, "reference map is all zero: the comparison would be vacuous"
    assert actual.shape == expected.shape
    error = (actual - expected).abs().max()
    assert error <= relative * scale, f"max error {error:.3g} > {relative:g} × {scale:.3g}"


def all_hooks(module: nn.Module) -> list[tuple[str, str]]:
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return [(name, kind) for name, sub in module.named_modules() for kind in kinds if getattr(sub, kind, None)]


def global_hooks() -> list[str]:
    from torch.nn.modules import module as module_module

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return [name for name in names if getattr(module_module, name, None)]
