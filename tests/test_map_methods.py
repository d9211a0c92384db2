"""Map methods: each against an independent reference (Captum where it defines the same map, autograd or the
network's own arithmetic otherwise), their settings, batch invariance and hook hygiene."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import all_hooks, assert_maps_close, global_hooks, tiny_net
from torch import nn

from sensitivity.map_methods import (
    compute_maps,
    gauss_legendre,
    guided_relus,
    list_map_methods,
    method_settings,
    smoothgrad_noise,
)
from sensitivity.maps import AGGREGATES, sensitivity
from sensitivity.models import SplitClassifier

captum_attr = pytest.importorskip("captum.attr", reason="captum is not installed: pip install -e '.[test]'")
pytestmark = [pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
              pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations:UserWarning")]

METHODS = ["gradient", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "cam"]
CHEAP = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 3}}


def images(n: int = 3, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


class Gestalt(nn.Module):
    """The per-image Gestalt Total as a module (Captum's GuidedBackprop hooks modules)."""

    def __init__(self, network: SplitClassifier) -> None:
        super().__init__()
        self.features = network.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(1, 2, 3))


def aggregate_abs(attribution: torch.Tensor, aggregate: str) -> torch.Tensor:
    magnitude = attribution.abs()
    return magnitude.amax(dim=1) if aggregate == "max" else magnitude.mean(dim=1)


def captum_attribution(attribution, network: SplitClassifier, x: torch.Tensor, target: str, classes, **kwargs):
    """A Captum attribution of the class logit (given classes) or of the per-image Gestalt Total."""
    if target == "class":
        return attribution(network).attribute(x, target=classes, **kwargs)
    return attribution(Gestalt(network)).attribute(x, **kwargs)


# --- registry and settings -------------------------------------------------------------------------


def test_registry_lists_the_seven_methods_in_order():
    assert list_map_methods() == METHODS


@pytest.mark.parametrize(("name", "settings", "message"), [
    ("saliency", {}, "unknown map method 'saliency'"),
    ("smoothgrad", {"sample": 4}, "has no setting 'sample'"),
    ("smoothgrad", {"samples": 0}, "samples must be >= 1"),
    ("smoothgrad", {"samples": 2.5}, "samples must be an integer"),
    ("smoothgrad", {"noise": -0.1}, "noise must be >= 0"),
    ("integrated_gradients", {"steps": True}, "steps must be an integer"),
    ("gradient", {"steps": 4}, "has no setting 'steps'"),
])
def test_bad_methods_and_settings_are_named(name, settings, message):
    with pytest.raises(ValueError, match=message):
        method_settings(name, settings)


def test_settings_get_their_defaults():
    assert method_settings("smoothgrad", {"samples": 4}) == {"samples": 4, "noise": 0.15, "seed": 0}
    assert method_settings("integrated_gradients") == {"steps": 16}
    assert method_settings("gradient", None) == {}


# --- each method against an independent reference ---------------------------------------------------


@pytest.mark.parametrize("target", ["class", "gestalt"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradient_method_is_the_paper_map(target, aggregate):
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "gradient", target=target, aggregate=aggregate)
    assert torch.equal(ours.maps, sensitivity(network, x, target, aggregate).maps)


@pytest.mark.parametrize("target", ["class", "gestalt"])
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_input_x_gradient_equals_captum(target, aggregate):
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "input_x_gradient", target=target, aggregate=aggregate)
    theirs = captum_attribution(captum_attr.InputXGradient, network, x, target, ours.classes)
    assert_maps_close(ours.maps, aggregate_abs(theirs, aggregate).float(), 1e-6)


@pytest.mark.parametrize("target", ["class", "gestalt"])
@pytest.mark.parametrize("steps", [1, 5])
def test_integrated_gradients_equals_captum_gauss_legendre(target, steps):
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "integrated_gradients", {"steps": steps}, target=target, aggregate="mean")
    theirs = captum_attribution(captum_attr.IntegratedGradients, network, x, target, ours.classes, baselines=0.0,
                                n_steps=steps, method="gausslegendre")
    assert_maps_close(ours.maps, aggregate_abs(theirs, "mean").float(), 1e-6)


def test_gauss_legendre_integrates_polynomials_of_degree_2n_minus_1_exactly():
    nodes, weights = gauss_legendre(4)
    assert np.all((nodes > 0) & (nodes < 1)) and weights.sum() == pytest.approx(1.0, abs=1e-15)
    for degree in range(8):
        assert (weights * nodes**degree).sum() == pytest.approx(1 / (degree + 1), abs=1e-14)


