"""Sensitivity maps against finite differences, torch.func references and their contract.

Exactness is checked on a tiny float64 CNN (central finite differences) and on real networks
(EfficientNet-Lite0 with its embedded weights, a randomly initialised VGG16 at 64×64) against an
independent per-image `torch.func.grad` of the same objective.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import all_hooks, assert_maps_close, global_hooks, tiny_net
from torch import nn

from sensitivity.maps import AGGREGATES, Sensitivity, aggregate_channels, pool_maps, sensitivity, sensitivity_maps
from sensitivity.models import SplitClassifier, load_model

# --- helpers -----------------------------------------------------------------------------------


def tiny_images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def objective(network: SplitClassifier, target: str, cls: int | None, layout=lambda batch: batch):
    """Scalar objective of one image (C, H, W): the class logit or the Gestalt Total; ``layout`` puts the
    one-image batch in the memory format the network is run in."""
    if target == "class":
        return lambda image: network(layout(image[None]))[0, cls]
    return lambda image: network.features(layout(image[None])).mean()


def batched_objective(network: SplitClassifier, target: str, cls: int | None):
    """The same objective for a batch of perturbed copies of one image (K, C, H, W) → (K,)."""
    if target == "class":
        return lambda batch: network(batch)[:, cls]
    return lambda batch: network.features(batch).mean(dim=(1, 2, 3))


def finite_difference_gradient(function, image: torch.Tensor, step: float = 1e-6) -> torch.Tensor:
    """Central differences for every input element, all perturbed copies evaluated in one batch."""
    n = image.numel()
    offsets = torch.eye(n, dtype=image.dtype).reshape(n, *image.shape) * step
    with torch.no_grad():
        values = function(torch.cat([image + offsets, image - offsets]))
    return ((values[:n] - values[n:]) / (2 * step)).reshape(image.shape)


def by_hand(gradient: torch.Tensor, aggregate: str) -> torch.Tensor:
    """(C, H, W) gradient → (H, W) map without using sensitivity.maps."""
    magnitude = gradient.abs()
    return magnitude.max(dim=0).values if aggregate == "max" else magnitude.sum(dim=0) / magnitude.shape[0]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


# --- exactness on a tiny float64 CNN -----------------------------------------------------------


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("given_classes", [False, True], ids=["predicted", "given"])
def test_class_maps_equal_finite_differences(aggregate, given_classes):
    network = tiny_net()
    images = tiny_images()
    with torch.no_grad():
        predicted = network(images).argmax(dim=1)
    classes = (predicted + 1) % 3 if given_classes else None
    result = sensitivity(network, images, "class", aggregate, classes=classes)
    expected_classes = classes if given_classes else predicted
    assert torch.equal(result.classes.cpu(), expected_classes)
    assert result.maps.shape == (2, 6, 6) and result.maps.dtype == torch.float32
    for i in range(len(images)):
        function = batched_objective(network, "class", int(expected_classes[i]))
        gradient = finite_difference_gradient(function, images[i])
        assert_maps_close(result.maps[i], by_hand(gradient, aggregate), 1e-6)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gestalt_maps_equal_finite_differences(aggregate):
    network = tiny_net()
    images = tiny_images()
    result = sensitivity(network, images, "gestalt", aggregate)
    assert result.classes is None and result.logits is None
    for i in range(len(images)):
        gradient = finite_difference_gradient(batched_objective(network, "gestalt", None), images[i])
        assert_maps_close(result.maps[i], by_hand(gradient, aggregate), 1e-6)


def test_given_classes_change_the_map():
    network = tiny_net()
    images = tiny_images()
    predicted = sensitivity(network, images, "class")
    other = sensitivity(network, images, "class", classes=(predicted.classes + 1) % 3)
    assert not torch.allclose(predicted.maps, other.maps)
    assert torch.equal(sensitivity_maps(network, images, "class"), predicted.maps)


def test_logits_are_the_network_outputs():
    network = tiny_net()
    images = tiny_images(3)
    result = sensitivity(network, images)
    with torch.no_grad():
        expected = network(images)
    torch.testing.assert_close(result.logits, expected)  # float64 network: float64 logits, not rounded
    assert torch.equal(result.classes, expected.argmax(dim=1))


# --- real networks against torch.func -----------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_random():
    torch.manual_seed(0)
    return load_model("vgg16", weights="random")


@pytest.fixture(scope="module")
def vgg_batch() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["class", "gestalt"])
@pytest.mark.parametrize("which", ["efficientnet_lite0", "vgg16_random"])
def test_real_maps_equal_torch_func_reference(which, target, request):
    model = request.getfixturevalue("lite0" if which == "efficientnet_lite0" else "vgg16_random")
    images = request.getfixturevalue("demo_batch" if which == "efficientnet_lite0" else "vgg_batch")
    network = model.network
    results = {aggregate: sensitivity(model, images, target, aggregate) for aggregate in AGGREGATES}
    for i in range(len(images)):
        cls = None
        if target == "class":
            cls = int(results["max"].classes[i])
            with torch.no_grad():
                assert cls == int(network(images[i : i + 1]).argmax())
        # In the layout the maps are computed in: float32 kernels of other layouts sum in another order.
        gradient = torch.func.grad(objective(network, target, cls, model.layout))(images[i])
        for aggregate, result in results.items():
            assert_maps_close(result.maps[i], by_hand(gradient, aggregate), 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_maps_do_not_depend_on_the_rest_of_the_batch(lite0, demo_batch, target):
    batch_maps = sensitivity_maps(lite0, demo_batch, target)
    for i in range(len(demo_batch)):
        alone = sensitivity_maps(lite0, demo_batch[i : i + 1], target)
        assert_maps_close(alone[0], batch_maps[i], 1e-5)
    # Replace every image but the first by other content: the first map must not move.
    others = torch.cat([demo_batch[:1], demo_batch[1:].flip(-1) * 0.5 + 0.1])
    replaced = sensitivity_maps(lite0, others, target)
    assert_maps_close(replaced[0], batch_maps[0], 1e-5)
    assert not torch.allclose(replaced[1], batch_maps[1]), "the other images were not actually replaced"


# --- aggregation ---------------------------------------------------------------------------------


def test_aggregate_channels_by_hand():
    gradient = torch.tensor(
        [[[[1.0, -2.0], [0.0, 3.0]], [[-4.0, 1.0], [2.0, -1.0]], [[2.0, 2.0], [-3.0, 0.5]]]]
    )
    assert gradient.shape == (1, 3, 2, 2)
    torch.testing.assert_close(aggregate_channels(gradient, "max"), torch.tensor([[[4.0, 2.0], [3.0, 3.0]]]))
    torch.testing.assert_close(
        aggregate_channels(gradient, "mean"), torch.tensor([[[7 / 3, 5 / 3], [5 / 3, 1.5]]])
    )
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_channels(gradient, "sum")


# --- targets, arguments and errors ---------------------------------------------------------------


class RaisingHead(nn.Module):
    def forward(self, x):
        raise AssertionError("the head must not run for the gestalt target")


def test_gestalt_never_runs_the_head():
    network = tiny_net()
    guarded = SplitClassifier(network.features, RaisingHead())
    maps = sensitivity_maps(guarded, tiny_images(), "gestalt")
    assert torch.equal(maps, sensitivity_maps(network, tiny_images(), "gestalt"))
    with pytest.raises(AssertionError, match="must not run"):
        sensitivity_maps(guarded, tiny_images(), "class")


@pytest.mark.parametrize("classes", [torch.tensor([0, 1, 2]), torch.tensor([[0], [1]]), torch.tensor(1)])
def test_wrong_shaped_classes_raise(classes):
    with pytest.raises(ValueError, match="classes"):
        sensitivity(tiny_net(), tiny_images(2), "class", classes=classes)


def test_bad_names_and_shapes_raise():
    network, images = tiny_net(), tiny_images()
    with pytest.raises(ValueError, match="target"):
        sensitivity(network, images, "saliency")
    with pytest.raises(ValueError, match="aggregate"):
        sensitivity(network, images, "class", "median")
    with pytest.raises(ValueError, match="images"):
        sensitivity(network, images[0])
    plain = nn.Sequential(network.features, network.head)  # no `features` attribute
    with pytest.raises(ValueError, match="features"):
        sensitivity(plain, images, "gestalt")
    assert sensitivity(plain, images, "class").maps.shape == (2, 6, 6)


# --- nothing is left behind ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_loaded_model_gets_no_parameter_gradients_and_no_hooks(lite0, demo_batch, target):
    before = {name: p.requires_grad for name, p in lite0.network.named_parameters()}
    result = sensitivity(lite0, demo_batch[:2], target)
    assert all(p.grad is None for p in lite0.network.parameters())
    assert {name: p.requires_grad for name, p in lite0.network.named_parameters()} == before
    assert not any(before.values()), "load_model networks are frozen"
    assert all_hooks(lite0.network) == [] and global_hooks() == []
    assert not lite0.network.training
    assert result.maps.grad_fn is None and not result.maps.requires_grad
    assert not demo_batch.requires_grad and demo_batch.grad is None


@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_user_network_with_trainable_parameters_gets_no_gradients(target):
    network = tiny_net()
    assert all(p.requires_grad for p in network.parameters())
    images = tiny_images()
    result = sensitivity(network, images, target)
    assert all(p.grad is None for p in network.parameters())
    assert all(p.requires_grad for p in network.parameters())
    assert all_hooks(network) == [] and global_hooks() == []
    assert images.grad is None and not images.requires_grad
    assert not result.maps.requires_grad
    if result.logits is not None:
        assert not result.logits.requires_grad


class _CountBackward(torch.autograd.Function):
    """Identity whose backward counts its calls (placed at the input of `features`)."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.counter["backward"] += 1
        return grad, None


