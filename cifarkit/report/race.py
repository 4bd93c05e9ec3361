"""What notebook 07 shows about the speedrun: time-to-accuracy curves, the ablation table and their commentary."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import pandas as pd
import torch

from cifarkit.data import Split
from cifarkit.evaluate import fixed_broken
from cifarkit.loader import Normalizer
from cifarkit.report.commentary import Note, pct, seed_list
from cifarkit.report.stats import (
    HELPED,
    HURT,
    Z,
    gap_is_noise,
    paired_is_noise,
    paired_se,
    standard_error,
    verdict_over_seeds,
    within_noise_above,
)
from cifarkit.runs import read_metrics
from cifarkit.speedrun.recipe import PIECES, Recipe, SpeedrunResult, ablation_recipes, scores, train

Curve = list[dict[str, float]]  # rows with "seconds" (cumulative training time) and "val_accuracy"


def fit_curve(run_dir: str | Path) -> Curve:
    """A ``fit`` run's validation top-1 against cumulative training seconds (validation passes not counted)."""

    rows = read_metrics(run_dir)
    seconds, curve = 0.0, []
    for r in rows:
        seconds += r["epoch_time_s"]
        curve.append({"epoch": r["epoch"], "seconds": seconds, "val_accuracy": r["val_accuracy"]})
    return curve


def time_to(curve: Curve, target: float) -> float | None:
    """Seconds until the first epoch whose validation top-1 reaches ``target`` (None if none does)."""
    return next((r["seconds"] for r in curve if r.get("val_accuracy", -1) >= target), None)


