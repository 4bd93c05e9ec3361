"""Commentary written from a run's own numbers: the paragraphs a notebook shows after a result.

Notebooks keep fixed Markdown for concepts only; every sentence about *this* run (which layer
holds the parameters, when overfitting started, which difference is noise) comes from a function
here, so the text never contradicts the numbers above it. Each function returns a :class:`Note`,
a string that Jupyter (and the HTML report) renders as Markdown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from cifarkit.device import precision_name
from cifarkit.errors import duration_text
from cifarkit.report.comparison import fastest_runs, run_name
from cifarkit.report.stats import (
    HELPED,
    HURT,
    difference_is_noise,
    gap_is_noise,
    paired_is_noise,
    standard_error,
    table_seeds,
)
from cifarkit.tools.deploy import faster, leaders
from cifarkit.tools.perflogs import INPUT_BOUND_SHARE, OTHER_LOAD_PERCENT, PACE_SPREAD


class Note(str):
    """Markdown text; displayed as Markdown by Jupyter and nbconvert. ``finding`` is the sentence the function
    that wrote it chose as its answer (with the run's numbers), which the Takeaways' "In this run" repeats;
    without one, the first sentence stands for it."""

    def __new__(cls, text: str, finding: str | None = None) -> Note:
        note = super().__new__(cls, text)
        note.finding = finding
        return note

    def _repr_markdown_(self) -> str:
        return str(self)


# a sentence ends at . ! or ? followed by a space and a capital, a Markdown mark or a bracket ("75.4%" does not)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z*`(])")


def first_sentence(text: str) -> str:
    """The first sentence (and first line) of a paragraph."""
    return SENTENCE_END.split(text.strip(), maxsplit=1)[0].split("\n")[0]


# words that mark a verdict or a caveat: a sentence holding one is never dropped from the Takeaways' "In this run"
CAVEATS = (
    "noise",
    "cannot tell",
    "not a clean",
    "different budget",
    "rough one",
    "unanswered",
    "lower bound",
    "not measured",
    "one seed",
)


def findings(notes: Sequence[str]) -> list[str]:
    """What each paragraph found: its :class:`Note`'s ``finding`` (which the function that wrote it makes carry its
    verdicts), else its first sentence followed by every other sentence of the paragraph that carries a verdict or a
    caveat about this run (:data:`CAVEATS`), so a summary never keeps a number and drops the words that qualify it."""
    out = []
    for note in notes:
        if not note.strip():
            continue
        if getattr(note, "finding", None):
            out.append(note.finding)
            continue
        found = first_sentence(note)
        lines = [line.strip().removeprefix("- ").strip() for line in note.splitlines() if line.strip()]
        sentences = [x.strip() for line in lines for x in SENTENCE_END.split(line)]
        extra = [
            x
            for x in sentences
            if any(c in x for c in CAVEATS)
            and any(mark in x for mark in ("`", "**", *"0123456789"))  # about this run, not a definition
            and x.rstrip(".") not in found
        ]
        out.append(" ".join([found, *extra]))
    return out


def in_this_run(notes: Sequence[str]) -> Note:
    """The takeaways that depend on the run: the finding of each generated paragraph, as bullets."""
    bullets = findings(notes)
    if not bullets:
        return Note("*No generated findings in this notebook run.*")
    return Note("**In this run:**\n\n" + "\n".join(f"- {b}" for b in bullets))


def epoch_list(epochs: Sequence[int]) -> str:
    """Epoch numbers as runs: [1, 8, 9, 10] -> ``epoch 1 and epochs 8-10``."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    words = [f"epoch {r[0]}" if len(r) == 1 else f"epochs {r[0]}-{r[-1]}" for r in runs]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def pct(x: float) -> str:
    """A fraction as a percentage with one decimal (0.7542 -> 75.4%)."""
    return f"{100 * x:.1f}%"


def points(x: float) -> str:
    """A difference of fractions in percentage points, signed (0.015 -> +1.5 points)."""
    return f"{100 * x:+.1f} points"


def seed_list(seeds: Sequence[int]) -> str:
    """Seeds in words: [0] -> ``seed 0``, [0, 1] -> ``seeds 0, 1``."""
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def one_run_each(noise: bool) -> str:
    """A difference between two single training runs in words: its noise is the images' only (another seed moves
    a model by itself), so beyond it is not a verdict on the models (:func:`~cifarkit.report.stats.seeds_verdict`)."""
    return ("within noise" if noise else "beyond the images' noise") + ", one run each"


def parameters(summary: Mapping[str, Any]) -> Note:
    """Where a model's parameters sit (from :func:`cifarkit.report.comparison.model_summary`), and what mult-adds are."""
    layers = sorted(summary["layers"], key=lambda r: -r["params"])
    total = summary["params"]
    top = layers[0]
    linear = sum(
        r["params"]
        for r in summary["layers"]
        if "classifier" in r["layer"] or "fc" in r["layer"] or "head" in r["layer"]
    )
    text = (
        f"This model has **{total:,} parameters**. The largest single layer is `{top['layer']}` with "
        f"{top['params']:,} ({pct(top['params'] / total)} of all)"
    )
    if linear and linear != top["params"]:
        text += f"; the classifier head holds {linear:,} ({pct(linear / total)})"
    text += (
        f". One image costs **{summary['mult_adds'] / 1e6:,.1f} million mult-adds** (multiply-accumulate "
        "operations of one forward pass, the usual measure of compute; a training step costs about 3x that)."
    )
    return Note(text)


