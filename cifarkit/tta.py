"""Test-time augmentation: batched views of model-ready inputs, and the averaged prediction over them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .evaluation import evaluate

TTA_MODES = ("none", "flip", "5crop", "flip5crop", "scale3", "translate")
AVERAGES = ("logits", "probs")
REFERENCE_SIZE = 32  # view geometry is defined at CIFAR's 32 px and scaled to the model's input


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a TTA mode, else fail with the valid choices."""
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown TTA mode {mode!r}; choose {', '.join(TTA_MODES)}")
    return mode


def scaled(pixels: int, size: int) -> int:
    """``pixels`` at 32 px input, expressed at ``size`` px (e.g. 36 -> 144 at 128 px)."""
    return max(1, round(pixels * size / REFERENCE_SIZE))


def resize(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize of a batch to ``side`` x ``side``."""
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def five_crops(x: torch.Tensor) -> list[torch.Tensor]:
    """Centre and four corner crops after enlarging by 36/32, each back at the input size."""
    s = x.shape[-1]
    big = resize(x, scaled(36, s))
    m = big.shape[-1] - s
    c = m // 2
    return [big[..., c : c + s, c : c + s], big[..., :s, :s], big[..., :s, m:], big[..., m:, :s], big[..., m:, m:]]


def fit_to(x: torch.Tensor, s: int) -> torch.Tensor:
    """Centre-crop (if larger) or zero-pad (if smaller; zero is the mean colour after normalising) to ``s``."""
    side = x.shape[-1]
    if side > s:
        o = (side - s) // 2
        return x[..., o : o + s, o : o + s]
    if side < s:
        lo = (s - side) // 2
        return F.pad(x, (lo, s - side - lo, lo, s - side - lo))
    return x


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate by (dy, dx) pixels, filling the uncovered border by reflection."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    s = x.shape[-1]
    padded = F.pad(x, (p, p, p, p), mode="reflect")
    return padded[..., p - dy : p - dy + s, p - dx : p - dx + s]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of batch ``x`` (N, C, S, S) for ``mode``; each view has the shape of ``x``."""
    check_mode(mode)
    s = x.shape[-1]
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(-1)]
    if mode == "5crop":
        return five_crops(x)
    if mode == "flip5crop":
        return five_crops(x) + five_crops(x.flip(-1))
    if mode == "scale3":
        return [fit_to(resize(x, scaled(28, s)), s), x, fit_to(resize(x, scaled(36, s)), s)]
    # translate: identity and one-pixel diagonal shifts, each with its mirror image (airbench's recipe)
    d = scaled(1, s)
    views = [x, shift(x, -d, -d), shift(x, d, d)]
    return views + [v.flip(-1) for v in views]


def view_count(mode: str) -> int:
    """How many forward passes per image ``mode`` costs."""
    return len(tta_views(torch.zeros(1, 3, REFERENCE_SIZE, REFERENCE_SIZE), mode))


def tta_forward(
    model: nn.Module | Callable, mode: str = "none", average: str = "logits"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function ``x -> logits`` that runs ``model`` once on all views of ``x`` stacked, and averages.

    With ``average="probs"`` the result is the log of the mean probability, so softmax of it
    gives the averaged probabilities and cross-entropy stays meaningful.
    """
    check_mode(mode)
    if average not in AVERAGES:
        raise ConfigError(f"unknown TTA average {average!r}; choose {', '.join(AVERAGES)}")
    if mode == "none":
        return model

    def forward(x: torch.Tensor) -> torch.Tensor:
        views = tta_views(x, mode)
        stacked = torch.cat(views)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        out = model(stacked).float().view(len(views), x.shape[0], -1)  # (views, batch, classes)
        if average == "probs":
            return out.softmax(-1).mean(0).clamp_min(1e-12).log()
        return out.mean(0)

    return forward


def compare_tta(
    model: nn.Module,
    loader,
    device: torch.device,
    modes: Sequence[str] = TTA_MODES,
    average: str = "logits",
    amp: str = "off",
) -> list[dict]:
    """Evaluate every mode on one loader: top-1, top-5, loss, views and milliseconds per image."""

    rows = []
    for mode in modes:
        r = evaluate(model, loader, device, amp=amp, forward=tta_forward(model, mode, average))
        rows.append(
            {
                "mode": mode,
                "views": view_count(mode),
                "top1": r["top1"],
                "top5": r["top5"],
                "loss": r["loss"],
                "ms_per_image": 1000 * r["testing_time"] / r["n"],
                "n": r["n"],
            }
        )
    base = rows[0]["top1"] if rows and rows[0]["mode"] == "none" else None
    for row in rows:
        row["gain_vs_none"] = None if base is None else row["top1"] - base
    return rows