def run_ablation(
    recipe: Recipe,
    train_split: Split,
    val: Split,
    mean,
    std,
    num_classes: int,
    device: torch.device,
    seed: int = 0,
    log: Callable[[str], None] = print,
    amp: str = "auto",
):
    """Train the full recipe and each one-piece-off variant in precision ``amp``; validation top-1 (with each
    variant's TTA).

    Every variant is scored on the same validation images as the full recipe, so each difference is judged by
    the paired test (:func:`cifarkit.report.stats.paired_is_noise`) on the images only one of the two gets right.
    Returns a DataFrame: ``variant``, ``val_accuracy``, ``delta`` (vs the full recipe), ``fixed`` and ``broken``
    (images only the variant / only the full recipe gets right), ``se_delta`` (standard error of the paired
    difference), ``within_noise`` (|delta| < 2 se), ``seconds``, ``reason``.
    """
    norm = Normalizer(mean, std, device, channels_last=True)
    reasons = {f"- {p.name}": p.reason for p in PIECES}
    rows, full_correct = [], None
    for label, variant in ablation_recipes(recipe):
        log(f"ablation: {label}")
        result: SpeedrunResult = train(
            variant, train_split, mean, std, num_classes, device, seed=seed, log=lambda s: None, amp=amp
        )
        scored = scores(result.model, val, norm, variant.tta, result.amp)
        full_correct = scored["correct"] if full_correct is None else full_correct  # the first row is the full recipe
        fixed, broken = fixed_broken(full_correct, scored["correct"])
        rows.append(
            {
                "variant": label,
                "val_accuracy": scored["accuracy"],
                "delta": (fixed - broken) / len(val),
                "fixed": fixed,
                "broken": broken,
                "se_delta": paired_se(fixed, broken, len(val)) if fixed + broken else 0.0,
                "within_noise": paired_is_noise(fixed, broken),
                "seconds": result.seconds,
                "reason": reasons.get(label, ""),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["n_val"] = len(val)
    return out


def not_reached(curve: Curve, target: float) -> str:
    """A target a curve never reached, in words with its budget and peak: "not reached in 10 epochs (peak 69.2%)"."""
    best = max(curve, key=lambda r: r.get("val_accuracy", -1), default=None)
    if best is None:
        return "not reached (no validation point)"
    epochs = curve[-1].get("epoch")
    budget = f" in {epochs:g} epoch{'' if epochs == 1 else 's'}" if epochs is not None else ""
    return f"not reached{budget} (peak {pct(best['val_accuracy'])})"


def at_the_edge(curve: Curve, target: float, n_val: int | None) -> bool:
    """Whether a curve's crossing of ``target`` is within noise of it: the validation top-1 at the crossing is
    less than two standard errors (on ``n_val`` images) above the target, so another seed may cross later or not."""
    at = next((r for r in curve if r.get("val_accuracy", -1) >= target), None)
    return bool(at and n_val and within_noise_above(at["val_accuracy"], target, n_val))


def describe_race(curves: dict[str, Curve], target: float, n_val: int | None = None) -> Note:
    """How long each recipe took to reach ``target`` on validation, the ratio first, then a line per recipe.
    A crossing within noise of the target (:func:`at_the_edge`, on ``n_val`` validation images) is named, and
    a ratio that rests on one is said to rest on a single seed's luck."""
    times = {name: time_to(c, target) for name, c in curves.items()}
    reached = {k: v for k, v in times.items() if v is not None}
    edge = {name for name in reached if at_the_edge(curves[name], target, n_val)}
    lines = []
    if len(reached) >= 2:
        fast, slow = min(reached, key=reached.get), max(reached, key=reached.get)
        ratio = (
            f"**{fast}** reached {pct(target)} validation top-1 {reached[slow] / reached[fast]:.1f}x sooner than "
            f"**{slow}** on this machine (training time only; each curve's validation passes are not counted)"
        )
        shaky = [name for name in (fast, slow) if name in edge]
        if shaky:
            ratio += (
                f"; one seed each, and {' and '.join(f'**{n}**' for n in shaky)} crossed within noise of the target, "
                "so the ratio is a rough one"
            )
        lines.append(ratio + ".\n")
    for name, c in curves.items():
        best = max((r["val_accuracy"] for r in c), default=float("nan"))
        t = times[name]
        if t is None:
            missed = not_reached(c, target).removeprefix("not reached")
            when = (
                f"did not reach {pct(target)}{missed} after {c[-1]['seconds']:.1f} s of training"
                if c
                else "has no curve"
            )
        else:
            when = f"reached {pct(target)} after **{t:.1f} s** of training"
            if name in edge:
                when += f" (at the edge: within two standard errors of {pct(target)} on {n_val:,} images)"
            when += f"; its best validation top-1 was {pct(best)} after {c[-1]['seconds']:.1f} s"
        lines.append(f"- **{name}** {when}.")
    missed = [
        f"**{name}** did not reach {pct(target)}{not_reached(c, target).removeprefix('not reached')}"
        for name, c in curves.items()
        if times[name] is None and c
    ]
    if missed:
        lines.append(
            f"\nThis run does not answer how long {' and '.join(m.split(' did not')[0] for m in missed)} take"
            f"{'s' if len(missed) == 1 else ''} to reach {pct(target)}: that needs more epochs than this budget gave, "
            "so any comparison with it here is a lower bound, not a ratio."
        )
    finding = " ".join(
        [lines[0].strip() if len(reached) >= 2 else f"{len(reached)} of {len(curves)} recipes reached {pct(target)}."]
        + [f"{m}." for m in missed]
        + (["That question is unanswered at this budget."] if missed else [])
    )
    return Note("\n".join(lines), finding=finding)


def describe_test(
    test_accuracy: float, tta: str, images: int, train_seconds: float, tta_seconds: float, target: float | None = None
) -> Note:
    """The speedrun checkpoint's one test number and what it cost, as airbench counts (training plus TTA). With
    ``target`` it says whether the test score clears the target beyond noise on these images, and that the
    recipe's length was tuned on the same validation split the race reads, so the test number is the honest one."""
    how, cost = (
        ("in a plain test pass (this recipe uses no TTA)", "the test pass")
        if tta == "none"
        else (f"with TTA `{tta}`", "TTA")
    )
    return Note(
        f"The speedrun model reaches **{pct(test_accuracy)}** test top-1 {how} on {images:,} images, after "
        f"{train_seconds:.1f} s of training plus {tta_seconds:.1f} s of {cost} = **{train_seconds + tta_seconds:.1f} s** in all."
        + ("" if target is None else " " + against_target(test_accuracy, target, images))
    )


def against_target(accuracy: float, target: float, images: int) -> str:
    """A test score against the race's target in words, with the noise rule on ``images`` test images."""
    if gap_is_noise(accuracy - target, standard_error(target, images)):
        where = f"within noise of the {pct(target)} target on {images:,} images: another seed may land on either side"
    elif accuracy > target:
        where = f"above the {pct(target)} target beyond noise on {images:,} images"
    else:
        where = f"below the {pct(target)} target beyond noise on {images:,} images"
    return (
        f"That is {where}. The recipe's length (its epochs) was chosen on validation images of this same "
        "training split, which the race's curves also read: the test number is the one to trust."
    )


def describe_ablation(by_seed: Mapping[int, Any]) -> Note:
    """Markdown: which pieces helped on validation at every seed, which hurt at every seed, and which the run
    cannot tell, by the rule 03's ablation uses (:func:`~cifarkit.report.stats.verdict_over_seeds`); ``by_seed``
    maps each seed to its :func:`run_ablation` table. Numbers are means over the seeds."""
    seeds, tables = list(by_seed), list(by_seed.values())
    full = fmean(float(t.loc[0, "val_accuracy"]) for t in tables)
    at = {s: t.set_index("variant") for s, t in by_seed.items()}
    rows = []
    for variant in tables[0]["variant"].iloc[1:]:
        per = [t.loc[variant] for t in at.values()]  # switching a piece off: a negative delta means it helped
        verdict = verdict_over_seeds([(-float(r["delta"]), not bool(r["within_noise"])) for r in per])
        rows.append({"variant": variant, "delta": fmean(float(r["delta"]) for r in per), "verdict": verdict})
    rest = pd.DataFrame(rows)
    helped, hurt = rest[rest["verdict"] == HELPED].sort_values("delta"), rest[rest["verdict"] == HURT]
    untold = rest[~rest["verdict"].isin([HELPED, HURT])]
    se = pd.concat([t["se_delta"].iloc[1:] for t in tables]).median()
    n = tables[0].attrs.get("n_val")
    images = f"the same {n} validation images" if n else "the same validation images"
    parts = [
        f"The full recipe reached **{pct(full)}** validation top-1 (mean of {seed_list(seeds)}). At each seed all {len(tables[0])} runs are scored on {images}, so each "
        "difference is judged by a paired test: it counts only beyond two standard errors of the difference, "
        f"counted from the images only one of the two runs gets right (about {100 * Z * se:.1f} points here). "
        "As in 03, a piece is said to earn its place, or not to pay, only when every seed agrees beyond noise."
    ]
    if len(helped):
        parts.append(
            "Switching off "
            + ", ".join(f"**{v[2:]}** ({100 * d:+.1f} points)" for v, d in helped[["variant", "delta"]].values)
            + " cost accuracy at every seed: "
            + ("those pieces earn their place" if len(helped) > 1 else "that piece earns its place")
            + " at this budget."
        )
    if len(untold):
        parts.append(
            "The run cannot tell for "
            + ", ".join(f"{v[2:]} ({100 * d:+.1f}, {w})" for v, d, w in untold[["variant", "delta", "verdict"]].values)
            + "."
        )
    if len(hurt):
        parts.append(
            "Switching off "
            + ", ".join(f"**{v[2:]}**" for v in hurt["variant"])
            + " *improved* validation accuracy at every seed: at this budget "
            + ("those pieces do not pay." if len(hurt) > 1 else "that piece does not pay.")
        )
    if len(helped):
        top, others = helped.iloc[0], rest.drop(index=helped.index[0]).sort_values("delta")
        name, falls = f"**{top['variant'][2:]}**", f"{-100 * top['delta']:.1f} points from {pct(full)}"
        nxt = others.iloc[0] if len(others) else None  # a rank holds only beyond noise of the next piece's cost
        than = f"**{nxt['variant'][2:]}** ({100 * nxt['delta']:+.1f})" if nxt is not None else ""

        def apart(t: Any) -> bool:  # the two paired standard errors taken as independent: conservative
            a, b = t.loc[top["variant"]], t.loc[nxt["variant"]]
            return not gap_is_noise(a["delta"] - b["delta"], math.hypot(a["se_delta"], b["se_delta"]))

        if nxt is not None and not all(apart(t) for t in at.values()):
            finding = (
                f"Switching off {name} cost the most validation top-1 ({falls}), within noise of {than} at some "
                "seed: the run cannot rank them."
            )
        else:
            beyond = f", beyond noise of the next piece, {than}, at every seed" if nxt is not None else ""
            finding = f"The piece worth most here is {name}: without it validation top-1 falls {falls}{beyond}."
    else:
        finding = f"At this budget no single piece moved validation top-1 beyond noise at every seed from the full recipe's {pct(full)}."
    return Note(" ".join(parts), finding=finding)


def summarize(curves: dict[str, Curve], target: float, names: Sequence[str]) -> dict[str, float | str]:
    """Headline numbers for the report index: seconds to ``target`` per named curve, or in words when the
    curve never reached it (:func:`not_reached`), never a blank."""
    out: dict[str, float | str] = {}
    for name in names:
        t = time_to(curves[name], target)
        out[f"seconds_to_{int(round(100 * target))}_{name}"] = t if t is not None else not_reached(curves[name], target)
    return out