def training_curves(train: Mapping[str, Any]) -> Note:
    """When validation loss bottomed out versus when accuracy peaked, and what the train/validation gap means."""
    tl, vl = train["train_losses"], train["val_losses"]
    ta, va = train["train_accuracies"], train["val_accuracies"]
    epochs = len(vl)
    best, low = train["best_epoch"], train["min_val_loss_epoch"]
    parts = [
        f"Over {epochs} epochs the best validation accuracy, **{pct(train['best_val_accuracy'])}**, came in "
        f"epoch {best}; validation loss was lowest in epoch {low}."
    ]
    if low == epochs:
        parts.append(
            "Validation loss was still falling at the end, so this budget stopped before overfitting: "
            "more epochs would likely help."
        )
        verdict = f"no overfitting within {epochs} epochs (validation loss still falling at the end)"
    else:
        rise = vl[-1] - vl[low - 1]
        parts.append(
            f"After epoch {low} validation loss rose by {rise:.3f} while training loss kept falling "
            f"({tl[low - 1]:.3f} to {tl[-1]:.3f}): that is overfitting setting in."
        )
        verdict = f"overfitting set in after epoch {low} (validation loss rose by {rise:.3f} from there)"
        if best > low:
            parts.append(
                f"Accuracy still improved until epoch {best}: the model got more images right while "
                "growing over-confident on the ones it gets wrong, which is what raises the loss."
            )
    below = [i + 1 for i in range(epochs) if vl[i] < tl[i]]
    if below:
        parts.append(
            f"Validation loss sits *below* training loss in {len(below)} of {epochs} epochs ({epoch_list(below)}). "
            "That is not a bug: training loss is averaged over the epoch while the model "
            "is still improving, and it is measured on augmented images (and with dropout, if the model "
            "has it); validation runs after the epoch, on plain images, in eval mode."
        )
    gap = ta[-1] - va[-1]
    parts.append(
        f"In the last epoch training accuracy was {pct(ta[-1])} and validation {pct(va[-1])} (a gap of {points(gap)})."
    )
    finding = f"Best validation accuracy **{pct(train['best_val_accuracy'])}** in epoch {best} of {epochs}; {verdict}."
    return Note(" ".join(parts), finding=finding)


def test_metrics(test: Mapping[str, Any], classes: Sequence[str]) -> Note:
    """The test numbers of the chosen checkpoint in words, with their noise and one-line definitions."""
    n, top1 = test["n"], test["accuracy"]
    per_class = {c: a for c, a in test["per_class_accuracy"].items() if a is not None}
    computed = f", computed in **{test['precision']}**" if test.get("precision", "fp32") != "fp32" else ""
    text = [
        f"On {n:,} test images the checkpoint chosen on validation reaches **top-1 {pct(top1)}** "
        f"(± {100 * standard_error(top1, n):.1f} points standard error) and **top-5 {pct(test['top5_accuracy'])}** "
        f"(top-5: the true class is among the five highest scores){computed}."
    ]
    finding = text[0]
    text.append(
        f"Macro F1 {test['f1_score']:.3f} averages each class's F1 (the balance of its precision and "
        "recall) with equal weight per class."
    )
    if test.get("auc_score") is not None:
        text.append(
            f"One-vs-rest AUC {test['auc_score']:.3f}: for each class, the chance that a random image "
            "of it scores higher than a random other image (1.0 is a perfect ranking)."
        )
    text.append(f"Per class, {extreme(test, per_class, 'is easiest')} and {extreme(test, per_class, 'hardest')}.")
    if test.get("most_confused"):
        pair = test["most_confused"][0]
        mistake = f"`{pair['true']}` taken for `{pair['predicted']}` ({pair['count']} images)"
        text.append(f"The most common mistake is {mistake}.")
        finding = f"Test top-1 **{pct(top1)}** on {n:,} images{computed}; the most common mistake is {mistake}."
    return Note(" ".join(text), finding=finding)


def extreme(test: Mapping[str, Any], per_class: Mapping[str, float], word: str) -> str:
    """The class ``word`` names (``is easiest``: the highest per-class top-1, ``hardest``: the lowest), or the two
    first ones when they are within noise of each other. Each class is scored on its own images (its row of the
    confusion matrix), so the test for independent samples judges them."""
    order = sorted(per_class, key=per_class.get, reverse=word == "is easiest")
    a = order[0]
    if len(order) > 1:
        b = order[1]
        rows = dict(zip(test["per_class_accuracy"], test.get("confusion_matrix") or [], strict=False))
        size = {c: sum(rows[c]) if c in rows else test["n"] / len(per_class) for c in (a, b)}
        if difference_is_noise(per_class[a], size[a], per_class[b], size[b]):
            both = f"`{a}` ({pct(per_class[a])}) and `{b}` ({pct(per_class[b])})"
            return f"{both} are {word.removeprefix('is ')}, within noise of each other"
    return f"`{a}` {word} ({pct(per_class[a])})"


