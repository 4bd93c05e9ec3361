"""Inference below training: logits, top-1/top-5 and the full classification report of a model on a
loader, under the same mixed precision as training. ``tta``, ``predict`` and ``engine`` build on it;
it imports none of them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .device import resolve_amp, synchronize
from .loader import DeviceLoader
from .metrics import classification_metrics, topk_correct

Forward = Callable[[torch.Tensor], torch.Tensor]


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision context for ``amp`` ("off", "fp16", "bf16") on ``device``."""
    amp = resolve_amp(amp, device)
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: DeviceLoader, device: torch.device, amp: str = "off", forward: Forward | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Logits (float32, CPU) and labels for every batch of ``loader``, and the seconds it took."""
    model.eval()
    forward = forward or model
    outs, labels = [], []
    synchronize(device)
    start = time.perf_counter()
    for x, y in loader:
        with autocast(device, amp):
            outs.append(forward(x).float())
        labels.append(y)
    synchronize(device)
    seconds = time.perf_counter() - start
    return torch.cat(outs).cpu(), torch.cat(labels).cpu(), seconds


def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    device: torch.device,
    classes: tuple[str, ...] | None = None,
    amp: str = "off",
    forward: Forward | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 (fractions), loss, n and time; with ``classes`` also P/R/F1, AUC, per-class and confusion.

    Args:
        model: network to evaluate (put in eval mode).
        loader: a non-training :class:`DeviceLoader`.
        device: where ``model`` lives.
        classes: class names; pass them to get the full classification report.
        amp: mixed precision mode.
        forward: replaces ``model(x)``, e.g. a test-time-augmentation wrapper.
    """
    logits, labels, seconds = predict_logits(model, loader, device, amp, forward)
    n = int(labels.numel())
    hits = topk_correct(logits, labels, (1, 5))
    result: dict[str, Any] = {
        "top1": hits[1] / n,
        "top5": hits[5] / n,
        "loss": float(nn.functional.cross_entropy(logits, labels)),
        "n": n,
        "testing_time": seconds,
        "images_per_s": n / seconds if seconds > 0 else None,
    }
    if classes is not None:
        probs = torch.softmax(logits, dim=1).numpy()
        result.update(classification_metrics(labels.numpy(), probs, classes))
    return result


def test_json(result: dict[str, Any]) -> dict[str, Any]:
    """``evaluate`` output with the course's test.json field names first (fractions, not percent)."""
    renamed = {
        "accuracy": result["top1"],
        "top5_accuracy": result["top5"],
        "losses": result["loss"],
        "testing time": result["testing_time"],
    }
    return {**renamed, **result}
