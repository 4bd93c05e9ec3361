"""Model registry (``create_model``, ``list_models``) and the course architectures."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.errors import ConfigError, DataError
from cifarkit.runs import check_weights

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
            *conv_bn_relu(3, 16),
            nn.MaxPool2d(2),
            *conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
        )
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
        self.head = nn.Sequential(GlobalAvgPool(), nn.Flatten(), nn.Dropout(dropout), nn.Linear(256, num_classes))

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


class Pretrained(nn.Module):
    """A torchvision ImageNet architecture with a new classifier, for transfer learning (``--pretrained``
    loads its ImageNet weights from the torch hub cache, see :func:`load_imagenet_weights`). The input is
    upsampled to 128 px: ImageNet features expect objects larger than CIFAR's 32 px, and 128 px keeps a
    CPU epoch affordable (224 px, the ImageNet size, costs 3x more)."""

    input_size = 128
    builder = ""  # torchvision.models function name
    weights = ""  # torchvision weights enum and member, e.g. "ResNet18_Weights.IMAGENET1K_V1"
    classifier = ""  # dotted name of the final linear layer inside ``net``

    def __init__(self, num_classes: int = 10, image_size: int = 128) -> None:
        super().__init__()
        import torchvision

        self.net = getattr(torchvision.models, self.builder)(weights=None)
        parent, _, attr = self.classifier.rpartition(".")
        holder = self.net.get_submodule(parent) if parent else self.net
        old = getattr(holder, attr)
        setattr(holder, attr, nn.Linear(old.in_features, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("resnet18_imagenet")
class ResNet18ImageNet(Pretrained):
    """torchvision's ResNet-18 (11.7M parameters), the classic transfer-learning backbone."""

    builder, weights, classifier = "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc"


@register_model("mobilenetv3_imagenet")
class MobileNetV3ImageNet(Pretrained):
    """torchvision's MobileNetV3-Small (2.5M parameters), built for phones."""

    builder, weights, classifier = "mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1", "classifier.3"


def imagenet_weights_file(model: Pretrained | type[Pretrained]) -> tuple[str, Path]:
    """The download address of a model's (or model class's) ImageNet weights and where torch's hub cache keeps
    them."""
    import torchvision

    enum, member = model.weights.split(".")
    url = getattr(torchvision.models, enum)[member].url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def read_weights(
    path: Path, fix: str, expected: Mapping[str, torch.Tensor] | None = None, ignore: str = ""
) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save``, loaded without running code (``weights_only``) and checked by
    :func:`check_weights` against ``expected`` (a network's own state dict; names starting with ``ignore``, its new
    head, are left out); a one-line error ending in ``fix`` (what to do) when the file is anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path} is not a readable weights file ({exc.__class__.__name__}); {fix}") from None
    return check_weights(state, path, fix, expected, ignore)


def load_imagenet_weights(model: nn.Module) -> nn.Module:
    """Load a :class:`Pretrained` model's ImageNet weights (all but its new classifier) from the torch hub
    cache, downloading them there when online; offline, a one-line error names the file to place."""
    if not isinstance(model, Pretrained):
        names = ", ".join(n for n in list_models() if issubclass(_REGISTRY[n], Pretrained))
        raise ConfigError(f"{type(model).__name__} has no ImageNet weights; --pretrained works with {names}")
    url, path = imagenet_weights_file(model)
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataError(
                f"ImageNet weights {path.name} are not cached and cannot be downloaded ({exc.__class__.__name__}); "
                f"place {path.name} (from {url}) in {path.parent}/ or set TORCH_HOME, or train without --pretrained"
            ) from None
    head = model.classifier + "."
    state = read_weights(path, "delete it and retry", expected=model.net.state_dict(), ignore=head)
    model.net.load_state_dict({k: v for k, v in state.items() if not k.startswith(head)}, strict=False)
    return model


ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}


def make_activation(name: str) -> nn.Module:
    """``gelu`` or ``relu`` as a module, or a one-line error."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SpeedBlock(nn.Module):
    """conv3x3 -> max-pool -> BN -> act -> conv3x3 -> BN -> act: halves the side, sets the width."""

    def __init__(self, c_in: int, c_out: int, act: str = "gelu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        # running statistics that follow the last few batches (PyTorch's momentum 0.4: 40% of each update is
        # the new batch), since a run of a few epochs has no time for a slow average; eps only guards a zero variance
        self.bn1 = nn.BatchNorm2d(c_out, momentum=0.4, eps=1e-12)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=0.4, eps=1e-12)
        self.act = make_activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


@register_model("speednet")
class SpeedNet(nn.Module):
    """The speedrun network (after airbench, arXiv 2404.00498): a frozen 2x2 whitening layer, three
    conv-pool-BN blocks, global max-pool and a scaled linear head. See :mod:`cifarkit.speedrun.recipe`.

    Args:
        num_classes: outputs.
        image_size: input side (32).
        widths: channels of the three blocks.
        whiten: a frozen 2x2 patch-whitening first layer (set from data by ``speedrun.init_whitening``);
            False makes it an ordinary learned 2x2 convolution.
        act: ``gelu`` (airbench's choice) or ``relu`` (cheaper on CPUs).
        whiten_signs: keep both signs of each whitening direction (24 channels) and put an activation
            after the layer; False keeps 12 channels and no activation (a purely linear whitening).
    """

    input_size = 32

    def __init__(
        self,
        num_classes: int = 10,
        image_size: int = 32,
        widths: tuple[int, int, int] | list[int] = (64, 256, 256),
        whiten: bool = True,
        act: str = "gelu",
        whiten_signs: bool = True,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or min(widths) < 1:
            raise ConfigError(f"speednet needs three positive widths, got {widths}")
        if image_size < 16:
            raise ConfigError(f"speednet needs image_size >= 16, got {image_size}")
        c0 = 24 if whiten_signs else 12  # 12 = 3 colours x 2 x 2 patch directions
        self.whiten = nn.Conv2d(3, c0, 2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(not whiten)
        self.blocks = nn.Sequential(
            SpeedBlock(c0, widths[0], act), SpeedBlock(widths[0], widths[1], act), SpeedBlock(widths[1], widths[2], act)
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.act = make_activation(act) if whiten_signs else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The whitening conv stays in fp32 under autocast: its inputs are tiny-kernel statistics that
        # bf16 rounds badly, and oneDNN has reported wrong bf16 results for such small kernels.
        with torch.autocast(x.device.type, enabled=False):
            x = self.whiten(x.float())
        x = self.blocks(self.act(x))
        x = torch.amax(x, dim=(2, 3))  # global max-pool: "is the feature anywhere?"
        # dividing by sqrt(width) keeps the initial logits the same size whatever the width; the factor 4
        # (a temperature of 1/4) sharpens them so the loss moves from the first steps (kept from the recipe's
        # first validated version, not tuned since)
        return self.head(x) / x.shape[1] ** 0.5 * 4