def precision(config: Mapping[str, Any]) -> Note:
    """What precision a run trained in (config.json's ``resolved`` ``amp``), why, and what it changes, so a
    learner whose CPU made ``amp = "auto"`` pick bf16 is told so once, and one in fp32 knows how to see bf16."""
    asked, used = config.get("amp", "auto"), config.get("resolved", {}).get("amp", "off")
    device = config.get("resolved", {}).get("device", "cpu")
    name = precision_name(used)
    why = {
        ("auto", "bf16"): '`amp = "auto"` chose it because this CPU computes bf16 natively (AVX512-BF16 or AMX)',
        ("auto", "off"): (
            '`amp = "auto"` keeps fp32 on a GPU, so results stay comparable across machines'
            if device != "cpu"
            else '`amp = "auto"` keeps fp32 because this CPU has no native bf16 (emulated bf16 would be slower)'
        ),
    }.get((asked, used), f'the parameters cell asked for `amp = "{asked}"`')
    if used == "off":
        change = 'Set `amp = "bf16"` to see what a learner on a bf16 CPU or GPU sees.'
    else:
        change = (
            f"Under autocast, convolutions and matrix products run in {name} (bf16 keeps 8 significant bits, about 2-3 decimal "
            "digits; fp16 11, about 3) while the weights, the optimizer and the loss stay fp32"
            + (", with a gradient scaler against fp16's small range" if used == "fp16" else "")
            + ". Logits tie more often (cifarkit breaks a tie toward the lower class index, the same way for every "
            "metric). How much the accuracy or the speed differ from fp32 on this machine was not measured by this "
            'run: `cifarkit amp-check` times both, and a rerun with `amp = "off"` trains the fp32 twin to compare.'
        )
    first = f"This run trained in **{name}** on {device}: {why}."
    return Note(f"{first} {change}", finding=first)


def winner_test(winner: str, val_accuracy: float, test: Mapping[str, Any]) -> Note:
    """The ablation winner's one test pass: its test top-1 beside the validation top-1 it was chosen on."""
    n, top1 = test["n"], test["accuracy"]
    text = (
        f"The winner, `{winner}`, chosen at {pct(val_accuracy)} validation top-1, scores **{pct(top1)}** test top-1 on "
        f"{n:,} images (± {100 * standard_error(top1, n):.1f} points standard error): the number to report, "
        "measured once."
    )
    return Note(text, finding=f"The winner `{winner}` scores **{pct(top1)}** test top-1 on {n:,} images.")


def tta(table: Any, chosen: str) -> Note:
    """A TTA table (index: mode; ``accuracy``, ``n``, ``ms_per_image``, ``gain_vs_none``) in words for the mode
    chosen on validation."""
    none, pick = table.loc["none"], table.loc[chosen]
    n = int(pick["n"])
    definition = (
        "Test-time augmentation (TTA) averages the model's outputs over transformed copies (views) of each image."
    )
    if chosen == "none":
        return Note(
            f"On validation no TTA mode beat plain inference, so plain inference is used: test top-1 "
            f"**{pct(float(none['accuracy']))}** on {n:,} images. {definition}"
        )
    gain = float(pick["gain_vs_none"])
    noise = same_images_noise(table, chosen, n)
    cost = float(pick["ms_per_image"]) / max(float(none["ms_per_image"]), 1e-9)
    text = [
        f"The TTA mode chosen on validation, `{chosen}`, changes test top-1 by **{points(gain)}** "
        f"({pct(float(none['accuracy']))} to {pct(float(pick['accuracy']))} on {n:,} images, "
        f"{'within noise' if noise else 'beyond noise'}) at **{cost:.1f}x** the inference time per image.",
        definition,
    ]
    if "fixed" in table:
        text[0] = text[0][:-1] + (
            f"; it fixed {int(pick['fixed'])} images plain inference got wrong and broke {int(pick['broken'])} "
            "it got right (the paired test reads only those)."
        )
    worst = table["gain_vs_none"].idxmin()
    loss = float(table.loc[worst, "gain_vs_none"])
    if loss < 0 and not same_images_noise(table, worst, n):
        text.append(f"Not every view helps: `{worst}` costs {points(loss)}, more than noise explains.")
    elif loss < 0:
        text.append(f"The worst mode, `{worst}` ({points(loss)}), is within noise of plain inference.")
    return Note(" ".join(text))


def tta_choice(table: Any, chosen: str) -> Note:
    """Why ``chosen`` is the mode used (:func:`cifarkit.report.analysis.choose_tta_mode` on the validation
    ``table``): the best on validation, or a cheaper mode within noise of it."""
    best = str(table["accuracy"].idxmax())
    n = int(table.loc[best, "n"])
    top = f"`{best}` scored highest on the {n:,} validation images ({pct(float(table.loc[best, 'accuracy']))}, {int(table.loc[best, 'views'])} views)"
    if chosen == best:
        text = f"{top}, beyond noise of every mode with fewer views, so it is the mode used."
    else:
        text = (
            f"{top}, but `{chosen}` ({pct(float(table.loc[chosen, 'accuracy']))}, {int(table.loc[chosen, 'views'])} "
            f"view{'s' if int(table.loc[chosen, 'views']) > 1 else ''}) is within noise of it on the same images "
            "(paired test), so the cheaper one is used: a lead the images cannot tell from luck does not pay for "
            "extra forward passes."
        )
    return Note(text, finding=f"TTA mode chosen on validation: `{chosen}`.")


def same_images_noise(table: Any, mode: str, n: int) -> bool:
    """Whether ``mode``'s row of a TTA table is within noise of ``none``'s: the paired test on the images
    only one of them gets right where the table has those counts, else the independent-samples rule."""
    row = table.loc[mode]
    if "fixed" in table:
        return paired_is_noise(int(row["fixed"]), int(row["broken"]))
    return difference_is_noise(float(table.loc["none", "accuracy"]), n, float(row["accuracy"]), n)


