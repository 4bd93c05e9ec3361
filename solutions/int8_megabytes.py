"""08 · int8 size arithmetic."""

from torch import nn


def int8_megabytes(model: nn.Module) -> float:
    total_bytes = 0
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            total_bytes += parameter.numel() * (1 if is_weight else 4)  # int8 weights, float32 everything else
    return total_bytes / 1e6  # megabytes, as file sizes are given