class Counting(nn.Module):
    def __init__(self, inner: nn.Module, counter: dict, key: str, count_backward: bool = False) -> None:
        super().__init__()
        self.inner, self.counter, self.key, self.count_backward = inner, counter, key, count_backward

    def forward(self, x):
        self.counter[self.key] += 1
        if self.count_backward:
            x = _CountBackward.apply(x, self.counter)
        return self.inner(x)


@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_exactly_one_forward_and_one_backward_per_batch(lite0, demo_batch, target):
    counter = {"features": 0, "head": 0, "backward": 0}
    network = SplitClassifier(
        Counting(lite0.network.features, counter, "features", count_backward=True),
        Counting(lite0.network.head, counter, "head"),
    )
    maps = sensitivity_maps(network, demo_batch, target)
    assert maps.shape == (4, 224, 224)
    assert counter == {"features": 1, "head": 1 if target == "class" else 0, "backward": 1}
    # The wrapper is transparent: same maps as the bare network (same memory layout).
    assert torch.equal(maps, sensitivity_maps(lite0.network, demo_batch, target))


# --- autocast --------------------------------------------------------------------------------------
#
# Measured on the 4 demo images (EfficientNet-Lite0, CPU): per-pixel Pearson with the float32 maps is
# 0.98-0.99 under float16 but only 0.88-0.93 under bfloat16 (also for the whole network cast to bfloat16
# by hand: an 8-bit mantissa through ~50 layers, not a defect of the autocast path). At the scale that
# matters for localization (8×8 average-pooled, a 28×28 grid) bfloat16 correlates at 0.96-0.99.