def pace(conditions: Mapping[str, Any]) -> Note:
    """How steady training speed was and whether other processes competed: a run's one timing verdict
    (:func:`cifarkit.tools.perflogs.run_conditions`), which 05 quotes too. A spread beyond 30% between
    epochs, or another load above 25% of the machine's CPU sustained for a second or more, means the run's
    times are not a clean measurement."""
    lo, hi = conditions["slowest_images_per_s"], conditions["fastest_images_per_s"]
    if lo is None:
        return Note("No epoch timing was recorded, so the training pace cannot be judged.")
    spread, load = conditions["pace_spread"], conditions["other_load_percent"]
    text = f"Training ran at {lo:,.0f} to {hi:,.0f} images/s over {conditions['steady_epochs']} epoch(s)"
    if spread > PACE_SPREAD:
        text += (
            f", {spread:.0%} apart: something else probably competed for the machine (or it throttled), so "
            "this run's times are not a clean measurement; rerun on a quiet machine before comparing them."
        )
    elif not conditions["clean"]:
        text += f" (within {spread:.0%} of each other)."
    else:
        text += f" (within {spread:.0%} of each other): a steady pace, so its times can be compared."
    if load is not None and load > OTHER_LOAD_PERCENT:
        share = conditions.get("other_load_share")
        during = f"for {pct(share)} of training" if share is not None else "during training"
        text += (
            f" Other processes used about {load:.0f}% of the machine's CPU {during}, so its times measure the "
            "machine's load too: rerun on a quiet machine before quoting them."
        )
    verdict = "a clean measurement" if conditions["clean"] else "not a clean measurement"
    return Note(text, finding=f"Training ran at {lo:,.0f} to {hi:,.0f} images/s: {verdict} of this machine's speed.")


def competing_load(other_percent: float | None, what: str) -> Note:
    """Whether other processes competed for the machine while ``what`` was timed (``other_percent``: see
    :class:`cifarkit.tools.telemetry.MachineLoad`), in one sentence."""
    if other_percent is None:
        return Note(f"How busy the rest of the machine was during {what} could not be measured here.")
    if other_percent > OTHER_LOAD_PERCENT:
        return Note(
            f"Other processes used about {other_percent:.0f}% of the machine's CPU during {what}, so its times "
            "measure the machine's load too: rerun on a quiet machine before quoting them."
        )
    return Note(
        f"The machine was otherwise quiet during {what} (other processes used about {other_percent:.0f}% of its "
        "CPU), so its times compare like with like."
    )


def channels(stats: Any) -> Note:
    """Which colour channel is brightest and most spread in this sample (a stats table with ``computed_mean``
    and ``computed_std`` indexed R, G, B), and how close the computed values are to the published ones."""
    mean, std = stats["computed_mean"], stats["computed_std"]
    text = [
        f"In these training images the brightest channel on average is **{mean.idxmax()}** "
        f"(mean {mean.max():.3f} on a 0-1 scale) and the darkest **{mean.idxmin()}** ({mean.min():.3f}); "
        f"**{std.idxmax()}** varies most (std {std.max():.3f})."
    ]
    if "published_mean" in stats:
        gap = float((stats["computed_mean"] - stats["published_mean"]).abs().max())
        text.append(
            "The computed means match the published ones to three decimals."
            if gap < 0.0005
            else f"The computed means are within {gap:.3f} of the published ones."
        )
    return Note(" ".join(text))


