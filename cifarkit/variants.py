"""Saved models of every variant, rebuilt for use: the fp32 checkpoint, its pruned and int8 variants and
the ONNX export (made by :mod:`cifarkit.tools.compress`). :class:`cifarkit.predict.Predictor` loads any of
them through here, so using a variant needs nothing from the tools that made it.

Checkpoint blobs carry ``variant`` ("int8", "pruned"; absent for the fp32 original); the state dict's
shapes are the pruned architecture, and the quantized state is rebuilt on a freshly converted graph.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarkit.errors import CheckpointError
from cifarkit.models import create_model
from cifarkit.runs import check_meta

QUANT_BACKEND = "x86"  # fbgemm + oneDNN kernels; the default for x86 CPUs since PyTorch 2.0
ONNX_META_KEY = "cifarkit"  # metadata_props key holding the checkpoint's meta as JSON


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


def classifier_names(model: nn.Module) -> list[str]:
    """The final linear layer: :func:`quantize_int8` gives it int8 weights but float inputs and outputs
    (dynamic quantization), so the logits, and the probabilities ``predict`` shows, are not rounded to
    an int8 grid."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)][-1:]


def prepare_int8_graph(model: nn.Module, example: torch.Tensor) -> nn.Module:
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


def convert_int8_graph(prepared: nn.Module) -> nn.Module:
    """The int8 model of an observed (calibrated) FX graph."""
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert_fx(prepared).eval()


def dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of the linear layers (weights int8, activations quantized on the fly)."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)


def check_shapes(blob: dict[str, Any], state: dict[str, torch.Tensor], variant: str) -> None:
    """Compare the stored weights with the architecture the blob describes (built on the meta device)."""
    try:
        with torch.device("meta"):
            skeleton = create_model(blob["model_name"], blob["num_classes"], **blob.get("model_kwargs", {}))
    except CheckpointError:
        raise
    except Exception as exc:  # an unknown model or an option it does not take
        raise CheckpointError(
            f"model {blob['model_name']!r} with {blob.get('model_kwargs', {})} cannot be built "
            f"({exc.__class__.__name__}: {str(exc)[:100]}); is it the right file?"
        ) from None
    if variant == "int8":  # quantized tensors have their own names and shapes; loading checks them
        return
    wanted = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = {k: tuple(v.shape) for k, v in state.items()}
    if set(wanted) != set(stored):
        extra = sorted(set(stored) ^ set(wanted))[:2]
        raise CheckpointError(
            f"the weights do not fit model {blob['model_name']} (their names differ, e.g. {extra}); is it the right file?"
        )
    differ = [k for k in wanted if wanted[k] != stored[k]]
    if variant == "fp32" and differ:
        k = differ[0]
        raise CheckpointError(
            f"the weights do not fit model {blob['model_name']} ({k} is {list(stored[k])}, the model's "
            f"{list(wanted[k])}); is it the right file?"
        )
    if variant == "pruned" and not differ:
        raise CheckpointError(
            f"{blob['model_name']} is marked pruned (sparsity {blob.get('sparsity')}) but holds the full network's "
            "weights; build the variant again with deploy-bench"
        )


def model_from_blob(blob: dict[str, Any]) -> nn.Module:
    """The network of a checkpoint blob of any variant (fp32, pruned, int8), in eval mode, on the CPU.

    The architecture its description names is first built on PyTorch's ``meta`` device (shapes, no memory)
    and compared with the stored weights, so a hand-edited description (a width of a billion, say) is
    refused in one line before anything is allocated."""
    state = blob["state_dict"]
    variant = blob.get("variant", "fp32")
    check_shapes(blob, state, variant)
    model = create_model(blob["model_name"], blob["num_classes"], **blob.get("model_kwargs", {}))
    if variant == "pruned":
        resize_to(model, state)
    elif variant == "int8":
        resize_to(model, blob["fp32_shapes"])  # an int8 model of a pruned network keeps the pruned shapes
        size = int(blob["image_size"])
        if blob.get("int8_method") == "dynamic":
            model = dynamic_int8(model)
        else:  # the converted graph's structure; the scales and int8 weights come from the state dict
            model = convert_int8_graph(prepare_int8_graph(model, torch.zeros(1, 3, size, size)))
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
        try:
            self.meta: dict[str, Any] = json.loads(props[ONNX_META_KEY])
        except (ValueError, RecursionError):
            raise CheckpointError(
                f"{path}: its cifarkit metadata is not JSON; export it again with deploy-bench"
            ) from None
        check_meta(self.meta, path)
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        self.params = int(sum(np.prod(init.dims) for init in graph.initializer))  # the stored weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input: np.ascontiguousarray(x.detach().float().cpu().numpy())})[0]
        return torch.from_numpy(out)