AMP_THRESHOLDS = {torch.float16: (0.95, 0.98), torch.bfloat16: (0.85, 0.94)}  # (per pixel, 8×8 pooled)


def assert_amp_maps_correlate(amp_maps, reference_maps, amp_dtype):
    per_pixel, pooled = AMP_THRESHOLDS[amp_dtype]
    amp_maps, reference_maps = amp_maps.float().cpu(), reference_maps.float().cpu()
    assert torch.isfinite(amp_maps).all()
    assert not torch.equal(amp_maps, reference_maps), "autocast had no effect"
    correlations = [pearson(a, b) for a, b in zip(amp_maps, reference_maps)]
    assert min(correlations) > per_pixel, correlations
    pool = torch.nn.functional.avg_pool2d
    pooled_correlations = [pearson(pool(a[None], 8), pool(b[None], 8)) for a, b in zip(amp_maps, reference_maps)]
    assert min(pooled_correlations) > pooled, pooled_correlations


@pytest.mark.slow
@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_cpu_autocast_maps_correlate_with_float32(lite0, demo_batch, target, amp_dtype):
    images = demo_batch if amp_dtype == torch.bfloat16 else demo_batch[:1]  # CPU float16 is slow
    reference = sensitivity(lite0, images, target)
    amp = sensitivity(lite0, images, target, classes=reference.classes, amp_dtype=amp_dtype)
    assert amp.maps.dtype == torch.float32 and amp.maps.shape == reference.maps.shape
    if target == "class":
        assert torch.equal(amp.classes, reference.classes)
    assert_amp_maps_correlate(amp.maps, reference.maps, amp_dtype)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_cuda_autocast_maps_correlate_with_float32(demo_batch, target, amp_dtype):
    model = load_model("efficientnet_lite0", device="cuda")
    images = demo_batch.cuda()
    reference = sensitivity(model, images, target)
    amp = sensitivity(model, images, target, classes=reference.classes, amp_dtype=amp_dtype)
    assert amp.maps.dtype == torch.float32 and amp.maps.device.type == "cuda"
    assert_amp_maps_correlate(amp.maps, reference.maps, amp_dtype)