def model_comparison(table: Any, seeds: Any = None) -> Note:
    """Two rows of :func:`cifarkit.report.comparison.model_table` (a model and a reference) in words: what each costs
    (parameters, mult-adds, seconds per epoch, memory added) and what it gets: validation top-1, judged over seeds
    when ``seeds`` is :func:`cifarkit.report.ablation.table` of both models' runs at each seed on the same
    validation images (the reference as its base), else as one run each; and the test column's own verdict,
    named when the two disagree."""
    a, b = table.iloc[0], table.iloc[1]
    n = int(min(a["val_images"], b["val_images"]))
    text = [
        f"`{a['model']}` at {a['input_px']} px has {a['params'] / b['params']:.1f}x the parameters of "
        f"`{b['model']}` at {b['input_px']} px ({a['params']:,} vs {b['params']:,}) and needs "
        f"{a['mult_adds'] / b['mult_adds']:.1f}x its mult-adds per image ({a['mult_adds'] / 1e6:,.1f}M vs "
        f"{b['mult_adds'] / 1e6:,.1f}M); on this device an epoch took {a['s_per_epoch']:.1f} s vs "
        f"{b['s_per_epoch']:.1f} s ({a['s_per_epoch'] / b['s_per_epoch']:.1f}x)."
    ]
    if seeds is not None:  # mean validation top-1 over seeds, and the seeds rule on the paired counts
        row, ids = seeds.iloc[1], table_seeds(seeds)
        ours, theirs, verdict = float(row["val_accuracy"]), float(seeds.iloc[0]["val_accuracy"]), str(row["verdict"])
        noise = verdict not in (HELPED, HURT)
        said = {HELPED: "ahead at every seed, beyond noise", HURT: "behind at every seed, beyond noise"}
        judged = f"`{a['model']}` {said[verdict]}" if not noise else verdict
        counts = ", ".join(f"{row[f'fixed[seed {i}]']}/{row[f'broken[seed {i}]']}" for i in ids)
        at = f" at {seed_list(ids)}"
        reach, counted = "averages", f"; fixed/broken per seed {counts}, paired test"
    else:
        ours, theirs, at, reach, counted = float(a["val_accuracy"]), float(b["val_accuracy"]), "", "reaches", ""
        noise = difference_is_noise(ours, n, theirs, n)
        judged = one_run_each(noise)
    diff = ours - theirs
    text.append(
        f"Both trained {int(a['epochs'])} epoch{'s' if int(a['epochs']) != 1 else ''} on "
        f"{int(a['train_images']):,} images{at}; on {n:,} validation "
        f"images `{a['model']}` {reach} {pct(ours)} and `{b['model']}` {pct(theirs)} ({points(diff)} for "
        f"`{a['model']}`{counted}: {judged})."
    )
    tested = a.get("test_accuracy") is not None and b.get("test_accuracy") is not None and a.get("test_images")
    if tested:
        m = int(min(a["test_images"], b["test_images"]))
        test_gap = float(a["test_accuracy"]) - float(b["test_accuracy"])
        test_noise = difference_is_noise(float(a["test_accuracy"]), m, float(b["test_accuracy"]), m)
        text.append(
            f"The test column, scored once on {m:,} images{' (the first seed)' if at else ''}, says "
            f"{pct(float(a['test_accuracy']))} vs "
            f"{pct(float(b['test_accuracy']))} ({points(test_gap)}, {one_run_each(test_noise)})"
            + (
                "."
                if test_noise == noise
                else ": validation and test disagree on whether the gap is real, so neither settles it; the larger "
                "split, or more seeds, would."
            )
        )
    compute, seconds = a["mult_adds"] / b["mult_adds"], a["s_per_epoch"] / b["s_per_epoch"]
    if max(compute / seconds, seconds / compute) > 2:
        text.append(
            f"Time does not follow arithmetic here: {compute:.1f}x the mult-adds took {seconds:.1f}x the time per "
            "epoch, so something other than the count of multiply-adds (memory traffic, how well each layer's "
            "kernels use this device) set the pace; this run did not measure which."
        )
    memory = [m for m in (a.get("added_memory_mb"), b.get("added_memory_mb")) if m is not None and m == m]
    mem = (
        f", memory added by training {a['added_memory_mb']:,.0f} MB vs {b['added_memory_mb']:,.0f} MB"
        if len(memory) == 2
        else ""
    )
    if memory and len(memory) == 2:
        text.append(
            f"Training added {a['added_memory_mb']:,.0f} MB (`{a['model']}`) and {b['added_memory_mb']:,.0f} MB "
            f"(`{b['model']}`) of memory at its peak"
            + (
                " (the peak process memory above what the process held when training started: the interpreter, "
                "libraries and data are not counted; memory an earlier training freed can be reused, so the "
                "second run can read low)."
                if a.get("peak_memory_mb") != a.get("added_memory_mb")
                else " (the GPU allocator's own peak)."
            )
        )
    finding = (
        f"`{a['model']}` at {a['input_px']} px: validation top-1 {pct(ours)} vs `{b['model']}`'s {pct(theirs)}{at} "
        f"({points(diff)}, {judged}), at {seconds:.1f}x the time per epoch{mem}."
    )
    if tested:
        finding += f" On test: {points(test_gap)}, {one_run_each(test_noise)}" + (
            "." if test_noise == noise else ", so validation and test disagree."
        )
    return Note(" ".join(text), finding=finding)


def ranking(table: Any) -> Note:
    """A :func:`cifarkit.report.comparison.compare_runs` table in words: the leader, its budget, and whether the
    runner-up is within noise or trained on a different budget."""
    if len(table) == 0:
        return Note("No runs were found under this folder yet.")
    top = table.iloc[0]
    text = [
        f"The highest validation top-1 is **{pct(float(top['val_accuracy']))}**, by `{top['model']}` "
        f"({int(top['train_images']):,} training images × {int(top['epochs'])} epochs, "
        f"{float(top['train_time_s']):.0f} s of training), measured on {int(top['val_images']):,} validation images."
    ]
    sizes = sorted({int(v) for v in table["val_images"].dropna()})
    if len(sizes) > 1:  # each accuracy is only as precise as its validation set is large
        text.append(
            f"The runs were validated on {', '.join(f'{v:,}' for v in sizes)} images (the `val_images` column): "
            "an accuracy on fewer images carries more noise."
        )
    if len(table) > 1:
        nxt = table.iloc[1]
        n = int(min(top["val_images"], nxt["val_images"]))
        same_budget = (top["train_images"], top["epochs"]) == (nxt["train_images"], nxt["epochs"])
        noise = difference_is_noise(float(top["val_accuracy"]), n, float(nxt["val_accuracy"]), n)
        gap = f"`{nxt['model']}`, {points(float(nxt['val_accuracy']) - float(top['val_accuracy']))}"
        text.append(
            f"The runner-up, {gap} ({one_run_each(noise)}), trained on a different budget "
            f"({int(nxt['train_images']):,} images × {int(nxt['epochs'])} epochs), so the ranking mixes what a model "
            "can do with how long it was trained: compare runs of equal budget for a verdict on the model."
            if not same_budget
            else f"The runner-up, {gap} ({one_run_each(noise)}), trained on the same budget."
        )
    return Note(" ".join(text))


