"""04 · flip test-time augmentation."""

import torch


def flip_tta(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    # dims=[3] is the width (images are batch, channels, height, width): a left-right mirror
    return (model(images) + model(images.flip(dims=[3]))) / 2
