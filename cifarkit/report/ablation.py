"""Notebook 03's ablation as a teacher designs one: every arm differs from one base in one thing, every arm
is trained at the same seeds, each arm is compared with the base of its own seed on the same validation
images (the paired test), and a change is called helpful or harmful only when every seed agrees beyond noise.
The base's own curve says whether regularising could pay at this length at all."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from cifarkit.errors import ConfigError
from cifarkit.evaluate import fixed_broken
from cifarkit.report.commentary import Note, pct, points, seed_list
from cifarkit.report.stats import HELPED, HURT, paired_is_noise, seeds_verdict, table_seeds
from cifarkit.runs import read_json

BASE = "base"
# each arm is the base plus one change; the base is tinyvgg without augmentation, BatchNorm or any regulariser
ARMS: tuple[tuple[str, dict[str, Any]], ...] = (
    (BASE, {"augment": "none", "model_kwargs": {}}),
    ("+crop+flip", {"augment": "crop+flip", "model_kwargs": {}}),
    ("+BatchNorm", {"augment": "none", "model_kwargs": {"batchnorm": True}}),
    ("+dropout", {"augment": "none", "model_kwargs": {"dropout": 0.3}}),
    ("+cutout", {"augment": "cutout", "model_kwargs": {}}),
    ("+label smoothing", {"augment": "none", "model_kwargs": {}, "label_smoothing": 0.1}),
)


def arms(hidden_units: int) -> dict[str, dict[str, Any]]:
    """Each arm's TrainConfig overrides for tinyvgg with ``hidden_units``, the base first."""
    return {name: {**kw, "model_kwargs": {"hidden_units": hidden_units, **kw["model_kwargs"]}} for name, kw in ARMS}


def table(
    runs: Mapping[str, Mapping[int, Path]], correct: Mapping[str, Mapping[int, torch.Tensor]], base: str = BASE
) -> pd.DataFrame:
    """One row per arm: validation top-1 per seed and its mean, and against the ``base`` arm of the same seed on
    the same images the gain, the images fixed and broken (only the arm, only the base gets right) and the
    verdict. 03's learning-rate finder reuses it with the recipe's runs as the base, and 02 with its reference
    model's."""
    if base not in runs:
        raise ConfigError(f"base {base!r} is not one of {', '.join(runs)}")
    seeds = list(runs[base])
    rows = []
    for arm, by_seed in runs.items():
        row: dict[str, Any] = {"arm": arm}
        comparisons = []
        for s in seeds:
            acc = float(read_json(by_seed[s] / "train.json")["best_val_accuracy"])
            against = float(read_json(runs[base][s] / "train.json")["best_val_accuracy"])
            fixed, broken = fixed_broken(correct[base][s], correct[arm][s])
            row |= {f"val_accuracy[seed {s}]": acc, f"fixed[seed {s}]": fixed, f"broken[seed {s}]": broken}
            comparisons.append((acc - against, fixed, broken))
        row["val_accuracy"] = sum(row[f"val_accuracy[seed {s}]"] for s in seeds) / len(seeds)
        row["val_images"] = len(correct[arm][seeds[0]])
        row["verdict"] = "(the base)" if arm == base else seeds_verdict(comparisons)
        rows.append(row)
    return pd.DataFrame(rows).set_index("arm")


def winner(ablation: pd.DataFrame) -> str:
    """The arm with the highest mean validation top-1 over seeds (the first of equals)."""
    return str(ablation["val_accuracy"].idxmax())