def throughput(table: Any) -> Note:
    """A :func:`cifarkit.report.comparison.throughput_table` in words: the device and telemetry, the fastest and
    slowest run, the range of data-wait shares and what limited training overall."""
    if len(table) == 0:
        return Note("No training run with step timing was found in this report, so there is nothing to compare.")
    tied = fastest_runs(table)  # the fastest run, and the runner-up where one run of each cannot rank them
    fast, slow = tied.iloc[0], table.loc[table["images_per_s"].idxmin()]
    devices = sorted(
        {f"{d}" + (f" ({n})" if n else "") for d, n in zip(table["device"], table["device_name"], strict=True)}
    )
    backends = sorted(set("+".join(table["backends"]).split("+")) - {"none"})
    text = [
        f"{len(table)} training run(s) on {', '.join(devices)}; telemetry from "
        f"{', '.join(backends) if backends else 'no backend'}."
    ]
    if len(tied) == 2:
        second = tied.iloc[1]
        text.append(
            f"`{run_name(fast)}` and `{run_name(second)}` were fastest at {fast['images_per_s']:,.0f} and "
            f"{second['images_per_s']:,.0f} images/s, within each other's epoch-to-epoch range: one run of each "
            "cannot rank them"
            + (
                f". The slowest was `{run_name(slow)}` at {slow['images_per_s']:,.0f} images/s."
                if len(table) > 2
                else "."
            )
        )
    elif len(table) > 1:
        text.append(
            f"The fastest was `{run_name(fast)}` at {fast['images_per_s']:,.0f} images/s, the slowest "
            f"`{run_name(slow)}` at {slow['images_per_s']:,.0f} images/s "
            f"({fast['images_per_s'] / slow['images_per_s']:.1f}x apart)."
        )
    else:
        text.append(f"It trained `{run_name(fast)}` at {fast['images_per_s']:,.0f} images/s.")
    load = table["other_load_percent"].dropna()
    shared = [run_name(table.loc[i]) for i in load[load > OTHER_LOAD_PERCENT].index]
    unclean = [run_name(r) for _, r in table.iterrows() if not r.get("clean", True)]
    wait = table["data_wait_fraction"].dropna()
    if len(wait):
        worst = table.loc[wait.idxmax()]
        text.append(
            f"Data-wait shares ranged from {pct(wait.min())} to {pct(wait.max())} (`{run_name(worst)}`): "
            + (
                "the input pipeline held training back there, so a faster loader would pay off."
                if wait.max() > INPUT_BOUND_SHARE
                else "the input pipeline kept up everywhere, so each model's own work set its pace; whether that "
                "was its arithmetic, memory traffic or kernel efficiency is not measured here."
            )
        )
    if shared:
        text.append(
            f"Other processes used about {load.max():.0f}% of the machine's CPU while "
            + ", ".join(f"`{m}`" for m in shared)
            + " trained, so those images/s measure the machine's load as much as the model; rerun on a quiet "
            "machine before comparing speeds."
        )
    if unclean:
        verdict = (
            f"{len(unclean)} of {len(table)} run(s) were not clean measurements (another load, or epochs more than "
            f"30% apart in speed: {', '.join(f'`{m}`' for m in unclean)}), the same verdict 01 gives its run; "
            "compare their speeds only after a rerun on a quiet machine."
        )
    else:
        verdict = f"All {len(table)} run(s) were clean measurements: steady epochs on an otherwise quiet machine."
    text.append(verdict)
    busy = table["gpu_busy_median"].dropna()
    if len(busy):
        text.append(f"Median GPU busy ranged from {busy.min():.0f}% to {busy.max():.0f}%.")
    return Note(" ".join(text), finding=f"{text[1]} {verdict}")


def duplicates(exact: Mapping[str, Any], near: Sequence[tuple[int, int, float]], test_images: int, shown: int) -> Note:
    """What the duplicate checks found (a :func:`cifarkit.report.duplicates.duplicate_report` and the pairs of
    :func:`cifarkit.report.duplicates.near_duplicates`) and how much of the grid below shows."""
    copies = exact["pairs"].get("train/test", 0)
    test_with_near = len({j for _, j, _ in near})
    text = [
        f"**{copies:,}** test image(s) have an exact copy in train, and **{len(near):,}** train/test pairs are "
        f"near-duplicates, touching {test_with_near:,} of {test_images:,} test images "
        f"({pct(test_with_near / max(test_images, 1))})."
    ]
    if near:
        text.append(
            f"The grid shows {'all ' if shown >= len(near) else f'the {min(shown, len(near))} closest of '}"
            f"{len(near)} pairs, closest first (RMS difference from {near[0][2]:g} to {near[min(shown, len(near)) - 1][2]:g} of 255)."
        )
    return Note(" ".join(text))


def times(ratio: float, same: bool, more: str, less: str) -> str:
    """A ratio in words: ``2.0x faster``, ``3.1x slower``, or ``about the same`` where ``same`` says the
    measurement cannot rank the two."""
    if same:
        return "about the same"
    return f"{ratio:.1f}x {more}" if ratio > 1 else f"{1 / ratio:.1f}x {less}"


