"""Calibration: does a model's confidence match how often it is right? A reliability diagram sorts the images
into bins by the top class's probability and compares each bin's accuracy with its mean confidence; the
expected calibration error (ECE) is the gap averaged over the bins, weighted by how many images each holds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from cifarkit.config import check_value, positive_int
from cifarkit.errors import ConfigError, DataError
from cifarkit.evaluate import predicted_labels
from cifarkit.report.commentary import Note, pct, seed_list
from cifarkit.report.stats import HELPED, HURT, verdict_over_seeds

BINS = 15  # equal-width confidence bins, as in Guo et al. (2017), "On Calibration of Modern Neural Networks"
RESAMPLES = 1000  # bootstrap resamples of the images for the ECE difference's interval


@dataclass(frozen=True)
class Reliability:
    """One model's reliability diagram on one set of images."""

    confidence: np.ndarray  # mean top-class probability per bin (NaN where a bin is empty)
    accuracy: np.ndarray  # fraction right per bin (NaN where empty)
    count: np.ndarray  # images per bin
    ece: float
    mean_confidence: float
    accuracy_all: float
    bins: int = BINS


def per_image(labels: torch.Tensor, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each image's confidence (its top class's softmax probability) and whether that class is right; the top
    class is :func:`cifarkit.evaluate.predicted_labels`, the one prediction every metric uses. Empty, mismatched
    or non-finite input is one line: a calibration of nothing, or of NaN, would print numbers that mean nothing."""
    if logits.ndim != 2 or len(logits) == 0 or len(labels) != len(logits):
        raise DataError(
            f"calibration needs logits of shape (images, classes) and one label per image, got logits "
            f"{tuple(logits.shape)} and {len(labels)} labels; score at least one image"
        )
    if not bool(torch.isfinite(logits).all()):
        raise DataError(
            f"calibration got non-finite logits (NaN or inf) for {int((~torch.isfinite(logits)).any(1).sum())} of "
            f"{len(logits)} images; the model diverged: retrain it, or lower its learning rate"
        )
    probs = logits.float().softmax(1)
    top = predicted_labels(logits)
    return probs.gather(1, top[:, None])[:, 0].numpy(), (top == labels).numpy()


def bin_of(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """The bin of each confidence: (0, 1/bins] is bin 0, ..., ((bins-1)/bins, 1] the last."""
    check_value("bins", bins, positive_int)  # every reliability and ECE bins through here
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def ece_of(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: sum over bins of (images in bin / all) x |accuracy - mean confidence|."""
    gap = np.bincount(bin_of(confidence, bins), weights=correct - confidence, minlength=bins)  # summed per bin
    return float(np.abs(gap).sum() / max(len(confidence), 1))  # no images: 0