@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_guided_backprop_equals_captum_on_relu_networks(target):
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "guided_backprop", target=target, aggregate="max")
    theirs = captum_attribution(captum_attr.GuidedBackprop, network, x, target, ours.classes)
    assert_maps_close(ours.maps, aggregate_abs(theirs, "max").float(), 1e-6)
    assert not torch.allclose(ours.maps, sensitivity(network, x, target, "max").maps)  # guidance changed it


def test_guided_backprop_by_hand_on_one_relu():
    """y = w2 · ReLU(w1 x): the plain gradient is w2 w1 where w1 x > 0; guided keeps it only where w2 > 0."""
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    network = nn.Sequential(layer, nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        network[2].weight.copy_(torch.tensor([[2.0, -3.0]]))
    x = torch.tensor([[1.0, 1.0]], requires_grad=True)
    with guided_relus(network) as count:
        (guided,) = torch.autograd.grad(network(x).sum(), x)
    (plain,) = torch.autograd.grad(network(x).sum(), x)
    assert count == 1 and plain.tolist() == [[2.0, -3.0]] and guided.tolist() == [[2.0, 0.0]]


def test_guided_backprop_reaches_relu6_where_captum_does_not(lite0, demo_batch):
    """Lite0's activations are ReLU6: Captum's GuidedBackprop leaves them alone (its map is the plain
    gradient), ours guides them."""
    x = demo_batch[:1]
    ours = compute_maps(lite0, x, "guided_backprop", target="class", aggregate="max")
    plain = sensitivity(lite0, x, "class", "max", classes=ours.classes).maps
    theirs = aggregate_abs(captum_attr.GuidedBackprop(lite0.network).attribute(lite0.layout(x), target=ours.classes),
                           "max")
    assert_maps_close(theirs, plain, 1e-5)
    assert (ours.maps - plain).abs().max() > 0.1 * plain.max()


def test_gradcam_of_the_class_is_the_attention_map_of_the_gradient_pass():
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "gradcam", target="class")
    assert ours.attention is None
    for target in ("class", "gestalt"):  # either target's attention channel is the class's Grad-CAM
        reference = sensitivity(network, x, target, "max", with_attention=True).attention
        assert_maps_close(ours.maps, reference.float(), 1e-6)  # tiny_net keeps the input size: no resizing


def test_gradcam_of_the_gestalt_total_is_the_channel_mean_of_the_attention_map():
    """d mean(A) / d A is 1 / (C h w) everywhere, so the Gestalt Total's Grad-CAM is ReLU(mean_k A_k) / (h w)."""
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "gradcam", target="gestalt")
    with torch.no_grad():
        activations = network.features(x)
    expected = activations.mean(dim=1).clamp_min(0) / activations[0, 0].numel()
    assert_maps_close(ours.maps, expected, 1e-6)
    assert not torch.allclose(ours.maps, compute_maps(network, x, "gradcam", target="class").maps)


@pytest.mark.parametrize("method", ["smoothgrad", "integrated_gradients", "guided_backprop"])
def test_every_methods_attention_is_the_class_grad_cam_for_the_gestalt_target(method):
    network, x = tiny_net(), images()
    settings = {"smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 2}}.get(method)
    result = compute_maps(network, x, method, settings, target="gestalt", with_attention=True)
    assert_maps_close(result.attention, compute_maps(network, x, "gradcam", target="class").maps, 1e-6)


def test_cam_mean_plus_bias_is_the_logit_and_gestalt_cam_mean_is_the_gestalt_total():
    network, x = tiny_net(), images()
    class_cam = compute_maps(network, x, "cam", target="class")
    logits = network(x)
    bias = network.head[2].bias[class_cam.classes]
    expected = logits.gather(1, class_cam.classes[:, None])[:, 0]
    assert torch.allclose(class_cam.maps.double().mean(dim=(1, 2)) + bias, expected, atol=1e-6)
    gestalt_cam = compute_maps(network, x, "cam", target="gestalt")
    assert torch.allclose(gestalt_cam.maps.double().mean(dim=(1, 2)), Gestalt(network)(x), atol=1e-6)


def test_lite0_grad_cam_is_the_rectified_cam(lite0, demo_batch):
    """With a global-average-pool + linear head, Grad-CAM's weights are w_c / (h w): Grad-CAM = ReLU(CAM) / (h w)."""
    x = demo_batch[:2]
    attention = sensitivity(lite0, x, "class", "max", with_attention=True)
    with torch.no_grad():
        activations = lite0.network.features(lite0.layout(x))
    weights = lite0.network.head[1].weight[attention.classes]
    cam = torch.einsum("nk,nkhw->nhw", weights, activations)
    assert_maps_close(attention.attention, cam.clamp_min(0) / cam[0].numel(), 1e-5)


def test_cam_rejects_heads_that_are_not_pool_and_linear():
    network = tiny_net()
    network.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(5, 4), nn.ReLU(),
                                 nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match="global average pool and one linear layer"):
        compute_maps(network, images(), "cam")


