"""Statistics of comparisons, with one rule throughout: a difference is noise when it is smaller than two
standard errors of the difference. Accuracies of two models on different images use the standard errors
of both (:func:`difference_is_noise`); two models or modes scored on the same images use the images only
one of them gets right (:func:`paired_is_noise`, McNemar's test, exact at small counts), which is the stronger
test there."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from statistics import fmean, stdev
from typing import Any

from cifarkit.evaluate import fixed_broken

Z = 2.0  # the noise rule's width, in standard errors: every verdict in the package uses it through this module


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


EXACT_BELOW = 200  # discordant images; below this the paired test counts exactly instead of trusting the normal form


def paired_p_value(fixed: int, broken: int) -> float:
    """Two-sided p-value of McNemar's test: how likely a split at least as uneven as ``fixed`` : ``broken``
    is if both models were equally good (each discordant image a fair coin). Below :data:`EXACT_BELOW`
    discordant images it is the exact binomial sum (4-0 gives 0.125, 5-0 0.0625); above, the normal form
    with continuity correction, which agrees with it there to a few thousandths."""
    n, k = fixed + broken, min(fixed, broken)
    if n == 0:
        return 1.0
    if n < EXACT_BELOW:
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, 2 * tail / 2**n)
    z = max(abs(fixed - broken) - 1, 0) / math.sqrt(n)
    return math.erfc(z / math.sqrt(2))


def paired_is_noise(fixed: int, broken: int, z: float = Z) -> bool:
    """Whether two models (or modes) scored on the *same* images differ by less than ``z`` standard errors,
    from the images only one of them gets right (McNemar's test): ``fixed`` are right only in the second,
    ``broken`` only in the first. Images both get right or wrong say nothing about the difference, which is
    why this test is stronger than comparing two independent accuracies. "``z`` standard errors" is read
    as its two-sided p-value (z = 2: p = 0.0455) so that small counts are judged exactly
    (:func:`paired_p_value`): 5-0 is noise (p = 0.0625), 6-0 is not (p = 0.031)."""
    return paired_p_value(fixed, broken) >= math.erfc(z / math.sqrt(2))


def gap_is_noise(gap: float, se: float, z: float = Z) -> bool:
    """The noise rule itself: a difference ``gap`` is noise when it is smaller than ``z`` standard errors ``se``
    of that difference. Every other test here (and every verdict in the notebooks) comes down to this one."""
    return abs(gap) < z * se


def difference_is_noise(a: float, n_a: int, b: float, n_b: int, z: float = Z) -> bool:
    """Whether two accuracies measured on ``n_a`` and ``n_b`` images differ by less than ``z`` standard
    errors of their difference (independent samples; the same images make this conservative)."""
    return gap_is_noise(a - b, difference_se(a, n_a, b, n_b), z)


def within_noise_above(value: float, target: float, n: int, z: float = Z) -> bool:
    """Whether an accuracy ``value`` measured on ``n`` images is at ``target`` or above it by less than ``z``
    standard errors of ``target``: a crossing of the target that another seed or sample may not repeat."""
    return value >= target and gap_is_noise(value - target, standard_error(target, n), z)


HELPED, HURT = "helped", "hurt"


def seeds_verdict(comparisons: Sequence[tuple[float, int, int]]) -> str:
    """One change (or method) against another over seeds, from ``(gain, fixed, broken)`` per seed on the same
    images, each seed judged by :func:`paired_is_noise`; the verdict is :func:`verdict_over_seeds`'."""
    return verdict_over_seeds([(gain, not paired_is_noise(fixed, broken)) for gain, fixed, broken in comparisons])


def verdict_over_seeds(results: Sequence[tuple[float, bool]]) -> str:
    """The one rule for a verdict over seeds, from ``(gain, beyond noise)`` per seed: ``helped`` or ``hurt`` only
    when more than one seed was run and every seed says so beyond noise; otherwise what the run cannot tell, in
    words. One seed's verdict can be that seed's luck, so no verdict rests on one."""
    beyond = [gain for gain, past in results if past]
    seeds = len(results)
    if seeds > 1 and len(beyond) == seeds and all(g > 0 for g in beyond):
        return HELPED
    if seeds > 1 and len(beyond) == seeds and all(g < 0 for g in beyond):
        return HURT
    if seeds == 1:
        return "one seed: cannot tell" if beyond else "within noise (one seed)"
    if not beyond:
        return "within noise at every seed"
    return f"cannot tell: beyond noise at {len(beyond)} of {seeds} seeds" + (
        "" if all(g > 0 for g in beyond) or all(g < 0 for g in beyond) else ", in both directions"
    )


def table_seeds(table: Any) -> list[int]:
    """The seeds of a per-seed table (:func:`cifarkit.report.ablation.table`), read from its ``fixed[seed N]``
    columns in order."""
    return [int(c.split()[-1].rstrip("]")) for c in table.columns if c.startswith("fixed[seed")]


def paired_curve(rows: Sequence[Mapping], method: str, against: str):
    """Notebook 09's paired comparison: at each label budget, ``method`` against ``against`` seed by seed on the
    same test images (each seed's draw of labels is shared by both), from :mod:`cifarkit.tools.transfer`'s rows
    with their per-image ``test_correct``. Per budget: the gain per seed, its fixed/broken counts, the mean gain
    and :func:`seeds_verdict`."""
    import pandas as pd

    by = {(r["method"], r["labels_per_class"], r["seed"]): r for r in rows}
    out = []
    for n in sorted({r["labels_per_class"] for r in rows if r["method"] == method}):
        seeds = sorted(s for m, k, s in by if m == method and k == n and (against, n, s) in by)
        comparisons = []
        for s in seeds:
            a, b = by[(against, n, s)], by[(method, n, s)]
            fixed, broken = fixed_broken(a["test_correct"], b["test_correct"])
            comparisons.append((b["test_accuracy"] - a["test_accuracy"], fixed, broken))
        out.append(
            {
                "labels_per_class": n,
                "gain_per_seed": ", ".join(f"{100 * g:+.1f}" for g, _, _ in comparisons),
                "fixed_broken_per_seed": ", ".join(f"{f}/{b}" for _, f, b in comparisons),
                "mean_gain": fmean(g for g, _, _ in comparisons) if comparisons else math.nan,
                "verdict": seeds_verdict(comparisons) if comparisons else "no paired runs",
            }
        )
    table = pd.DataFrame(out).set_index("labels_per_class")
    table.attrs.update(method=method, against=against)
    return table


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean over seeds and its standard error (NaN with one seed: no spread to measure)."""
    values = [float(v) for v in values]
    return fmean(values), stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def curve_table(rows: list[dict]):
    """Notebook 09's label-efficiency curve from :mod:`cifarkit.tools.transfer`'s rows (one per run). Per method and
    budget: what it trains, the mean test accuracy over seeds, its standard error, and the mean
    seconds of a run. The standard error counts both sources of noise: the seeds' spread (which labels were drawn,
    the head's start; NaN with one seed) and the test images' own (binomial, on ``test_images``), which the seeds
    share and so cannot show: two seeds can agree by chance to a tenth of a point on 1,000 images."""
    import pandas as pd

    out = []
    for (method, n), group in pd.DataFrame(rows).groupby(["method", "labels_per_class"], sort=False):
        mean, seed_se = mean_and_se(group["test_accuracy"])
        images = int(group["test_images"].iloc[0])
        out.append(
            {
                "method": method,
                "trains": group["trains"].iloc[0],
                "labels_per_class": int(n),
                "test_accuracy": mean,
                "se": math.hypot(0.0 if math.isnan(seed_se) else seed_se, standard_error(mean, images)),
                "seed_se": seed_se,
                "seeds": len(group),
                "test_images": images,
                "seconds": float(group["seconds"].mean()),
            }
        )
    return pd.DataFrame(out)