def reliability(labels: torch.Tensor, logits: torch.Tensor, bins: int = BINS) -> Reliability:
    """The reliability diagram and ECE of ``logits`` against ``labels``."""
    confidence, correct = per_image(labels, logits)
    b = bin_of(confidence, bins)
    count = np.bincount(b, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(b, weights=correct.astype(float), minlength=bins) / count
    return Reliability(
        mean_conf,
        accuracy,
        count,
        ece_of(confidence, correct, bins),
        float(confidence.mean()),
        float(correct.mean()),
        bins,
    )


def ece_difference_interval(
    labels: torch.Tensor, first: torch.Tensor, second: torch.Tensor, bins: int = BINS, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval of ECE(second) - ECE(first) on the same images: both models are scored on the
    same resampled images each time (paired), so the interval holds the images' luck, not the models'."""
    a, b = per_image(labels, first), per_image(labels, second)
    rng = np.random.default_rng(seed)
    n = len(labels)
    diffs = []
    for _ in range(RESAMPLES):
        i = rng.integers(0, n, n)
        diffs.append(ece_of(b[0][i], b[1][i], bins) - ece_of(a[0][i], a[1][i], bins))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return float(low), float(high)


def curves(pair: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, Reliability]:
    """Each model's reliability on its (labels, logits)."""
    return {name: reliability(labels, logits) for name, (labels, logits) in pair.items()}


def pull(off: Reliability, on: Reliability) -> str:
    """What smoothing's downward pull on confidence did in this run, read from the gap between mean confidence
    and accuracy without it (``off``) and with it (``on``): closed, overshot, missed, or widened an
    under-confidence. The points it quotes are the differences of the percentages printed beside it."""
    before, after = off.mean_confidence - off.accuracy_all, on.mean_confidence - on.accuracy_all  # > 0: over

    def shown(r: Reliability) -> float:  # the gap as the reader computes it from the two rounded percentages
        return abs(round(100 * r.mean_confidence, 1) - round(100 * r.accuracy_all, 1))

    if before <= 0:
        return "here the model was under-confident already, so a pull down could only widen the gap"
    if abs(after) < before:
        return "here it brought an over-confident model's confidence closer to its accuracy, what it is for"
    if after < 0:
        return (
            f"here the model was over-confident by {shown(off):.1f} points, and the pull overshot: "
            f"{shown(on):.1f} points under its accuracy with smoothing"
        )
    return f"here it did not close the gap: over-confident by {shown(off):.1f} points without, {shown(on):.1f} with"


def describe(pairs: Mapping[int, Mapping[str, tuple[torch.Tensor, torch.Tensor]]]) -> Note:
    """The claim "label smoothing is better calibrated" checked on this run: ``pairs`` holds, per seed, the
    (labels, logits) of the model without label smoothing first and with it second, on the same validation
    images (each seed holds out its own). Each seed's bootstrap interval counts the images' luck; the verdict over seeds is the ablation's rule
    (:func:`~cifarkit.report.stats.verdict_over_seeds`): lowered or raised only when every seed agrees."""
    if not pairs or not all(isinstance(pair, Mapping) and len(pair) == 2 for pair in pairs.values()):
        raise ConfigError(
            "calibration.describe takes {seed: {name: (labels, logits)}} with two models per seed, the one "
            "without label smoothing first; give at least one seed"
        )
    seeds = list(pairs)
    measured = {}
    for s, pair in pairs.items():
        (off_name, (labels, off_logits)), (on_name, (_, on_logits)) = pair.items()
        measured[s] = (reliability(labels, off_logits), reliability(labels, on_logits))
        measured[s] += ece_difference_interval(labels, off_logits, on_logits)
    verdict = verdict_over_seeds([(off.ece - on.ece, high < 0 or low > 0) for off, on, low, high in measured.values()])
    called = {
        HELPED: "it **lowered** the calibration error beyond the images' luck at every seed",
        HURT: "it **raised** the calibration error beyond the images' luck at every seed",
    }.get(verdict)
    said = called or f"**{verdict}**: this run neither shows nor refutes it"
    first = seeds[0]
    off, on = measured[first][:2]
    images = int(off.count.sum())

    def side(name: str, r: Reliability) -> str:
        lean = "over-confident" if r.mean_confidence > r.accuracy_all else "under-confident"
        return (
            f"{name}: ECE **{100 * r.ece:.1f} points**, mean confidence {pct(r.mean_confidence)} at "
            f"{pct(r.accuracy_all)} accuracy ({lean})"
        )

    changes = "; ".join(
        f"{100 * (b.ece - a.ece):+.1f} points at seed {s} (95% bootstrap interval {100 * low:+.1f} to {100 * high:+.1f})"
        for s, (a, b, low, high) in measured.items()
    )
    text = (
        f"On {images:,} validation images with {off.bins} confidence bins, at seed {first}, {side(off_name, off)}; "
        f"{side(on_name, on)}. Label smoothing changed the ECE by {changes}: {said}. Each interval counts the "
        "images' luck; another seed trains other models, so, as in the ablation, a verdict needs every seed to "
        "agree. Smoothing trains towards a target of less than 100% on the label, so it pulls confidence down; "
        f"{pull(off, on)}."
    )
    finding = (
        f"Calibration ({off.bins} bins, validation, {seed_list(seeds)}): ECE {100 * off.ece:.1f} points without label smoothing, {100 * on.ece:.1f} "
        f"with it at seed {first}; {(called or verdict).replace('**', '')}."
    )
    return Note(text, finding=finding)