def test_guided_backprop_needs_relus():
    network = tiny_net()
    network.features[1], network.features[3] = nn.SiLU(), nn.SiLU()
    with pytest.raises(ValueError, match="needs nn.ReLU or nn.ReLU6"):
        compute_maps(network, images(), "guided_backprop")
    assert all_hooks(network) == []


# --- SmoothGrad --------------------------------------------------------------------------------------


def test_smoothgrad_without_noise_is_the_gradient_map():
    network, x = tiny_net(), images()
    ours = compute_maps(network, x, "smoothgrad", {"samples": 3, "noise": 0.0}, target="class", aggregate="max")
    assert_maps_close(ours.maps, sensitivity(network, x, "class", "max").maps, 1e-6)


def test_smoothgrad_is_the_mean_gradient_map_of_the_noisy_copies_for_the_clean_class():
    network, x = tiny_net(), images()
    settings = {"samples": 4, "noise": 0.3, "seed": 5}
    ours = compute_maps(network, x, "smoothgrad", settings, target="class", aggregate="mean")
    clean_classes = network(x).argmax(dim=1)
    noisy = [sensitivity(network, x + draw, "class", "mean", classes=clean_classes).maps
             for draw in smoothgrad_noise(x, settings["samples"], settings["noise"], settings["seed"])]
    assert torch.equal(ours.classes, clean_classes)
    assert_maps_close(ours.maps, torch.stack(noisy).mean(dim=0), 1e-6)


def test_smoothgrad_noise_has_the_asked_spread_per_image_and_depends_on_the_seed():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 4.0])[:, None, None, None]
    draws = torch.stack(list(smoothgrad_noise(x, 8, 0.1, seed=0)))
    spread = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))) * 0.1
    assert torch.allclose(draws.std(dim=(0, 2, 3, 4)), spread, rtol=0.02)
    assert torch.equal(draws[0], next(smoothgrad_noise(x, 1, 0.1, seed=0)))
    assert not torch.equal(draws[0], next(smoothgrad_noise(x, 1, 0.1, seed=1)))


# --- contract shared by all methods ------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_maps_do_not_depend_on_the_rest_of_the_batch(method):
    network, x = tiny_net(), images(4)
    batch = compute_maps(network, x, method, CHEAP.get(method), target="class", aggregate="max")
    for i in (0, 3):
        alone = compute_maps(network, x[i:i + 1], method, CHEAP.get(method), target="class", aggregate="max")
        assert_maps_close(batch.maps[i], alone.maps[0], 1e-6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_every_method_gives_float32_input_sized_maps_logits_and_leaves_no_hooks(method, target):
    network = tiny_net().requires_grad_(True)  # a user's trainable network: parameters must stay untouched
    x = images(2)
    result = compute_maps(network, x, method, CHEAP.get(method), target=target, aggregate="max",
                          with_attention=True)
    assert result.maps.dtype == torch.float32 and result.maps.shape == (2, 8, 8)
    assert torch.allclose(result.logits.double(), network(x).detach())
    assert (result.classes is None) == (target == "gestalt")
    assert (result.attention is None) == (method in ("gradcam", "cam"))
    assert all(parameter.grad is None for parameter in network.parameters())
    assert all_hooks(network) == [] and global_hooks() == []


@pytest.mark.parametrize("method", ["input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop",
                                    "gradcam", "cam"])
def test_given_classes_are_used(method):
    network, x = tiny_net(), images(2)
    predicted = compute_maps(network, x, method, CHEAP.get(method))
    other = (predicted.classes + 1) % 3
    given = compute_maps(network, x, method, CHEAP.get(method), classes=other)
    assert torch.equal(given.classes, other)
    assert not torch.allclose(given.maps, predicted.maps)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_lite0_maps_of_real_photos_are_finite_and_batch_invariant(lite0, demo_batch, method):
    x = demo_batch[:2]
    batch = compute_maps(lite0, x, method, CHEAP.get(method), with_attention=True)
    alone = compute_maps(lite0, x[1:], method, CHEAP.get(method), with_attention=True)
    assert torch.isfinite(batch.maps).all() and batch.maps.shape == (2, 224, 224)
    assert_maps_close(alone.maps[0], batch.maps[1], 1e-4)
    assert all_hooks(lite0.network) == []
