"""Classification metrics from logits and probabilities: top-k, macro P/R/F1, AUC, confusion."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many labels are among the top-k predictions, for each k (k is capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == labels[:, None]
    return {k: int(hits[:, : min(k, kmax)].any(dim=1).sum()) for k in ks}


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns (scikit-learn's, every class
    present even when never seen or predicted)."""
    from sklearn import metrics as sklearn_metrics  # seconds to import; only when used

    return sklearn_metrics.confusion_matrix(labels, preds, labels=np.arange(num_classes))


def most_confused(cm: np.ndarray, classes: Sequence[str], n: int = 10) -> list[dict]:
    """The largest off-diagonal cells: which true class is most often predicted as which."""
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


def classification_metrics(labels: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Macro precision / recall / F1, AUC, per-class accuracy, confusion matrix, most-confused pairs."""
    from sklearn import metrics as sklearn_metrics  # seconds to import; only when used

    num_classes = len(classes)
    preds = probs.argmax(axis=1)
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


def standard_error(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images (binomial): about 1 point at
    p = 0.7 on 2,000 images, so differences smaller than about two of these are noise."""
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def difference_is_noise(a: float, n_a: int, b: float, n_b: int, z: float = 2.0) -> bool:
    """Whether two accuracies measured on ``n_a`` and ``n_b`` images differ by less than ``z`` standard
    errors of their difference (independent samples; the same images make this conservative)."""
    return abs(a - b) < z * math.hypot(standard_error(a, n_a), standard_error(b, n_b))
