"""Notebook 03's ablation (cifarkit.report.ablation) and 04's choice of TTA mode: designs, verdicts and words
that a run with few seeds and few images cannot overstate."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from cifarkit.config import TrainConfig, parse_augment
from cifarkit.errors import ConfigError
from cifarkit.report import ablation, analysis, commentary
from cifarkit.report.stats import seeds_verdict


def settings(kw: dict) -> dict:
    """What an arm trains with, every default filled in: augmentations, network options, label smoothing."""
    cfg = TrainConfig(model="tinyvgg", **kw)
    return {"augment": set(parse_augment(cfg.augment)), **cfg.model_kwargs, "label_smoothing": cfg.label_smoothing}


def test_every_arm_differs_from_the_base_in_exactly_one_thing():
    arms = ablation.arms(hidden_units=16)
    assert list(arms)[0] == ablation.BASE and len(arms) == 6
    base = settings(arms[ablation.BASE])
    assert base["augment"] == set() and not base.get("batchnorm") and not base["label_smoothing"]
    for name, kw in list(arms.items())[1:]:
        mine = settings(kw)
        changed = {k for k in base.keys() | mine.keys() if base.get(k) != mine.get(k)}
        if changed == {"augment"}:  # crop+flip counts as one augmentation: the standard pair
            assert mine["augment"] in ({"crop", "flip"}, {"cutout"}), name
        else:
            assert len(changed) == 1, (name, changed)
        assert kw["model_kwargs"]["hidden_units"] == 16


@pytest.mark.parametrize(
    "comparisons,expected",
    [
        ([(0.05, 60, 10), (0.04, 55, 12)], "helped"),
        ([(-0.05, 10, 60), (-0.04, 12, 55)], "hurt"),
        ([(0.05, 60, 10)], "one seed: cannot tell"),  # beyond noise once is not a verdict
        ([(0.001, 12, 10)], "within noise (one seed)"),
        ([(0.001, 12, 10), (0.0, 10, 10)], "within noise at every seed"),
        ([(0.05, 60, 10), (0.001, 12, 10)], "cannot tell: beyond noise at 1 of 2 seeds"),
        ([(0.05, 60, 10), (-0.05, 10, 60)], "cannot tell: beyond noise at 2 of 2 seeds, in both directions"),
    ],
)
def test_a_change_is_called_only_when_every_seed_agrees_beyond_noise(comparisons, expected):
    assert seeds_verdict(comparisons) == expected


def write_run(folder: Path, val_accuracy: float, val_losses=(1.8, 1.6, 1.5)) -> Path:
    folder.mkdir(parents=True)
    history = {
        "best_val_accuracy": val_accuracy,
        "val_losses": list(val_losses),
        "train_accuracies": [0.3, 0.45, 0.52],
        "val_accuracies": [0.35, 0.43, val_accuracy],
        "train_losses": [2.0, 1.7, 1.5],
    }
    (folder / "train.json").write_text(json.dumps(history))
    return folder


def correct_at(accuracy_index: range, n: int = 1000) -> torch.Tensor:
    right = torch.zeros(n, dtype=torch.bool)
    right[accuracy_index.start : accuracy_index.stop] = True
    return right


def test_the_table_counts_fixed_and_broken_against_the_base_of_each_seed(tmp_path):
    # base right on images 0-499 at both seeds; +bn right on 0-599 (100 fixed), +crop on 20-509 (10 fixed, 20 broken)
    right = {"base": range(0, 500), "+bn": range(0, 600), "+crop": range(20, 510)}
    runs = {arm: {s: write_run(tmp_path / f"{arm}-{s}", len(r) / 1000) for s in (0, 1)} for arm, r in right.items()}
    correct = {arm: {s: correct_at(r) for s in (0, 1)} for arm, r in right.items()}
    table = ablation.table(runs, correct)
    assert list(table.index) == ["base", "+bn", "+crop"]
    assert table.loc["+bn", "fixed[seed 0]"] == 100 and table.loc["+bn", "broken[seed 1]"] == 0
    assert (table.loc["+crop", "fixed[seed 1]"], table.loc["+crop", "broken[seed 1]"]) == (10, 20)
    assert table.loc["+bn", "verdict"] == "helped" and table.loc["+crop", "verdict"] == "within noise at every seed"
    assert table.loc["+bn", "val_accuracy"] == pytest.approx(0.6) and int(table["val_images"].iloc[0]) == 1000
    assert ablation.winner(table) == "+bn"
    with pytest.raises(ConfigError, match=r"^base 'recipe' is not one of base, \+bn, \+crop$"):
        ablation.table(runs, correct, base="recipe")
    note = ablation.describe(table, correct)
    assert (
        "At every seed, beyond noise, at this budget, helped: `+bn` +10.0 points (100 fixed / 0 broken, 100 fixed / "
        "0 broken)." in note
    )
    assert "cannot tell for `+crop` -1.0 points (10 fixed / 20 broken, 10 fixed / 20 broken)" in note
    assert "ahead of the next, `base`, beyond noise at every seed" in note
    assert note.finding == (
        "Ablation over 2 seeds: `+bn` helped at this budget; the run cannot tell for `+crop` (within noise at every "
        "seed); best mean `+bn` at 60.0%."
    )


def test_one_seed_calls_nothing(tmp_path):
    right = {"base": range(0, 500), "+bn": range(0, 700)}
    runs = {arm: {0: write_run(tmp_path / arm, len(r) / 1000)} for arm, r in right.items()}
    correct = {arm: {0: correct_at(r)} for arm, r in right.items()}
    table = ablation.table(runs, correct)
    assert table.loc["+bn", "verdict"] == "one seed: cannot tell"
    note = ablation.describe(table, correct)
    assert "With one seed the run cannot call any change" in note and "helped:" not in note


@pytest.mark.parametrize(
    "val_losses,needle",
    [
        ((1.81, 1.62, 1.55), "**still underfitting**"),
        ((1.6, 1.4, 1.5), "**began to overfit**: its validation loss was lowest at epoch 2 of 3"),
        ((2.3,), "one point is no curve"),
    ],
)
def test_the_base_curve_says_whether_regularising_could_pay(tmp_path, val_losses, needle):
    run = write_run(tmp_path / "base", 0.46, val_losses)
    note = ablation.underfitting(run)
    assert needle in note
    assert " → ".join(f"{v:.2f}" for v in val_losses) in note
    if len(val_losses) > 1:
        assert "training accuracy 52.0% against validation 46.0%" in note


def test_the_smoothed_loss_is_marked_only_on_the_loss_plot(tmp_path):
    runs = {arm: {0: write_run(tmp_path / arm, 0.5)} for arm in ("base", "+label smoothing")}
    assert list(ablation.histories(runs, 0)) == ["base", "+label smoothing"]
    assert list(ablation.histories(runs, 0, losses=True)) == ["base", "+label smoothing (smoothed loss)"]


def tta_val_table(right: dict[str, range], views: dict[str, int], n: int = 2000) -> pd.DataFrame:
    table = pd.DataFrame(
        [{"mode": m, "views": views[m], "accuracy": len(r) / n, "n": n} for m, r in right.items()]
    ).set_index("mode")
    table.attrs["correct"] = {m: correct_at(r, n) for m, r in right.items()}
    return table


def test_the_cheaper_tta_mode_wins_a_tie_within_noise():
    views = {"none": 1, "flip": 2, "translate": 6}
    # translate leads flip by 15 images (45 fixed, 30 broken: noise on the same 2,000 images); both beat none
    tie = tta_val_table({"none": range(0, 1400), "flip": range(0, 1500), "translate": range(30, 1545)}, views)
    assert analysis.choose_tta_mode(tie) == "flip"
    note = commentary.tta_choice(tie, "flip")
    assert "`translate` scored highest" in note and "`flip` (75.0%, 2 views) is within noise of it" in note
    clear = tta_val_table({"none": range(0, 1400), "flip": range(0, 1450), "translate": range(0, 1560)}, views)
    assert analysis.choose_tta_mode(clear) == "translate"
    assert "beyond noise of every mode with fewer views" in commentary.tta_choice(clear, "translate")
    nothing = tta_val_table({"none": range(0, 1400), "flip": range(0, 1405), "translate": range(5, 1410)}, views)
    assert analysis.choose_tta_mode(nothing) == "none"


@pytest.mark.parametrize(
    "suggested,verdict",
    [
        ({0: range(0, 340), 1: range(0, 345)}, "the suggestion helped at every seed, beyond noise"),
        ({0: range(0, 340), 1: range(0, 303)}, "cannot tell: beyond noise at 1 of 2 seeds"),  # 3-0 is noise
        ({0: range(0, 340)}, "one seed: cannot tell"),  # beyond noise at one seed is that seed's luck
        ({0: range(0, 260), 1: range(0, 250)}, "the suggestion hurt at every seed, beyond noise"),
    ],
)
def test_the_lr_finder_paragraph_judges_the_suggestion_seed_by_seed(tmp_path, suggested, verdict):
    """03's suggestion was called helpful or harmful from one training while its ablation needs every seed."""
    from cifarkit.tools.lrfinder import LrSweep

    sweep = LrSweep([1e-6, 1e-3, 0.3], [2.3, 1.9, 9.0], [2.3, 2.0, 3.1], 1e-2, 1e-3, "diverged", "adam", 128)
    right = {"recipe": {s: range(0, 300) for s in suggested}, "suggested": suggested}
    runs = {k: {s: write_run(tmp_path / f"{k}-{s}", len(r) / 500) for s, r in v.items()} for k, v in right.items()}
    correct = {k: {s: correct_at(r, 500) for s, r in v.items()} for k, v in right.items()}
    text = commentary.lr_finder(sweep, 2e-3, ablation.table(runs, correct, base="recipe"))
    assert "**0.001**" in text and "1/2.0 the recipe's 0.002" in text and "the loss exploded" in text
    assert f"**{verdict}**" in text and text.finding.endswith(f"on average; {verdict}.")
    assert text.finding.startswith("LR finder: suggests 0.001 against the recipe's 0.002")
    counts = ", ".join(f"{max(len(r) - 300, 0)}/{max(300 - len(r), 0)}" for r in suggested.values())
    assert f"fixed/broken per seed {counts}, of 500 images" in text
    assert f"at seed{'s' if len(suggested) > 1 else ''} {', '.join(map(str, suggested))} (each" in text
