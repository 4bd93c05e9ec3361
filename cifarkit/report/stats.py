"""Statistics of comparisons: the standard error of an accuracy and the one rule that calls a difference noise."""

from __future__ import annotations

import math


def standard_error(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images (binomial): about 1 point at
    p = 0.7 on 2,000 images, so differences smaller than about two of these are noise."""
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def difference_se(a: float, n_a: int, b: float, n_b: int) -> float:
    """Standard error of the difference of two accuracies measured on independent images."""
    return math.hypot(standard_error(a, n_a), standard_error(b, n_b))


def difference_is_noise(a: float, n_a: int, b: float, n_b: int, z: float = 2.0) -> bool:
    """Whether two accuracies measured on ``n_a`` and ``n_b`` images differ by less than ``z`` standard
    errors of their difference (independent samples; the same images make this conservative)."""
    return abs(a - b) < z * difference_se(a, n_a, b, n_b)