def deployment(rows: Any) -> Note:
    """A ``deploy_bench`` table (DataFrame) in words: on the CPU, what each variant gains in latency (batch 1),
    throughput (a large batch) and size against the checkpoint (the ``reference`` row, named by its precision),
    and what it costs in test top-1. Every variant is scored on the same test images, so where the rows hold
    ``fixed`` and ``broken`` (images only the variant / only the checkpoint gets right) the difference is
    judged by the paired test, else by the one for independent samples of ``test_images``. A variant that
    computes in another precision than the checkpoint is said to be compared across precisions."""
    cpu = rows[rows["device"] == "cpu"]
    if cpu.empty:
        return Note("No row on the CPU to compare the variants with.")
    first = cpu.index[cpu["reference"]][0] if "reference" in cpu else cpu.index[0]
    base, others = cpu.loc[first], cpu.drop(index=first).set_index("variant")
    name, n = str(base["variant"]), int(base["test_images"])
    own = base.get("precision", name)
    batch = f" at batch {int(base['throughput_batch'])}" if "throughput_batch" in base else " at a large batch"
    text = [
        f"On the CPU ({int(base['threads'])} threads) the checkpoint, computing in **{own}**, answers one image in "
        f"**{base['latency_ms_p50']:.2f} ms** (median; 95th percentile {base['latency_ms_p95']:.2f} ms), scores "
        f"{base['throughput_img_s']:,.0f} images/s{batch} and takes {base['size_mb']:.2f} MB on disk; its test "
        f"top-1 is {pct(float(base['accuracy']))} on {n:,} images."
    ]
    quick, busy = "latency_ms_p50", "throughput_img_s"

    def untold(r: Any, key: str) -> bool:  # neither beats the other beyond both measured spreads
        return not faster(r, base, key) and not faster(base, r, key)

    for variant, r in others.iterrows():
        size = base["size_mb"] / r["size_mb"]
        if "fixed" in r and r["fixed"] == r["fixed"]:  # NaN where a row has no per-image results
            noise = paired_is_noise(int(r["fixed"]), int(r["broken"]))
        else:
            noise = difference_is_noise(float(r["accuracy"]), n, float(base["accuracy"]), n)
        across = r.get("precision", own) not in (own, "int8")
        text.append(
            f"`{variant}`: {times(base[quick] / r[quick], untold(r, quick), 'faster', 'slower')} at batch 1, "
            f"{times(r[busy] / base[busy], untold(r, busy), 'more', 'fewer')} images/s{batch}, "
            f"{times(size, round(size, 1) == 1, 'smaller', 'larger')} on disk, "
            f"{points(float(r['accuracy']) - float(base['accuracy']))} of test top-1{' (within noise)' if noise else ''}"
            + (
                f" (it computes in {r['precision']}, the checkpoint in {own}: a comparison across precisions)"
                if across
                else ""
            )
            + "."
        )
    records = cpu.to_dict("records")
    fastest, busiest = (
        leaders(records, "latency_ms_p50", lowest=True),
        leaders(records, "throughput_img_s", lowest=False),
    )

    def leading(picks: list[dict], value: str) -> str:  # "is `a` (value)", or two about the same
        named = " and ".join(
            f"`{r['variant']}` ({value.format(**r)}, test top-1 {pct(float(r['accuracy']))})" for r in picks
        )
        return f"are {named}, about the same" if len(picks) == 2 else f"is {named}"

    finding = (
        f"On the CPU the fastest at batch 1 {leading(fastest, '{latency_ms_p50:.2f} ms')} and the highest "
        f"throughput{batch} {leading(busiest, '{throughput_img_s:,.0f} images/s')}; the {own} checkpoint: "
        f"{base['latency_ms_p50']:.2f} ms, {base['throughput_img_s']:,.0f} images/s, {pct(float(base['accuracy']))}."
    )
    return Note(" ".join(text), finding=finding)


def lr_finder(sweep: Any, recipe_lr: float, tried: Any) -> Note:
    """A learning-rate range test (:class:`cifarkit.tools.lrfinder.LrSweep`) in words: what it suggests against
    the recipe's rate, and whether training with the suggestion did better on validation. ``tried`` is
    :func:`cifarkit.report.ablation.table` of the recipe's runs (its base, first) and the suggestion's at the
    same seeds, so the verdict follows the ablation's rule: helped or hurt only when every seed agrees."""
    recipe, suggested = tried.iloc[0], tried.iloc[1]
    seeds = table_seeds(tried)
    counts = ", ".join(f"{suggested[f'fixed[seed {s}]']}/{suggested[f'broken[seed {s}]']}" for s in seeds)
    ratio = sweep.suggestion / recipe_lr
    compared = f"{ratio:.1f}x" if ratio >= 1 else f"1/{1 / ratio:.1f}"
    end = "the loss exploded and the sweep stopped" if sweep.stopped == "diverged" else "its last rate"
    gain = float(suggested["val_accuracy"]) - float(recipe["val_accuracy"])
    verdict = str(suggested["verdict"])
    said = f"the suggestion {verdict} at every seed, beyond noise" if verdict in (HELPED, HURT) else verdict
    text = (
        f"The range test trained {len(sweep.lrs)} steps ({sweep.optimizer}, batch {sweep.batch_size}) from "
        f"{sweep.lrs[0]:.0e} to {sweep.lrs[-1]:.2g} ({end}); the smoothed loss was lowest at {sweep.lowest:.2g}, and a tenth "
        f"of that, **{sweep.suggestion:.2g}**, is its suggestion: {compared} the recipe's {recipe_lr:g}. Trained "
        f"with it at {seed_list(seeds)} (each with the schedule, epochs and "
        f"images of the recipe's run at that seed), validation top-1 averages {pct(float(suggested['val_accuracy']))} "
        f"against the recipe's {pct(float(recipe['val_accuracy']))} ({points(gain)}; fixed/broken per seed {counts}, "
        f"of {int(suggested['val_images']):,} images): **{said}**. The rule of a tenth is a rule of thumb: the best "
        "rate for a whole schedule is found by training, and the finder narrows where to look."
    )
    finding = (
        f"LR finder: suggests {sweep.suggestion:.2g} against the recipe's {recipe_lr:g}; trained with it at "
        f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}, validation {pct(float(suggested['val_accuracy']))} vs "
        f"{pct(float(recipe['val_accuracy']))} on average; {said}."
    )
    return Note(text, finding=finding)


