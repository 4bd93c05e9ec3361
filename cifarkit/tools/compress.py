"""Smaller and faster variants of a trained model: int8 quantization, structured pruning, ONNX.

Each variant is a real model that :class:`cifarkit.predict.Predictor` loads like ``best.pt``:

- ``int8``: post-training *static* quantization (weights and activations int8) with torchao's PT2E flow and
  its x86 quantizer, calibrated on training images. It runs on the CPU (oneDNN's int8 kernels on x86).
- ``pruned``: whole channels removed by L1 magnitude with torch-pruning (its dependency graph keeps
  every layer consistent), so the network really has fewer parameters and mult-adds.
- ``onnx``: the fp32 model exported with ``torch.onnx.export(dynamo=True)`` and run by ONNX Runtime.

Each is rebuilt for use by :mod:`cifarkit.variants`, which also documents the checkpoint format.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.config import check_value, fraction
from cifarkit.errors import ConfigError, first_line
from cifarkit.runs import atomic_write
from cifarkit.variants import INT8_METHOD, ONNX_META_KEY, int8_observed, per_channel, weight_observers

ONNX_OPSET = 18


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor, num_classes: int) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed (lowest L1 norm
    first); the classifier's outputs are kept. Needs ``torch-pruning``."""
    try:
        import torch_pruning as tp
    except ImportError:
        raise ConfigError(
            "pruned variants need torch-pruning, one of cifarkit's dependencies: pip install torch-pruning"
        ) from None

    check_value("pruning ratio", ratio, fraction)
    pruned = copy.deepcopy(model).eval()
    keep = [m for m in pruned.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    pruner = tp.pruner.MagnitudePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=keep
    )
    pruner.step()
    return pruned.eval()


def quantize_int8(model: nn.Module, calibration: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Post-training static int8 quantization for the CPU (torchao PT2E, x86 quantizer), calibrated on the
    normalised ``calibration`` batches: the state to save (int8 weights, calibrated ranges)."""
    try:
        observed = int8_observed(model, calibration[0][:1])
    except ConfigError:
        raise
    except Exception as exc:  # torch.export or the quantizer cannot take this network
        raise ConfigError(
            f"{type(model).__name__} cannot be quantized to int8 ({first_line(exc, named=True)}); "
            "its other variants still are"
        ) from None
    with torch.no_grad():
        for batch in calibration:
            observed(batch.cpu())
    return int8_state(observed)


def int8_state(observed: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """What an int8 model saves: a calibrated graph's state with every quantized weight rounded to int8
    (activation ranges, float biases and the weights' ranges as they are)."""
    state = observed.state_dict()
    for name, observer in weight_observers(observed).items():
        scale, zero = per_channel(observer, state[name])
        q = torch.round(state[name] * (1.0 / scale)) + zero
        state[name] = q.clamp(observer.quant_min, observer.quant_max).to(torch.int8)
    return state


def int8_blob(blob: dict[str, Any], state: dict[str, torch.Tensor], fp32: nn.Module) -> dict[str, Any]:
    """A checkpoint blob for the int8 ``state`` of ``blob``'s network (``fp32``: the model quantized)."""
    shapes = {k: list(v.shape) for k, v in fp32.state_dict().items() if k.endswith(".weight")}
    return {**blob, "variant": "int8", "int8_method": INT8_METHOD, "fp32_shapes": shapes, "state_dict": state}


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, meta: dict[str, Any]) -> Path:
    """Export ``model`` (fp32) to ONNX with a dynamic batch dimension and the checkpoint's ``meta`` (classes,
    normalisation, sizes) in the file's metadata, so :class:`OnnxModel` can be used alone."""
    import onnx

    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            copy.deepcopy(model).cpu().eval(),
            (example.cpu(),),
            dynamo=True,
            opset_version=ONNX_OPSET,
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, json.dumps(meta)
    return atomic_write(path, lambda tmp: onnx.save(proto, str(tmp)))  # whole or not at all (a full disk)


def int8_megabytes(model: nn.Module) -> float:
    """What an int8 copy of ``model`` needs at least, in megabytes (10^6 bytes): each weight of a convolution
    or linear layer in one byte, every other parameter (biases, batch norm) in four. The real file holds more:
    a scale and zero point per output channel, and the pickled structure around the numbers."""
    size = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            int8 = name == "weight" and isinstance(module, (nn.Conv2d, nn.Linear))
            size += p.numel() * (1 if int8 else 4)
    return size / 1e6
