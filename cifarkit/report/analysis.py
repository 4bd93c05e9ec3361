"""Analysing one run: its test predictions, confused examples, overfitting point, validation split, TTA table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cifarkit.config import check_value, positive_int
from cifarkit.data import Dataset, Split
from cifarkit.evaluate import evaluate, fixed_broken, predicted_labels
from cifarkit.predict import Predictor
from cifarkit.report.stats import paired_is_noise
from cifarkit.runs import read_run


def scored(run: str | Path, ds: Dataset, device: str, split: str = "test") -> tuple[Predictor, Split]:
    """A run's best.pt and the images it is scored on: ``ds``'s ``test`` split, or with ``split="val"`` the
    validation images the run held out (:func:`validation_split`), labelled in the checkpoint's class order."""
    p = Predictor.from_checkpoint(Path(run) / "best.pt", device)
    ds = p.check_dataset(ds)
    return p, validation_split(run, ds) if split == "val" else ds.split(split)


@torch.no_grad()
def run_logits(
    run: str | Path, ds: Dataset, device: str = "auto", split: str = "test"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, logits) of a run's best.pt on its :func:`scored` images, as float32 tensors on the CPU."""
    p, images = scored(run, ds, device, split)
    logits, labels = p.logits(images)
    return labels, logits


def test_probabilities(run_dir: str | Path, ds: Dataset, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(labels, softmax probabilities) of a run's best.pt on ``ds``'s test split."""
    labels, logits = run_logits(run_dir, ds, device)
    return labels.numpy(), logits.softmax(1).numpy()


def confused_examples(
    labels: np.ndarray, preds: np.ndarray, true: int, predicted: int, n: int = 8, seed: int = 0
) -> np.ndarray:
    """Indices of up to ``n`` test images of class ``true`` predicted as ``predicted``, a seeded random
    choice (not the first ``n`` in file order)."""
    found = np.flatnonzero((labels == true) & (preds == predicted))
    return np.sort(np.random.default_rng(seed).permutation(found)[:n])


def overfitting_point(train: dict) -> dict[str, Any]:
    """When validation loss bottomed out versus when validation accuracy peaked."""
    val_loss = train["val_losses"]
    return {
        "min_val_loss_epoch": train.get("min_val_loss_epoch"),  # train.json already holds it
        "best_val_accuracy_epoch": train.get("best_epoch"),
        "epochs_run": len(val_loss),
        "final_train_minus_val_accuracy": (train["train_accuracies"][-1] - train["val_accuracies"][-1])
        if val_loss
        else None,
    }


def confused_grid(ds: Dataset, labels: np.ndarray, probs: np.ndarray, pairs: Sequence[dict], n: int = 6):
    """Example test images for each most-confused pair, a row per pair padded to ``n`` (blank cells), the
    first titled ``true → predicted`` and each with the probability the model gave the wrong class."""
    check_value("confused_grid(n)", n, positive_int)
    index = {c: i for i, c in enumerate(ds.classes)}
    preds = predicted_labels(torch.as_tensor(probs)).numpy()
    blank = np.full((3, *ds.test.images.shape[2:]), 255, np.uint8)
    images, titles = [], []
    for pair in pairs:
        wrong = index[pair["predicted"]]
        idx = confused_examples(labels, preds, index[pair["true"]], wrong, n)
        images += [ds.test.images[i].numpy() for i in idx] + [blank] * (n - len(idx))
        titles += [f"p({pair['predicted']}) {probs[i, wrong]:.2f}" for i in idx] + [""] * (n - len(idx))
        if len(idx):
            titles[-n] = f"{pair['true']} → {pair['predicted']}\n{titles[-n]}"
    return (np.stack(images) if images else np.zeros((0, 3, 32, 32), np.uint8)), titles


def validation_split(run: str | Path, ds: Dataset) -> Split:
    """The validation images a run held out of ``ds``'s train split (same fraction and seed as in training)."""
    cfg = read_run(run).config
    return ds.split("train").hold_out(cfg["val_fraction"], cfg["seed"])[1]


def validation_correct(run: str | Path, ds: Dataset, device: str = "auto") -> torch.Tensor:
    """Each image of a run's validation split (:func:`validation_split`) right or wrong under its best.pt, in
    a fixed order: runs held out alike can then be compared image by image (a paired test)."""
    p, images = scored(run, ds, device, "val")
    return p.evaluate(images, report=False, per_image=True)["correct"]


def validation_accuracy_with(run: str | Path, ds: Dataset, forward: Callable, device: str = "auto") -> float:
    """Top-1 of a run's best.pt on its validation split with ``forward(model, images)`` as the forward pass (a
    learner's TTA function, say), through the one evaluation path and in the run's precision."""
    p, images = scored(run, ds, device, "val")
    return evaluate(p.model, p.loader(images), p.device, amp=p.amp, forward=lambda x: forward(p.model, x))["accuracy"]


def tta_table(run: str | Path, ds: Dataset, device: str = "auto", split: str = "test", average: str = "logits"):
    """Every TTA mode of a run's best.pt on ``ds``'s ``test`` split (or the run's ``val`` split), its views
    combined by ``average`` (``logits`` or ``probs``), as a DataFrame. Each mode's per-image right/wrong is kept
    in ``table.attrs["correct"]`` (by mode) for :func:`choose_tta_mode`'s paired tests."""
    p, images = scored(run, ds, device, split)
    rows = p.compare_tta(images, average, per_image=True)
    table = pd.DataFrame([{k: v for k, v in row.items() if k != "correct"} for row in rows]).set_index("mode")
    table.attrs["correct"] = {row["mode"]: row["correct"] for row in rows}
    return table


def evaluation_text(result: dict[str, Any]) -> str:
    """``evaluate``'s lines for a person: top-1, top-5, loss and speed of the split (``result`` is
    :meth:`Predictor.evaluate`'s with ``split`` and ``tta`` added), the macro scores, the five most confused pairs."""
    ms = result["testing time"] * 1000 / result["n"]
    auc = "n/a" if result["auc_score"] is None else f"{result['auc_score']:.4f}"
    lines = [
        f"{result['split']}: accuracy {result['accuracy']:.4f} top5_accuracy {result['top5_accuracy']:.4f} "
        f"losses {result['losses']:.4f} n {result['n']} tta {result['tta']} ({ms:.3f} ms/image)",
        f"macro precision {result['precision_score']:.4f} recall {result['recall_score']:.4f} "
        f"f1 {result['f1_score']:.4f} auc {auc}",
    ]
    return "\n".join(lines + [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in result["most_confused"][:5]])


def tta_text(rows: Sequence[dict[str, Any]]) -> str:
    """``evaluate --tta all``'s table for a person: each mode's views, scores, cost and gain over plain inference."""
    head = f"{'mode':<10} {'views':>5} {'accuracy':>8} {'top5_accuracy':>13} {'losses':>7} {'ms_per_image':>12} {'gain_vs_none':>12}"
    return "\n".join(
        [head]
        + [
            f"{r['mode']:<10} {r['views']:>5} {r['accuracy']:>8.4f} {r['top5_accuracy']:>13.4f} {r['losses']:>7.4f} "
            f"{r['ms_per_image']:>12.3f} {r['gain_vs_none']:>+12.4f}"
            for r in rows
        ]
    )


def choose_tta_mode(table) -> str:
    """The TTA mode to use, from a validation :func:`tta_table`: the one with the fewest views whose top-1 is
    within noise of the best mode's (the paired test on the same images). A lead that the images cannot tell
    from luck does not pay for extra forward passes, so the cheaper mode wins a tie, plain inference first."""
    correct = table.attrs["correct"]
    best = table["accuracy"].idxmax()
    for mode in table.sort_values("views", kind="stable").index:
        if mode == best or paired_is_noise(*fixed_broken(correct[best], correct[mode])):
            return str(mode)
    return str(best)


def tta_demos(predictor: Predictor, split: Split, mode: str, n: int = 4, seed: int = 0, pool: int = 1000) -> Split:
    """``n`` images for notebook 04's side-by-side demo: up to ``n - 1`` where ``mode`` changes the top-1
    answer of plain inference (the interesting cases: one that ``mode`` fixes first and one it breaks next, when
    the sample has them), and at least one where it does not, drawn from a seeded, class-balanced sample of
    ``pool`` images. Prints how often the answer changed, and how often the change fixed or broke it."""
    check_value("tta_demos(n)", n, positive_int)
    check_value("pool", pool, positive_int)
    sample = split.pick(pool, seed)
    images = sample.images.numpy()
    plain = predicted_labels(predictor.probabilities(images, "none"))
    viewed = predicted_labels(predictor.probabilities(images, mode))
    differs = plain != viewed
    fixes = differs & (viewed == sample.labels)
    # a fixed image first (what TTA is for), a broken one next (what it costs), then the other changes, then
    # agreeing ones: a demo of fixes alone would teach that TTA never hurts
    breaks = differs & (plain == sample.labels)
    fixed_at, broken_at = fixes.nonzero().flatten(), breaks.nonzero().flatten()
    other_at = (differs & ~fixes & ~breaks).nonzero().flatten()
    changed = torch.cat([fixed_at[:1], broken_at[:1], fixed_at[1:], broken_at[1:], other_at])
    same = (~differs).nonzero().flatten()
    shown = min(len(changed), n - 1)
    chosen = torch.cat([changed[:shown], same[: n - shown]])
    print(
        f"`{mode}` changes the top-1 answer of {len(changed)} of {len(sample)} sampled images ({int(fixes.sum())} "
        f"of them from wrong to right, {int(breaks.sum())} from right to wrong); the demo shows {shown} of those and "
        f"{len(chosen) - shown} where it does not"
    )
    return sample.subset(chosen)
