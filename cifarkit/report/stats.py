"""Statistics of comparisons, with one rule throughout: a difference is noise when it is smaller than two
standard errors of the difference. Accuracies of two models on different images use the standard errors
of both (:func:`difference_is_noise`); two models or modes scored on the same images use the images only
one of them gets right (:func:`paired_is_noise`, McNemar's test), which is the stronger test there."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import fmean


def standard_error(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images (binomial): about 1 point at
    p = 0.7 on 2,000 images, so differences smaller than about two of these are noise."""
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def difference_se(a: float, n_a: int, b: float, n_b: int) -> float:
    """Standard error of the difference of two accuracies measured on independent images."""
    return math.hypot(standard_error(a, n_a), standard_error(b, n_b))


def paired_se(fixed: int, broken: int, n: int) -> float:
    """Standard error of the difference of two accuracies on the *same* ``n`` images, from the images only
    one of them gets right (``fixed``: only the second, ``broken``: only the first): McNemar's normal form."""
    return math.sqrt(max(fixed + broken, 1)) / max(n, 1)


def paired_is_noise(fixed: int, broken: int, z: float = 2.0) -> bool:
    """Whether two models (or modes) scored on the *same* images differ by less than ``z`` standard errors,
    from the images only one of them gets right (McNemar's test, normal form): ``fixed`` are right only in
    the second, ``broken`` only in the first. Images both get right or wrong say nothing about the
    difference, which is why this test is stronger than comparing two independent accuracies."""
    return abs(fixed - broken) < z * math.sqrt(max(fixed + broken, 1))


def difference_is_noise(a: float, n_a: int, b: float, n_b: int, z: float = 2.0) -> bool:
    """Whether two accuracies measured on ``n_a`` and ``n_b`` images differ by less than ``z`` standard
    errors of their difference (independent samples; the same images make this conservative)."""
    return abs(a - b) < z * difference_se(a, n_a, b, n_b)


def means(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each entry's mean, in the given order (e.g. validation top-1 over seeds, by ablation step)."""
    return {name: fmean(v) for name, v in values.items()}


def best_mean(values: Mapping[str, Sequence[float]]) -> str:
    """The entry with the highest mean (the first of equals): the step to keep when the finalists of an
    ablation were retrained with more seeds, because one seed's lead can be that seed's luck."""
    mean = means(values)
    return max(mean, key=mean.__getitem__)
