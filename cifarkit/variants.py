"""Saved models of every variant, rebuilt for use: the fp32 checkpoint, its pruned and int8 variants and
the ONNX export (made by :mod:`cifarkit.tools.compress`). :class:`cifarkit.predict.Predictor` loads any of
them through here, so using a variant needs nothing from the tools that made it.

Checkpoint blobs carry ``variant`` ("int8", "pruned"; absent for the fp32 original); the state dict's
shapes are the pruned architecture, and the quantized state is rebuilt on a freshly converted graph.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifarkit.errors import CheckpointError, ConfigError, first_line
from cifarkit.models import create_model
from cifarkit.runs import check_meta, check_weights

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


INT8_METHOD = "static"  # weights and activations int8, activation ranges calibrated before use
AGAIN = "build the variant again with deploy-bench"  # what to do about a variant file that cannot be used


def pt2e() -> tuple[Any, Any]:
    """torchao's PT2E quantization functions and its x86 quantizer, imported on first use (torchao loads slowly, and
    its import logs a notice from torch's pytree registry that says nothing to a cifarkit user)."""
    pytree = logging.getLogger("torch.utils._pytree")
    level, _ = pytree.level, pytree.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantize_pt2e as flow
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    except ImportError:
        raise ConfigError("int8 variants need torchao, one of cifarkit's dependencies: pip install torchao") from None
    finally:
        pytree.setLevel(level)
    return flow, x86