def transfer(
    table: Any, paired: Mapping[str, Any], scratch: str, imagenet: Mapping[str, Any] | None, pretrain_seconds: float
) -> Note:
    """The label-efficiency curve (:func:`cifarkit.report.stats.curve_table`) in words, from ``paired``: each method's
    :func:`~cifarkit.report.stats.paired_curve` against ``scratch`` (per seed, on the same test images). Whether the
    head start shrinks as labels grow is said only where the gains differ beyond noise; the ImageNet row names
    everything it differs in besides its pretraining data (``imagenet``: ``name``, ``params``, ``size``,
    ``ex1_params``)."""
    rows = {(r["method"], r["labels_per_class"]): r for r in table.to_dict("records")}
    budgets = sorted({n for _, n in rows})
    seeds = int(max(r["seeds"] for r in rows.values()))
    parts = []
    for method, curve in paired.items():
        said = "; ".join(
            f"at **{n:,}** labels per class {points(float(c['mean_gain']))} (seeds {c['gain_per_seed']}; "
            f"fixed/broken {c['fixed_broken_per_seed']}): {c['verdict']}"
            for n, c in curve.iterrows()
        )
        parts.append(f"`{method}` against `{scratch}`, {said}.")
    text = [
        f"Each method is compared with `{scratch}` seed by seed ({seeds} seed{'s' if seeds > 1 else ''}; each seed's "
        "labels are shared by both) on the same test images, with the paired test; a gain is called only when every "
        "seed shows it beyond noise. " + " ".join(parts)
    ]
    for method, curve in paired.items():
        if len(curve) < 2:
            continue
        few, many = curve.index[0], curve.index[-1]
        a, b = rows[(method, few)], rows[(method, many)]
        sa, sb = rows[(scratch, few)], rows[(scratch, many)]
        gain_few, gain_many = a["test_accuracy"] - sa["test_accuracy"], b["test_accuracy"] - sb["test_accuracy"]
        se = math.sqrt(a["se"] ** 2 + sa["se"] ** 2 + b["se"] ** 2 + sb["se"] ** 2)
        if gap_is_noise(gain_many - gain_few, se):
            text.append(
                f"Whether `{method}`'s head start shrinks as labels grow, this run cannot tell: "
                f"{points(gain_few)} at {few:,} and {points(gain_many)} at {many:,} differ by less than noise "
                f"(± {100 * se:.1f} points)."
            )
        else:
            text.append(
                f"`{method}`'s head start {'shrinks' if gain_many < gain_few else 'grows'} as labels grow, beyond "
                f"noise: {points(gain_few)} at {few:,}, {points(gain_many)} at {many:,}."
            )
    if imagenet:
        seen = (
            f"it sees the images upsampled to {imagenet['size']} px instead of 32, "
            if imagenet["size"] != 32
            else "it sees the same 32 px images, "
        )
        text.append(
            f"The `{imagenet['name']}` row differs from the EX-1 rows in more than its pretraining data (ImageNet's "
            f"photographs): it is another network (its backbone alone holds {imagenet['params'] / 1e6:.2f}M "
            f"parameters against EX-1's {imagenet['ex1_params'] / 1e3:.0f}k), {seen}and its backbone stays frozen "
            "under a linear head. Its lead cannot be credited to any one of these."
        )
    text.append(
        f"Pretraining was paid once, before any label: {duration_text(pretrain_seconds)}, against "
        f"{duration_text(rows[(scratch, budgets[0])]['seconds'])} for one run from scratch at {budgets[0]:,} labels."
    )
    verdicts = "; ".join(
        f"`{m}` vs scratch at {n:,}: {c['verdict']}" for m, curve in paired.items() for n, c in curve.iterrows()
    )
    scores = "; ".join(
        f"at {n:,} labels " + ", ".join(f"{m} {pct(r['test_accuracy'])}" for (m, k), r in rows.items() if k == n)
        for n in budgets
    )
    return Note(
        " ".join(text),
        finding=f"Transfer, mean test top-1 over {seeds} seeds: {scores}. Paired against scratch: {verdicts}.",
    )


def transfer_choices(
    tried: Sequence[Mapping[str, Any]], winners: Mapping[str, Mapping[str, Any]], lrs: Sequence[float]
) -> Note:
    """What the choice on validation can and cannot say: a learning rate chosen at the edge of its grid (a rate
    beyond it was never tried), and runs that peaked at their last check (still improving when they stopped)."""
    notes = []
    for method, row in winners.items():
        if len(lrs) > 1 and row["lr"] in (min(lrs), max(lrs)):
            side = "lowest" if row["lr"] == min(lrs) else "highest"
            notes.append(
                f"`{method}` chose lr {row['lr']:g}, the {side} of the {len(lrs)} rates tried "
                f"({', '.join(f'{x:g}' for x in sorted(lrs))}): a rate beyond the grid might do better, and this run "
                "did not try one"
            )
    last = [r for r in tried if r.get("best_step") == r.get("steps")]
    if last:
        notes.append(
            f"{len(last)} of the {len(tried)} choosing runs were best at their last check, so they were still "
            "improving when they stopped: more steps might change the ranking"
        )
    if not notes:
        return Note("Every choice was made inside its grid, and no choosing run peaked at its last check.")
    text = "Read the choices with care: " + "; ".join(notes) + "."
    return Note(text, finding=text)
