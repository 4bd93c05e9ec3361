"""Smaller and faster variants of a trained model: int8 quantization, structured pruning, ONNX.

Each variant is a real model that :class:`cifarkit.predict.Predictor` loads like ``best.pt``:

- ``int8``: post-training *static* quantization (weights and activations int8) with PyTorch's FX graph
  mode and the ``x86`` backend, calibrated on training images; where a model cannot be traced, *dynamic*
  quantization of its linear layers instead. It runs on the CPU (the int8 kernels are fbgemm/oneDNN's).
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

from cifarkit.errors import ConfigError
from cifarkit.runs import atomic_write
from cifarkit.variants import ONNX_META_KEY, convert_int8_graph, dynamic_int8, prepare_int8_graph

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

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be between 0 and 1, got {ratio}")
    pruned = copy.deepcopy(model).eval()
    keep = [m for m in pruned.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    pruner = tp.pruner.MagnitudePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=keep
    )
    pruner.step()
    return pruned.eval()


def quantize_int8(model: nn.Module, calibration: Sequence[torch.Tensor]) -> tuple[nn.Module, str]:
    """Post-training int8 quantization for the CPU: static (FX graph mode, ``x86`` backend) calibrated on the
    normalised ``calibration`` batches, or dynamic (linear layers only) where the model cannot be traced.
    Returns the quantized model and the method used ("static" or "dynamic")."""
    try:
        prepared = prepare_int8_graph(model, calibration[0][:1])
    except Exception:  # torch.fx could not trace it: quantize what needs no tracing
        return dynamic_int8(model), "dynamic"
    with torch.no_grad():
        for batch in calibration:
            prepared(batch.cpu())
    return convert_int8_graph(prepared), "static"


def int8_blob(blob: dict[str, Any], quantized: nn.Module, method: str, fp32: nn.Module) -> dict[str, Any]:
    """A checkpoint blob for an int8 model made from ``blob``'s network (``fp32``: the model quantized)."""
    shapes = {k: list(v.shape) for k, v in fp32.state_dict().items() if k.endswith(".weight")}
    return {
        **blob,
        "variant": "int8",
        "int8_method": method,
        "fp32_shapes": shapes,
        "state_dict": quantized.state_dict(),
    }


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
