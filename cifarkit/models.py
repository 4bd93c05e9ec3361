"""Model registry (``create_model``, ``list_models``) and the course architectures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

_REGISTRY: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding an architecture to the registry under ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def default_input_size(name: str) -> int:
    """The input side length a model is designed for (EX-2: 128, the rest: 32)."""
    return getattr(_model_class(name), "input_size", 32)


def _model_class(name: str) -> type[nn.Module]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; choose {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`.
        num_classes: size of the output layer.
        **kwargs: architecture options (e.g. ``image_size``, ``hidden_units``, ``dropout``).
    """
    cls = _model_class(name)
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    try:
        return cls(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad option for model {name}: {exc}") from None


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, padding: int = 1) -> list[nn.Module]:
    """Convolution, BatchNorm, ReLU: the block every model here is built from."""
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class GlobalAvgPool(nn.Module):
    """Average over height and width, keeping (N, C, 1, 1).

    The same as ``nn.AdaptiveAvgPool2d(1)``, but its backward pass is a plain reduction, which is
    deterministic on CUDA (adaptive pooling's backward is not, and would break exact resume).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


@register_model("ex1")
class Ex1(nn.Module):
    """Course baseline: four 5x5 convs 3-12-12-24-24 with BN+ReLU, one max-pool, one linear layer."""

    input_size = 32

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(3, 12, 5, 1),
            *conv_bn_relu(12, 12, 5, 1),
            nn.MaxPool2d(2),
            *conv_bn_relu(12, 24, 5, 1),
            *conv_bn_relu(24, 24, 5, 1),
        )
        side = (image_size - 4) // 2 - 4  # two 5x5/pad-1 convs shrink by 4, pool halves, two more
        if side < 1:
            raise ConfigError(f"ex1 needs image_size >= 14, got {image_size}")
        self.classifier = nn.Linear(24 * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("ex2")
class Ex2(nn.Module):
    """Course bigger model at 128 px: three conv-BN-ReLU-pool blocks 16-32-64, MLP head 1024."""

    input_size = 128

    def __init__(self, num_classes: int = 10, image_size: int = 128, hidden: int = 1024) -> None:
        super().__init__()
        if image_size % 8:
            raise ConfigError(f"ex2 needs image_size divisible by 8, got {image_size}")
        self.features = nn.Sequential(
            *conv_bn_relu(3, 16), nn.MaxPool2d(2),
            *conv_bn_relu(16, 32), nn.MaxPool2d(2),
            *conv_bn_relu(32, 64), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Linear(64 * (image_size // 8) ** 2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@register_model("smallcifarnet")
class SmallCifarNet(nn.Module):
    """Three pairs of 3x3 conv-BN-ReLU (64, 128, 256) with pooling, global average pool, dropout."""

    input_size = 32

    def __init__(self, num_classes: int = 10, image_size: int = 32, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for width in (64, 128, 256):
            layers += [*conv_bn_relu(c_in, width), *conv_bn_relu(width, width), nn.MaxPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            GlobalAvgPool(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("tinyvgg")
class TinyVGG(nn.Module):
    """Two blocks of two 3x3 convs (optional BatchNorm), max-pool per block, optional dropout, linear head."""

    input_size = 32

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        hidden_units: int = 64,
        batchnorm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ConfigError(f"tinyvgg dropout must be in [0, 1), got {dropout}")

        def block(c_in: int) -> list[nn.Module]:
            layers: list[nn.Module] = []
            for c in (c_in, hidden_units):
                layers.append(nn.Conv2d(c, hidden_units, 3, padding=1))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(hidden_units))
                layers.append(nn.ReLU(inplace=True))
            return [*layers, nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(3), *block(hidden_units))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(hidden_units * (image_size // 4) ** 2, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with a projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


@register_model("resnet18")
class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no initial max-pool, four stages of two basic blocks."""

    input_size = 32

    def __init__(self, num_classes: int = 10, image_size: int = 32) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        c_in = 64
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c_in, width, stride), BasicBlock(width, width, 1)]
            c_in = width
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Sequential(GlobalAvgPool(), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_summary(model: nn.Module, image_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Parameters, mult-adds and a per-layer table (torchinfo) for one image of ``image_size``."""
    from torchinfo import summary

    stats = summary(
        model, input_size=(1, 3, image_size, image_size), device=device, verbose=0,
        col_names=("output_size", "num_params", "mult_adds"),
    )  # fmt: skip
    return {
        "params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "mult_adds": int(stats.total_mult_adds),
        "table": str(stats),
    }
