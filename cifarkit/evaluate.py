"""The one evaluation path: logits of a model over a loader, top-1/top-5 and the classification report
(precision, recall, F1, AUC, per-class accuracy, confusion), and test-time augmentation (TTA), which averages
the logits over batched views of each image. Training, prediction and the notebooks all score through here."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifarkit.config import TTA_AVERAGES, TTA_MODES, check_value, positive_int
from cifarkit.device import precision_name, resolve_amp, synchronize
from cifarkit.errors import ConfigError
from cifarkit.loader import DeviceLoader

Forward = Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- metrics


def ranked_classes(logits: torch.Tensor) -> torch.Tensor:
    """Each image's classes from most to least likely, ties broken once and the same way everywhere: the lower
    class index first. ``topk`` breaks ties as its kernel likes, and bf16 logits tie often (8 mantissa bits),
    so top-1 from ``topk`` and a confusion matrix from ``argmax`` could name two predictions for one image."""
    return logits.sort(dim=1, descending=True, stable=True).indices


def predicted_labels(logits: torch.Tensor) -> torch.Tensor:
    """The one predicted class per image that every metric of a pass derives from (see :func:`ranked_classes`)."""
    return ranked_classes(logits)[:, 0]


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many labels are among the top-k predictions, for each k (k is capped at the class count); top-1 is
    :func:`predicted_labels`, so it agrees with the confusion matrix even when logits tie."""
    kmax = min(max(ks), logits.shape[1])
    hits = ranked_classes(logits)[:, :kmax] == labels[:, None]
    return {k: int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """The fraction of images whose label is among their ``k`` highest logits (ties: the lower class first)."""
    return topk_correct(logits, labels, (k,))[k] / max(len(labels), 1)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns (scikit-learn's, every class
    present even when never seen or predicted)."""
    from sklearn import metrics as sklearn_metrics  # seconds to import; only when used

    return sklearn_metrics.confusion_matrix(labels, preds, labels=np.arange(num_classes))


def most_confused(cm: np.ndarray, classes: Sequence[str], n: int = 10) -> list[dict]:
    """The largest off-diagonal cells: which true class is most often predicted as which."""
    check_value("most_confused(n)", n, positive_int)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(off, axis=None)[::-1][:n]
    pairs = []
    for i in flat:
        t, p = divmod(int(i), cm.shape[0])
        if off[t, p] == 0:
            break
        pairs.append({"true": classes[t], "predicted": classes[p], "count": int(off[t, p])})
    return pairs


def auc_ovr(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """Macro one-vs-rest ROC AUC from softmax probabilities; None when a class is absent from ``labels``."""
    from sklearn import metrics as sklearn_metrics  # seconds to import; only when used

    num_classes = probs.shape[1]
    if len(np.unique(labels)) != num_classes:
        return None
    if num_classes == 2:
        return float(sklearn_metrics.roc_auc_score(labels, probs[:, 1]))
    # probabilities are float32 softmax outputs; renormalise in float64 so sklearn's sum check passes
    p = probs.astype(np.float64)
    return float(
        sklearn_metrics.roc_auc_score(labels, p / p.sum(axis=1, keepdims=True), multi_class="ovr", average="macro")
    )


def classification_metrics(labels: np.ndarray, preds: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Macro precision / recall / F1, AUC, per-class accuracy, confusion matrix, most-confused pairs, all from
    ``preds`` (:func:`predicted_labels`; the probabilities only rank images for the AUC)."""
    from sklearn import metrics as sklearn_metrics  # seconds to import; only when used

    num_classes = len(classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes never predicted get precision 0, which is what we want
        precision, recall, f1, _ = sklearn_metrics.precision_recall_fscore_support(
            labels, preds, labels=list(range(num_classes)), average="macro", zero_division=0
        )
    cm = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(axis=1)
    per_class = {c: (float(cm[i, i] / support[i]) if support[i] else None) for i, c in enumerate(classes)}
    return {
        "precision_score": float(precision),
        "recall_score": float(recall),
        "f1_score": float(f1),
        "auc_score": auc_ovr(labels, probs),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "most_confused": most_confused(cm, classes),
    }


# ----------------------------------------------------------------------------- evaluation


def autocast(device: torch.device, amp: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """Mixed precision context for ``amp`` ("off", "fp16", "bf16") on ``device``. ``cache=False`` recasts the
    weights at every use instead of keeping their low-precision copies, as a CUDA graph capture needs."""
    amp = resolve_amp(amp, device)
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)


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


def fixed_broken(first: torch.Tensor, second: torch.Tensor) -> tuple[int, int]:
    """From two per-image right/wrong bool tensors on the same images (``evaluate(per_image=True)``'s
    ``correct``): how many images only the second gets right (``fixed``) and how many only the first
    does (``broken``), the counts a paired test of their difference reads."""
    return int((second & ~first).sum()), int((~second & first).sum())


def evaluate(
    model: nn.Module,
    loader: DeviceLoader,
    device: torch.device,
    classes: tuple[str, ...] | None = None,
    amp: str = "off",
    forward: Forward | None = None,
    per_image: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5 (fractions), loss, n, time and ``precision`` (what the pass computed in: fp32, bf16, fp16)
    under test.json's names (``accuracy``, ``top5_accuracy``, ``losses``, ``testing time``); with ``classes``
    also P/R/F1, AUC, per-class and confusion. Every metric
    comes from one predicted label per image (:func:`predicted_labels`), so ``accuracy`` is exactly the
    confusion matrix's trace over ``n`` in any precision.

    Args:
        model: network to evaluate (put in eval mode).
        loader: a non-training :class:`DeviceLoader`.
        device: where ``model`` lives.
        classes: class names; pass them to get the full classification report.
        amp: mixed precision mode.
        forward: replaces ``model(x)``, e.g. a test-time-augmentation wrapper.
        per_image: add ``correct``, a bool tensor with each image's top-1 right or wrong, for paired
            comparisons of two models or modes on the same images.
    """
    logits, labels, seconds = predict_logits(model, loader, device, amp, forward)
    n = int(labels.numel())
    preds = predicted_labels(logits)
    hits = topk_correct(logits, labels, (1, 5))
    result: dict[str, Any] = {
        "accuracy": hits[1] / n,
        "top5_accuracy": hits[5] / n,
        "losses": float(nn.functional.cross_entropy(logits, labels)),
        "n": n,
        "testing time": seconds,
        "images_per_s": n / seconds if seconds > 0 else None,
        "precision": precision_name(amp, device),
    }
    if classes is not None:
        probs = torch.softmax(logits, dim=1).numpy()
        result.update(classification_metrics(labels.numpy(), preds.numpy(), probs, classes))
    if per_image:
        result["correct"] = preds == labels
    return result


# ----------------------------------------------------------------------------- test-time augmentation

REFERENCE_SIZE = 32  # view geometry is defined at CIFAR's 32 px and scaled to the model's input


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
    if mode == "translate":  # identity and one-pixel diagonal shifts, each with its mirror image (airbench's)
        d = scaled(1, s)
        views = [x, shift(x, -d, -d), shift(x, d, d)]
        return views + [v.flip(-1) for v in views]
    raise ConfigError(f"unknown TTA mode {mode!r}; choose {', '.join(TTA_MODES)}")


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
    for what, value, choices in (("mode", mode, TTA_MODES), ("average", average, TTA_AVERAGES)):
        if value not in choices:
            raise ConfigError(f"unknown TTA {what} {value!r}; choose {', '.join(choices)}")
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
    per_image: bool = False,
) -> list[dict]:
    """Evaluate every mode on one loader: ``accuracy`` (top-1), ``top5_accuracy``, ``losses`` (mean
    cross-entropy), views and milliseconds per image, and against the first mode (``none``) on the same images:
    ``fixed`` (images it gets right that ``none`` got wrong) and ``broken`` (the reverse), the counts a paired
    test of the difference reads. With ``per_image`` each row also holds ``correct``, its per-image right/wrong,
    so that any two modes can be compared with the paired test."""
    rows, first = [], None
    for mode in modes:
        r = evaluate(model, loader, device, amp=amp, forward=tta_forward(model, mode, average), per_image=True)
        first = r["correct"] if first is None else first
        fixed, broken = fixed_broken(first, r["correct"])
        rows.append(
            {
                "mode": mode,
                "views": view_count(mode),
                "accuracy": r["accuracy"],
                "top5_accuracy": r["top5_accuracy"],
                "losses": r["losses"],
                "ms_per_image": 1000 * r["testing time"] / r["n"],
                "n": r["n"],
                "fixed": fixed,
                "broken": broken,
            }
            | ({"correct": r["correct"]} if per_image else {})
        )
    base = rows[0]["accuracy"] if rows and rows[0]["mode"] == "none" else None
    for row in rows:
        row["gain_vs_none"] = None if base is None else row["accuracy"] - base
    return rows
