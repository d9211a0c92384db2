"""Our maps against a peer implementation: Captum's `Saliency` (|d output / d input|), aggregated the same way.

The class map is Saliency of the predicted class's logit; the Gestalt map is Saliency of the per-image mean of
the attention map (a scalar output, so no target). Both must agree with ours to rounding, on a tiny float64
network and on EfficientNet-Lite0 with its real weights on real photos.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sensitivity.maps import sensitivity
from sensitivity.models import SplitClassifier

captum_attr = pytest.importorskip(
    "captum.attr", reason="captum is not installed: pip install -e '.[test]' (or '.[bench]') to compare with it"
)
# Captum sets requires_grad on the input itself (and resets it afterwards), and says so every call.
pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning")


def captum_maps(network: nn.Module, images: torch.Tensor, target: str, aggregate: str,
                classes: torch.Tensor | None = None) -> torch.Tensor:
    """Captum Saliency's |gradient|, max or mean over channels: (N, H, W)."""
    if target == "class":
        magnitude = captum_attr.Saliency(network).attribute(images, target=classes, abs=True)
    else:
        gestalt = lambda x: network.features(x).mean(dim=(1, 2, 3))  # noqa: E731  one scalar per image
        magnitude = captum_attr.Saliency(gestalt).attribute(images, abs=True)
    return magnitude.amax(dim=1) if aggregate == "max" else magnitude.mean(dim=1)


def assert_same_maps(ours: torch.Tensor, theirs: torch.Tensor, relative: float) -> None:
    scale = theirs.abs().max()
    assert scale > 0, "Captum's map is all zero: the comparison would be vacuous"
    error = (ours - theirs).abs().max()
    assert error <= relative * scale, f"max |ours - Captum| {error:.3g} > {relative:g} × {scale:.3g}"


def tiny_net() -> SplitClassifier:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 5, 3, padding=1),
                             nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(5, 3))
    return SplitClassifier(features, head).double().eval().requires_grad_(False)


@pytest.mark.parametrize("target", ["class", "gestalt"])
@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_tiny_float64_maps_equal_captum_saliency(target, aggregate):
    network = tiny_net()
    images = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = sensitivity(network, images, target, aggregate)
    theirs = captum_maps(network, images, target, aggregate, ours.classes)
    assert ours.maps.dtype == torch.float32  # maps are float32 whatever the network computes in
    assert_same_maps(ours.maps, theirs.float(), 1e-6)


def test_lite0_class_maps_of_real_photos_equal_captum_saliency(lite0, demo_batch):
    ours = sensitivity(lite0, demo_batch, "class", "max")
    with torch.no_grad():  # not inference_mode: Captum indexes the graph's output with these
        predicted = lite0.network(demo_batch).argmax(dim=1)
    assert torch.equal(ours.classes, predicted)
    # Captum gets the batch in the memory format our maps run in (float32 kernels of another layout sum in
    # another order, see test_maps.test_lite0_runs_channels_last_with_the_same_maps).
    theirs = captum_maps(lite0.network, lite0.layout(demo_batch), "class", "max", predicted)
    assert_same_maps(ours.maps, theirs, 1e-6)


def test_lite0_gestalt_maps_of_real_photos_equal_captum_saliency(lite0, demo_batch):
    ours = sensitivity(lite0, demo_batch[:2], "gestalt", "max").maps
    assert_same_maps(ours, captum_maps(lite0.network, lite0.layout(demo_batch[:2]), "gestalt", "max"), 1e-6)
