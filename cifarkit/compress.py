"""Smaller and faster variants of a trained model: int8 quantization, structured pruning, ONNX.

Each variant is a real model that :class:`cifarkit.predict.Predictor` loads like ``best.pt``:

- ``int8``: post-training *static* quantization (weights and activations int8) with PyTorch's FX graph
  mode and the ``x86`` backend, calibrated on training images; where a model cannot be traced, *dynamic*
  quantization of its linear layers instead. It runs on the CPU (the int8 kernels are fbgemm/oneDNN's).
- ``pruned``: whole channels removed by L1 magnitude with torch-pruning (its dependency graph keeps
  every layer consistent), so the network really has fewer parameters and mult-adds.
- ``onnx``: the fp32 model exported with ``torch.onnx.export(dynamo=True)`` and run by ONNX Runtime.

Checkpoint blobs carry ``variant`` ("int8", "pruned"; absent for the fp32 original); the state dict's
shapes are the pruned architecture, and the quantized state is rebuilt on a freshly converted graph.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import CheckpointError
from .models import create_model

QUANT_BACKEND = "x86"  # fbgemm + oneDNN kernels; the default for x86 CPUs since PyTorch 2.0
ONNX_META_KEY = "cifarkit"  # metadata_props key holding the checkpoint's meta as JSON
ONNX_OPSET = 18


def resize_to(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    """Give ``model``'s conv, batch-norm and linear layers the channel counts of ``state`` (a pruned state
    dict, or weight name -> shape), keeping every other setting, so ``model.load_state_dict`` fits."""
    for name, module in list(model.named_modules()):
        found = state.get(f"{name}.weight")
        if found is None:
            continue
        weight = torch.Size(getattr(found, "shape", found))  # a tensor or a saved shape
        if isinstance(module, nn.Conv2d) and weight != module.weight.shape:
            new: nn.Module = nn.Conv2d(
                weight[1] * module.groups,
                weight[0],
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                module.bias is not None,
                module.padding_mode,
            )
        elif isinstance(module, nn.BatchNorm2d) and weight[0] != module.num_features:
            new = nn.BatchNorm2d(weight[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        elif isinstance(module, nn.Linear) and weight != module.weight.shape:
            new = nn.Linear(weight[1], weight[0], module.bias is not None)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new.train(module.training))
    return model


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor, num_classes: int) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed (lowest L1 norm
    first); the classifier's outputs are kept. Needs ``torch-pruning``."""
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"pruning ratio must be between 0 and 1, got {ratio}")
    pruned = copy.deepcopy(model).eval()
    keep = [m for m in pruned.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    pruner = tp.pruner.MagnitudePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio, ignored_layers=keep
    )
    pruner.step()
    return pruned.eval()


def classifier_names(model: nn.Module) -> list[str]:
    """The final linear layer: :func:`quantize_int8` gives it int8 weights but float inputs and outputs
    (dynamic quantization), so the logits, and the probabilities ``predict`` shows, are not rounded to
    an int8 grid."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]


def _prepare_fx(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (copied, CPU, eval) with int8 observers inserted by FX graph mode for the ``x86`` backend,
    the classifier dynamically quantized (float logits)."""
    from torch.ao.quantization import default_dynamic_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = QUANT_BACKEND
    mapping = get_default_qconfig_mapping(QUANT_BACKEND)
    for name in classifier_names(model):
        mapping = mapping.set_module_name(name, default_dynamic_qconfig)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao on every call
        return prepare_fx(copy.deepcopy(model).cpu().eval(), mapping, (example.cpu(),))


def _convert_fx(prepared: nn.Module) -> nn.Module:
    """The int8 model of an observed (calibrated) FX graph."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


def _dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the linear layers (weights int8, activations quantized on the fly)."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def quantize_int8(model: nn.Module, calibration: Sequence[torch.Tensor]) -> tuple[nn.Module, str]:
    """Post-training int8 quantization for the CPU: static (FX graph mode, ``x86`` backend) calibrated on the
    normalised ``calibration`` batches, or dynamic (linear layers only) where the model cannot be traced.
    Returns the quantized model and the method used ("static" or "dynamic")."""
    try:
        prepared = _prepare_fx(model, calibration[0][:1])
    except Exception:  # torch.fx could not trace it: quantize what needs no tracing
        return _dynamic_int8(model), "dynamic"
    with torch.no_grad():
        for batch in calibration:
            prepared(batch.cpu())
    return _convert_fx(prepared), "static"


def model_from_blob(blob: dict[str, Any]) -> nn.Module:
    """The network of a checkpoint blob of any variant (fp32, pruned, int8), in eval mode, on the CPU."""
    model = create_model(blob["model_name"], blob["num_classes"], **blob.get("model_kwargs", {}))
    state = blob["state_dict"]
    variant = blob.get("variant", "fp32")
    if variant == "pruned":
        resize_to(model, state)
    elif variant == "int8":
        resize_to(model, blob["fp32_shapes"])  # an int8 model of a pruned network keeps the pruned shapes
        size = int(blob["image_size"])
        if blob.get("int8_method") == "dynamic":
            model = _dynamic_int8(model)
        else:  # the converted graph's structure; the scales and int8 weights come from the state dict
            model = _convert_fx(_prepare_fx(model, torch.zeros(1, 3, size, size)))
    elif variant != "fp32":
        raise CheckpointError(f"checkpoint variant {variant!r} is not one this cifarkit knows (fp32, pruned, int8)")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # hand-edited or mixed-up files: weights of another shape or architecture
        first = str(exc).splitlines()[0][:160]
        raise CheckpointError(
            f"the weights do not fit model {blob['model_name']} ({first}); is it the right file?"
        ) from None
    return model.eval()


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
    tmp = path.with_name(f".{path.name}.tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    return path


class OnnxModel(nn.Module):
    """An ONNX Runtime session behind the ``nn.Module`` call that cifarkit's evaluation expects (CPU)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            reason = str(exc).splitlines()[0][:200]
            raise CheckpointError(f"{path} is not a loadable ONNX model ({reason}); export it again") from None
        self.input = self.session.get_inputs()[0].name
        props = self.session.get_modelmeta().custom_metadata_map
        if ONNX_META_KEY not in props:
            raise CheckpointError(f"{path} holds no cifarkit metadata; export it with deploy-bench")
        self.meta: dict[str, Any] = json.loads(props[ONNX_META_KEY])
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        self.params = int(sum(np.prod(init.dims) for init in graph.initializer))  # the stored weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out)