def test_result_type():
    result = sensitivity(tiny_net(), tiny_images())
    assert isinstance(result, Sensitivity)


def test_pool_maps_block_means_and_rejects_uneven_sizes() -> None:
    maps = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    pooled = pool_maps(maps, 2)
    assert pooled.shape == (2, 2, 2)
    assert pooled[0, 0, 0] == (0 + 1 + 4 + 5) / 4 and pooled[1, 1, 1] == (26 + 27 + 30 + 31) / 4
    assert pool_maps(maps, 4) is maps
    with pytest.raises(ValueError, match="whole blocks"):
        pool_maps(maps, 3)


def test_gestalt_with_logits_runs_only_the_head_on_the_same_activations() -> None:
    """with_logits gives the full network's logits without changing the Gestalt map."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4, 5))
    network = SplitClassifier(features, head).eval()
    images = torch.randn(3, 3, 8, 8)
    plain = sensitivity(network, images, "gestalt", "max")
    with_logits = sensitivity(network, images, "gestalt", "max", with_logits=True)
    assert plain.logits is None
    torch.testing.assert_close(with_logits.maps, plain.maps)
    torch.testing.assert_close(with_logits.logits, network(images))


# --- Grad-CAM attention from the same backward pass ---------------------------------------------------


def reference_grad_cam(network: SplitClassifier, images: torch.Tensor, target: str, classes=None) -> torch.Tensor:
    """ReLU(Σ_k mean_ij(d objective / d A_k) A_k) from a separate forward and an autograd call on A alone."""
    activations = network.features(images).detach().requires_grad_(True)
    if target == "class":
        logits = network.head(activations)
        chosen = logits.argmax(dim=1) if classes is None else classes
        objective = logits.gather(1, chosen[:, None]).sum()
    else:
        objective = activations.mean(dim=(1, 2, 3)).sum()
    (gradient,) = torch.autograd.grad(objective, activations)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(dim=1).clamp_min(0).detach()


@pytest.mark.parametrize("target", ["class", "gestalt"])
def test_attention_is_the_class_grad_cam_for_either_target_and_leaves_the_map_unchanged(target):
    """The attention channel is the predicted class's Grad-CAM whatever the map's target (the Gestalt Total's own
    Grad-CAM, the channel mean of A, is another map, so the check can fail)."""
    network, images = tiny_net(), tiny_images(3)
    with_attention = sensitivity(network, images, target, "max", with_attention=True)
    plain = sensitivity(network, images, target, "max")
    assert torch.equal(with_attention.maps, plain.maps)
    assert with_attention.attention.shape == (3, 6, 6) and plain.attention is None
    torch.testing.assert_close(with_attention.attention, reference_grad_cam(network, images, "class"),
                               rtol=1e-10, atol=1e-12)
    assert not torch.allclose(reference_grad_cam(network, images, "gestalt"), reference_grad_cam(network, images, "class"))


def test_given_classes_choose_the_attention_maps_class_for_the_gestalt_target():
    network, images = tiny_net(), tiny_images(3)
    predicted = network(images).argmax(dim=1)
    other = (predicted + 1) % network(images).shape[1]
    result = sensitivity(network, images, "gestalt", "max", classes=other, with_attention=True)
    torch.testing.assert_close(result.attention, reference_grad_cam(network, images, "class", other),
                               rtol=1e-10, atol=1e-12)
    assert torch.equal(result.maps, sensitivity(network, images, "gestalt", "max").maps)
    torch.testing.assert_close(result.logits, network(images))  # the head ran once more, on the same A


def test_attention_of_a_global_pool_network_is_the_class_activation_map(lite0, demo_batch):
    """For features → global average pool → linear (EfficientNet-Lite0), Grad-CAM is CAM without the bias:
    ReLU(Σ_k W[c, k] A_k) / (h w)."""
    result = sensitivity(lite0, demo_batch, "class", "mean", with_attention=True)
    with torch.no_grad():
        activations = lite0.network.features(demo_batch)
    weights = lite0.network.head[-1].weight[result.classes]  # (N, C)
    cam = torch.einsum("nchw,nc->nhw", activations, weights).clamp_min(0) / (7 * 7)
    assert result.attention.shape == (4, 7, 7)
    torch.testing.assert_close(result.attention, cam, rtol=1e-4, atol=1e-6 * float(cam.max()))


def test_attention_needs_the_features_head_split():
    plain = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(1)).double()
    with pytest.raises(ValueError, match="with_attention"):
        sensitivity(plain, tiny_images(), "class", with_attention=True)


def test_lite0_runs_channels_last_with_the_same_maps(lite0, demo_batch):
    """EfficientNet-Lite0 gets channels_last batches (faster on CPU); its maps are as close to the exact (float64)
    maps as the plain layout's. How close the two float32 layouts are to each other depends on the CPU's
    kernels: 7e-7 of the largest value on one machine, 2e-4 on an AVX2 one, where each is 2e-3 from float64."""
    assert lite0.channels_last and lite0.layout(demo_batch).is_contiguous(memory_format=torch.channels_last)
    plain = SplitClassifier(lite0.network.features, lite0.network.head)  # a bare module: no layout change
    exact = copy.deepcopy(plain).double()
    for target in ("class", "gestalt"):
        fast = sensitivity(lite0, demo_batch, target, "max", with_logits=True, with_attention=True)
        reference = sensitivity(plain, demo_batch.contiguous(), target, "max", with_logits=True, with_attention=True)
        truth = sensitivity(exact, demo_batch.double(), target, "max", classes=reference.classes).maps
        scale = float(truth.max())
        fast_error = float((fast.maps - truth).abs().max()) / scale
        plain_error = float((reference.maps - truth).abs().max()) / scale
        assert fast_error <= 1.1 * plain_error + 1e-6, (fast_error, plain_error)
        torch.testing.assert_close(fast.maps, reference.maps, rtol=0, atol=1e-3 * scale)
        torch.testing.assert_close(fast.attention, reference.attention, rtol=1e-4, atol=1e-5 * float(reference.attention.max()))
        assert torch.equal(fast.logits.argmax(dim=1), reference.logits.argmax(dim=1))


def test_vgg_keeps_the_default_layout(vgg16_random, vgg_batch):
    assert not vgg16_random.channels_last and vgg16_random.layout(vgg_batch) is vgg_batch