def exported(model: nn.Module, example: torch.Tensor, decompose: bool = False) -> torch.fx.GraphModule:
    """``model`` as one exported graph (``torch.export``; with ``decompose``, in core ATen operators) that takes
    any batch size. ``example``'s first image is traced twice over: a batch of one would fix the batch size."""
    pair = example[:1].expand(2, *example.shape[1:])
    program = torch.export.export(model, (pair,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    return (program.run_decompositions() if decompose else program).module()


def int8_observed(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``model`` (copied, CPU, eval) exported and given int8 observers by torchao's x86 quantizer: per-channel
    weights, per-tensor activations, batch norm folded into the convolutions. Activation ranges are min/max, so
    a saved range is two numbers (the default histogram observer's state is 8 KB a layer).

    Activations use 7 bits (``reduce_range``): x86 CPUs without VNNI multiply uint8 by int8 in pairs whose
    sums saturate at 16 bits, and a file made on one machine is used on others, so every file leaves room."""
    flow, x86 = pt2e()
    default = x86.get_default_x86_inductor_quantization_config(reduce_range=True)
    activation = min_max(default.input_activation)
    config = dataclasses.replace(default, input_activation=activation, output_activation=activation)
    quantizer = x86.X86InductorQuantizer().set_global(config)
    return flow.prepare_pt2e(exported(copy.deepcopy(model).cpu().eval(), example.cpu()), quantizer)


def min_max(spec: Any) -> Any:
    """``spec`` with torchao's min/max observer in place of its default (histogram) one, same epsilon."""
    from torchao.quantization.pt2e.observer import MinMaxObserver

    ctr = MinMaxObserver.with_args(**spec.observer_or_fake_quant_ctr.p.keywords)
    return dataclasses.replace(spec, observer_or_fake_quant_ctr=ctr)


def weight_observers(observed: torch.fx.GraphModule) -> dict[str, Any]:
    """Each quantized weight's name -> the observer that holds its per-channel range."""
    weights = [node for node in observed.graph.find_nodes(op="get_attr") if str(node.target).endswith("weight")]
    return {
        w.target: observed.get_submodule(user.target) for w in weights for user in w.users if user.op == "call_module"
    }


def per_channel(observer: Any, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An observer's per-channel scale and zero point, shaped to broadcast over ``weight``."""
    scale, zero = observer.calculate_qparams()
    shape = [-1 if d == observer.ch_axis else 1 for d in range(weight.ndim)]
    return scale.view(shape), zero.view(shape)


def load_int8_state(observed: torch.fx.GraphModule, state: dict[str, torch.Tensor]) -> None:
    """Load what :func:`cifarkit.tools.compress.int8_state` saved: ranges first, then each int8 weight back on its
    float grid (quantizing it again gives the same integers)."""
    weights = weight_observers(observed)
    observed.load_state_dict({k: v for k, v in state.items() if k not in weights}, strict=False)
    differ = sorted(set(observed.state_dict()) ^ set(state))
    if differ:
        raise RuntimeError(f"{differ[0]} is missing or extra")
    lows = {k.removesuffix("min_val"): v for k, v in state.items() if k.endswith("min_val")}  # each range's owner
    upside = [owner for owner, low in lows.items() if not bool((low <= state[owner + "max_val"]).all())]
    if upside or any(state[k].dtype != torch.int8 for k in weights):  # torchao's own check is an assert
        raise RuntimeError(f"{upside[0]}min_val is above its max_val" if upside else "a weight is not int8")
    for name, observer in weights.items():
        target = observed.state_dict(keep_vars=True)[name]
        scale, zero = per_channel(observer, target)
        with torch.no_grad():
            target.copy_((state[name].float() - zero) * scale)


class Int8Model(nn.Module):
    """An int8 graph behind the call cifarkit's evaluation expects. On CPUs with oneDNN's int8 kernels (x86) its
    quantize/dequantize pairs are replaced by them, as torchao's ``lower_pt2e_quantized_to_x86`` does (that
    function fixes the batch size; this keeps it free); elsewhere the reference graph computes the same numbers
    in float. An exported graph has no training mode, so ``train``/``eval`` leave it as it is."""

    def __init__(self, observed: torch.fx.GraphModule, example: torch.Tensor, params: int) -> None:
        super().__init__()
        flow, _ = pt2e()
        self.graph = flow.convert_pt2e(observed)
        self.params, self.kernels = params, "reference"
        try:
            from torch._inductor.constant_folding import constant_fold
            from torch._inductor.fx_passes.freezing_patterns import freezing_passes

            lowered = exported(self.graph, example, decompose=True)
            # oneDNN's int8 convolutions return channels-last tensors, which view cannot flatten
            for node in lowered.graph.find_nodes(op="call_function", target=torch.ops.aten.view.default):
                node.target = torch.ops.aten.reshape.default
            lowered.recompile()
            freezing_passes(lowered, (example,))
            constant_fold(lowered)
            self.graph, self.kernels = lowered, "oneDNN"
        except Exception:  # no oneDNN int8 kernels here (e.g. an ARM CPU): the reference graph is correct, only slower
            pass

    def train(self, mode: bool = True) -> Int8Model:
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def check_shapes(blob: dict[str, Any], state: dict[str, torch.Tensor], variant: str) -> None:
    """Compare the stored weights with the architecture the blob describes (built on the meta device): an fp32
    model's must fit it (:func:`cifarkit.runs.check_weights`); a variant is built at its own weight shapes (an int8
    file's ``fp32_shapes``) before a weight loads, so those must be the network's or smaller, and a pruned file's
    must differ from the network's somewhere (``resize_to`` fits them and loading checks the rest)."""
    if variant not in ("fp32", "pruned", "int8"):  # an ONNX description on a .pt file, say
        raise CheckpointError(f"checkpoint variant {variant!r} is not one this cifarkit knows (fp32, pruned, int8)")
    try:
        with torch.device("meta"):
            skeleton = create_model(blob["model_name"], blob["num_classes"], **blob.get("model_kwargs", {}))
    except Exception as exc:  # an unknown model or an option it does not take
        raise CheckpointError(
            f"model {blob['model_name']!r} with {blob.get('model_kwargs', {})} cannot be built "
            f"({exc.__class__.__name__}: {str(exc)[:100]}); is it the right file?"
        ) from None
    name, wanted = blob["model_name"], skeleton.state_dict()
    if variant == "fp32":  # the names, shapes and kinds of the network the description names
        check_weights(state, f"the checkpoint of model {name}", "is it the right file?", wanted, error=CheckpointError)
        return
    full = {k: list(v.shape) for k, v in wanted.items() if k.endswith(".weight")}
    if variant == "int8":
        what, shapes = "fp32_shapes", blob.get("fp32_shapes")
    else:
        what, shapes = "weight shapes", {k: list(v.shape) for k, v in state.items() if k.endswith(".weight")}
    if not prunable_to(shapes, full):  # a billion-wide layer with no inputs: a tiny file, a 4 GB bias
        raise CheckpointError(f"its {what} describe neither model {name} nor a pruned copy of it; {AGAIN}")
    if variant == "pruned" and all(k in state and state[k].shape == v.shape for k, v in wanted.items()):
        raise CheckpointError(
            f"{name} is marked pruned (sparsity {blob.get('sparsity')}) but holds the full network's weights; {AGAIN}"
        )


def prunable_to(shapes: Any, full: dict[str, list[int]]) -> bool:
    """Whether ``shapes`` (weight name -> sides) are ``full``'s or a pruned copy's: the same names and number of
    sides, each side a whole number from 1 up to the full one."""
    if not isinstance(shapes, dict) or set(shapes) != set(full):
        return False
    if not all(isinstance(shapes[k], list) and len(shapes[k]) == len(sides) for k, sides in full.items()):
        return False
    pairs = [pair for k, sides in full.items() for pair in zip(shapes[k], sides, strict=True)]
    return all(type(side) is int and 1 <= side <= most for side, most in pairs)


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
        example = torch.zeros(1, 3, int(blob["image_size"]), int(blob["image_size"]))
        if blob.get("int8_method") != INT8_METHOD:
            raise CheckpointError(
                f"int8 method {blob.get('int8_method')!r} is not the one this cifarkit builds ({INT8_METHOD!r}); {AGAIN}"
            )
        observed = int8_observed(model, example)
        try:
            load_int8_state(observed, state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"the int8 state of model {blob['model_name']} cannot be loaded ({first_line(exc)}); {AGAIN}"
            ) from None
        return Int8Model(observed, example, sum(v.numel() for k, v in state.items() if k.endswith(("weight", "bias"))))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # hand-edited or mixed-up files: weights of another shape or architecture
        raise CheckpointError(
            f"the weights do not fit model {blob['model_name']} ({first_line(exc)}); is it the right file?"
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
            raise CheckpointError(f"{path} is not a loadable ONNX model ({first_line(exc)}); export it again") from None
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