def describe(ablation: pd.DataFrame, correct: Mapping[str, Mapping[int, torch.Tensor]]) -> Note:
    """The ablation :func:`table` in words: which arms helped or hurt at every seed, which the run cannot tell,
    with each verdict's counts, and whether the best arm is ahead of the next beyond noise at every seed."""
    seeds = table_seeds(ablation)
    n = int(ablation["val_images"].iloc[0])

    def counts(arm: str) -> str:
        return ", ".join(
            f"{ablation.loc[arm, f'fixed[seed {s}]']} fixed / {ablation.loc[arm, f'broken[seed {s}]']} broken"
            for s in seeds
        )

    base = float(ablation.loc[BASE, "val_accuracy"])
    text = [
        f"Every arm is the base plus one change, trained at {seed_list(seeds)}, and compared with the base of its own seed on the same {n:,} validation "
        "images: the paired test reads only the images one of the two gets right (fixed: only the arm, broken: only "
        f"the base). A change is called helpful or harmful only when every seed says so beyond noise. The base "
        f"averages {pct(base)}."
    ]
    called, untold = [], []
    for arm in ablation.index.drop(BASE):
        gain = float(ablation.loc[arm, "val_accuracy"]) - base
        line, v = f"`{arm}` {points(gain)} ({counts(arm)})", str(ablation.loc[arm, "verdict"])
        (called if v in (HELPED, HURT) else untold).append((arm, line, v))
    for word in (HELPED, HURT):
        found = [line for _, line, v in called if v == word]
        if found:
            text.append(f"At every seed, beyond noise, at this budget, {word}: " + "; ".join(found) + ".")
    if untold:
        text.append(
            "This run cannot tell for " + "; ".join(f"{line}: {v}" for _, line, v in untold) + "."
            if len(seeds) > 1
            else "With one seed the run cannot call any change: " + "; ".join(line for _, line, _ in untold) + "."
        )
    best = winner(ablation)
    ranked = ablation["val_accuracy"].sort_values(ascending=False, kind="stable")
    runner = str(ranked.index[1]) if len(ranked) > 1 else None
    if runner is None:
        lead = ""
    elif all(
        float(ablation.loc[best, f"val_accuracy[seed {s}]"]) > float(ablation.loc[runner, f"val_accuracy[seed {s}]"])
        and not paired_is_noise(*fixed_broken(correct[runner][s], correct[best][s]))
        for s in seeds
    ):
        lead = f", ahead of the next, `{runner}`, beyond noise at every seed"
    else:
        lead = f"; the next, `{runner}` ({pct(float(ranked.iloc[1]))}), is not behind it beyond noise at every seed"
    text.append(f"The highest mean is **`{best}`** at {pct(float(ranked.iloc[0]))}{lead}.")
    verdicts = [f"`{arm}` {v} at this budget" for arm, _, v in called]
    cannot = [f"`{arm}` ({v})" for arm, _, v in untold] if len(seeds) > 1 else []
    finding = (
        f"Ablation over {len(seeds)} seed{'s' if len(seeds) > 1 else ''}: "
        + ("; ".join(verdicts) if verdicts else "no change helped or hurt at every seed beyond noise")
        + (f"; the run cannot tell for {', '.join(cannot)}" if cannot else "")
        + f"; best mean `{best}` at {pct(float(ranked.iloc[0]))}."
    )
    return Note(" ".join(text), finding=finding)


def underfitting(run: Path) -> Note:
    """Whether the base was still underfitting when its training ended, from its own curves: validation loss
    still falling at the last epoch and a small gap between training and validation accuracy mean the network
    had not begun to memorise, so a regulariser (augmentation among them) has nothing to correct yet."""
    history = read_json(Path(run) / "train.json")
    val, train_acc, val_acc = history["val_losses"], history["train_accuracies"], history["val_accuracies"]
    lowest = min(range(len(val)), key=val.__getitem__)
    accuracies = f"training accuracy {pct(train_acc[-1])} against validation {pct(val_acc[-1])}"
    curve = " → ".join(f"{v:.2f}" for v in val)
    if len(val) < 2:
        text = (
            f"The base trained for one epoch (validation loss {curve}): one point is no curve, so this run cannot "
            "tell whether it was still underfitting; with more epochs this note reads its validation loss."
        )
        return Note(text, finding="The base trained one epoch: too short to tell underfitting from overfitting.")
    if lowest == len(val) - 1:
        text = (
            f"The base was **still underfitting** when training stopped: its validation loss fell at its last epoch "
            f"({curve}), with {accuracies}. Augmentation and the "
            "other regularisers fight overfitting, which had not begun at this length, so they cannot pay yet: a "
            "course would first let the model overfit (more epochs, a larger network), then regularise. An arm that "
            "helps here helps by training faster or more steadily (BatchNorm does), not by regularising."
        )
        finding = "The base was still underfitting (validation loss still falling), so regularisers cannot pay yet."
    else:
        text = (
            f"The base **began to overfit**: its validation loss was lowest at epoch {lowest + 1} of {len(val)} "
            f"({curve}), with {accuracies} at the end. This is where "
            "regularisers have something to correct."
        )
        finding = f"The base began to overfit after epoch {lowest + 1}: regularisers have something to correct."
    return Note(text, finding=finding)


def histories(runs: Mapping[str, Mapping[int, Path]], seed: int, losses: bool = False) -> dict[str, dict]:
    """Each arm's train.json at ``seed``, labelled for a plot. With ``losses`` the label-smoothing arm is marked:
    its training loss is the smoothed one, higher by construction, not comparable with the others'."""
    smoothed = {name for name, kw in ARMS if kw.get("label_smoothing")}
    return {
        f"{arm} (smoothed loss)" if losses and arm in smoothed else arm: read_json(by_seed[seed] / "train.json")
        for arm, by_seed in runs.items()
    }
