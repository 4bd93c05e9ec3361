"""The speedrun recipe: each piece does what it claims, the ablation switches one piece, the command's JSON."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from cifarkit import runs, train
from cifarkit.data import Split
from cifarkit.errors import ConfigError, duration_text
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import create_model
from cifarkit.report.stats import difference_is_noise, paired_is_noise, paired_se
from cifarkit.speedrun import recipe as sr
from cifarkit.train import forward_backward

CPU = torch.device("cpu")


def test_whitening_decorrelates_2x2_patches():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 1, 16, 16, generator=g)
    noise = torch.randn(200, 2, 16, 16, generator=g)
    images = torch.cat([base, 0.8 * base + 0.2 * noise[:, :1], 0.3 * noise[:, 1:] - 0.5 * base], 1)  # correlated
    layer = torch.nn.Conv2d(3, 24, 2)
    sr.init_whitening(layer, images, eps=1e-6)
    out = layer(images)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(out.T)
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=0.05)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])  # both signs of every direction
    linear = torch.nn.Conv2d(3, 12, 2)  # whiten_signs=False: the 12 directions once, no activation after
    sr.init_whitening(linear, images, eps=1e-6)
    assert torch.equal(linear.weight, layer.weight[:12])


def test_model_options_activation_and_whitening_signs():
    relu12 = create_model("speednet", 10, widths=[8, 8, 8], act="relu", whiten_signs=False)
    assert relu12.whiten.out_channels == 12 and isinstance(relu12.act, torch.nn.Identity)
    assert isinstance(relu12.blocks[0].act, torch.nn.ReLU)
    assert relu12(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ConfigError, match="unknown activation 'tanh'"):
        create_model("speednet", 10, act="tanh")


def test_identity_init_passes_the_input_through_the_second_convs():
    model = create_model("speednet", 10, widths=[8, 8, 8])
    sr.init_identity(model)
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(model.blocks[0].conv2(x), x)


def test_whitening_layer_is_frozen_and_stays_fp32_under_bf16_autocast():
    model = sr.build_model(sr.Recipe(widths=(8, 8, 8)), 10, torch.randn(50, 3, 32, 32), CPU)
    assert not model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    seen = {}
    model.whiten.register_forward_hook(lambda m, i, o: seen.update(dtype=o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 32, 32))
    assert seen["dtype"] == torch.float32
    assert all(not m.weight.requires_grad for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_bias_group_gets_the_higher_lr_and_lower_decay():
    recipe = sr.Recipe(widths=(8, 8, 8), lr=0.5, weight_decay=1e-3, bias_lr_scale=64)
    opt = sr.sgd_with_bias_groups(sr.build_model(recipe, 10, None, CPU), recipe)
    weights, biases = opt.param_groups
    assert weights["lr"] == 0.5 and biases["lr"] == 0.5 * 64  # the schedule scales each group's own lr
    assert biases["weight_decay"] == pytest.approx(1e-3 / 64)
    assert all(p.ndim >= 2 for p in weights["params"]) and all(p.ndim == 1 for p in biases["params"])


def test_lr_schedule_is_triangular():
    assert sr.lr_factor(0.0, 0.2) == pytest.approx(0.2)
    assert sr.lr_factor(0.2, 0.2) == pytest.approx(1.0)
    assert sr.lr_factor(0.6, 0.2) == pytest.approx(0.5)
    assert sr.lr_factor(1.0, 0.2) == 0.0


def test_alternating_flip_shows_each_image_once_each_way_per_epoch_pair():
    """The speedrun's loader: the core DeviceLoader with the recipe's alternating flip."""
    n = 64
    ramp = (torch.arange(8, dtype=torch.uint8) * 30).expand(n, 3, 8, 8).clone()  # left dark, right bright
    split = Split(ramp, torch.arange(n))
    norm = Normalizer((0.0,) * 3, (1.0,) * 3, CPU, channels_last=False)
    batches = DeviceLoader(
        split, 16, norm, train=True, augment=("flip",), alternating_flip=sr.Recipe().alternating_flip
    )

    def flipped():
        seen = {}
        for x, y in batches:
            for img, label in zip(x, y, strict=True):
                seen[int(label)] = bool(img[0, 0, 0] > img[0, 0, -1])
        return seen

    e0, e1, e2 = flipped(), flipped(), flipped()
    assert len(e0) == n and all(e0[i] != e1[i] for i in range(n)) and e0 == e2
    assert 16 < sum(e0.values()) < 48  # the starting side is random per image


def test_lookahead_holds_slow_weights_at_the_end():
    model = torch.nn.Linear(3, 2)
    la = sr.Lookahead(model, every=1)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(1, progress=1.0)  # strong pull: decay 0.95
    assert torch.allclose(model.weight, start + 0.05, atol=1e-6)
    with torch.no_grad():
        model.weight.add_(1.0)
    la.step(2, progress=0.0)  # no pull early on: slow weights jump to the fast ones
    la.finish()
    assert torch.allclose(model.weight, start + 1.05, atol=1e-6)


def test_ablation_switches_exactly_one_piece_each():
    recipe = sr.get_recipe("flagship")  # uses every piece
    variants = sr.ablation_recipes(recipe)
    assert variants[0] == ("full recipe", recipe) and len(variants) == len(sr.PIECES) + 1
    for (label, variant), piece in zip(variants[1:], sr.PIECES, strict=True):
        changed = [f.name for f in fields(sr.Recipe) if getattr(variant, f.name) != getattr(recipe, f.name)]
        assert changed == [piece.field] and piece.name in label and piece.reason
    speedrun = sr.get_recipe("speedrun")  # pieces a recipe leaves off are not "switched off" again
    labels = [label for label, _ in sr.ablation_recipes(speedrun)]
    assert "- TTA" not in labels and "- lookahead (EMA)" not in labels and "- patch whitening" in labels


def test_bad_recipes_fail_in_one_line():
    with pytest.raises(ConfigError, match="unknown recipe 'turbo'; choose speedrun, flagship, tiny"):
        sr.get_recipe("turbo")
    with pytest.raises(ConfigError, match="tta"):
        sr.Recipe(tta="5crop")
    with pytest.raises(ConfigError, match="epochs"):
        sr.Recipe(epochs=0)
    with pytest.raises(ConfigError, match="cpu_micro_batch=100 is invalid: use 0 .* divisor >= 2 of batch_size 256"):
        sr.Recipe(cpu_micro_batch=100)


def test_chunked_backward_gives_the_whole_batch_gradient():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.2)
    x, y = torch.randn(8, 3, 2, 2), torch.randint(0, 5, (8,))
    grads, losses, outputs = {}, {}, {}
    for chunk in (0, 2, 4):
        model.zero_grad()
        loss, logits = forward_backward(model, x, y, criterion, CPU, chunk=chunk)
        grads[chunk] = [p.grad.clone() for p in model.parameters()]
        losses[chunk], outputs[chunk] = loss.detach(), logits.detach()
    for chunk in (2, 4):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads[0], grads[chunk], strict=True))
        assert torch.allclose(losses[0], losses[chunk], atol=1e-6)  # the whole batch's mean loss
        assert torch.equal(outputs[0].argmax(1), outputs[chunk].argmax(1)) and outputs[chunk].shape == (8, 5)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    forward_backward(model, x, y, criterion, CPU, chunk=2)
    assert seen == [2, 2, 2, 2]


TINY = "synthetic:classes=4,train=300,test=25"


def tiny_speedrun(cli, out_dir, *options: str) -> dict:
    """``speedrun --recipe tiny`` on TINY (CPU) with ``options``; its JSON summary."""
    code, out, err = cli(
        "speedrun", "--dataset", TINY, "--recipe", "tiny", "--device", "cpu", *options, "--out", out_dir, "--json"
    )
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_speedrun_command_json_checkpoint_and_baseline(cli, tmp_path, data_dir):
    summary = tiny_speedrun(cli, tmp_path, "--baseline", "--target", "0.3")
    for key in ("recipe", "seconds", "val_accuracy", "test_accuracy", "epochs", "checkpoint", "curve"):
        assert key in summary
    assert summary["recipe"] == "tiny" and summary["seconds"] >= summary["train_seconds"] > 0
    epochs = [r["epoch"] for r in summary["curve"]]
    assert all(a < b for a, b in zip(epochs, epochs[1:], strict=False)) and epochs[-1] == pytest.approx(
        summary["epochs"]
    )
    assert all(0 <= r["val_accuracy"] <= 1 for r in summary["curve"])
    assert summary["baseline_seconds"] > 0  # 4 learnable classes: the course recipe reaches 0.3 quickly
    assert summary["speedup"] == pytest.approx(summary["baseline_seconds"] / summary["seconds"])
    assert summary["baseline_curve"] and summary["test_accuracy"] > 0.25  # 4 learnable classes: chance is 0.25
    # the run folder is written by cifarkit.runs like any run's: metrics rows, a complete train.json, test.json
    run = runs.read_run(Path(summary["checkpoint"]).parent)
    assert runs.run_complete(run.path) and run.test["accuracy"] == summary["test_accuracy"]
    metrics = runs.read_jsonl(run.path / "metrics.jsonl")
    assert [r["epoch"] for r in metrics] == epochs and all(r["train_loss"] > 0 and r["lr"] >= 0 for r in metrics)
    assert run.train["val_accuracies"] == [r["val_accuracy"] for r in summary["curve"]]
    assert run.train["best_val_accuracy"] == summary["curve"][-1]["val_accuracy"]  # the last weights are kept
    assert (run.train["train_time"], run.train["epochs_run"]) == (summary["train_seconds"], summary["epochs"])
    # the checkpoint stands alone: evaluate reads it like any other
    code, out, err = cli("evaluate", summary["checkpoint"], "--dataset", TINY, "--tta", "flip", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["accuracy"] == pytest.approx(summary["test_accuracy"], abs=0.051)


def test_speedrun_bf16_checkpoint_is_evaluated_in_bf16(cli, tmp_path):
    summary = tiny_speedrun(cli, tmp_path, "--amp", "bf16")
    assert summary["amp"] == "bf16"
    ckpt = runs.load_checkpoint(summary["checkpoint"])
    assert ckpt["config"]["amp"] == "bf16"  # so evaluate and predict run it as it was trained
    code, out, err = cli("evaluate", summary["checkpoint"], "--dataset", TINY, "--tta", "translate", "--json")
    assert code == 0, err
    scored = json.loads(out.strip().splitlines()[-1])
    assert scored["precision"] == "bf16"  # the pass computed in bf16: in fp32 this test would fail here
    assert scored["accuracy"] == pytest.approx(summary["test_accuracy"], abs=0.051)


def test_speedrun_amp_auto_is_fp32_without_native_bf16(monkeypatch):
    from cifarkit import device as device_mod
    from cifarkit.data import make_synthetic

    monkeypatch.setattr(device_mod, "cpu_supports_bf16", lambda: False)
    ds = make_synthetic(num_classes=4, train_per_class=32, test_per_class=4)
    result = sr.train(sr.get_recipe("tiny").with_(epochs=0.5), ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    assert result.amp == "off"


def test_speedrun_user_errors(cli, tmp_path):
    code, _, err = cli("speedrun", "--dataset", TINY, "--recipe", "turbo", "--out", tmp_path)
    assert code == 2 and "turbo" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("speedrun", "--dataset", TINY, "--target", "70", "--out", tmp_path)
    assert code == 2 and "fraction" in err
    assert not list(tmp_path.iterdir())


def test_whitening_bias_learns_only_for_its_epochs():
    from cifarkit.data import make_synthetic

    ds = make_synthetic(num_classes=4, train_per_class=64, test_per_class=4)
    recipe = sr.get_recipe("tiny").with_(epochs=1.0)
    frozen = sr.train(recipe.with_(whiten_bias_epochs=0.0), ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    assert torch.count_nonzero(frozen.model.whiten.bias) == 0 and not frozen.model.whiten.bias.requires_grad
    learned = sr.train(recipe.with_(whiten_bias_epochs=0.5), ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    assert torch.count_nonzero(learned.model.whiten.bias) > 0 and not learned.model.whiten.bias.requires_grad


def test_a_crossing_within_noise_of_the_target_is_called_the_edge():
    """07's "4.9x sooner" rested on one seed that crossed 70% at its last point, by less than the noise."""
    from cifarkit.report import race as rep

    curves = {
        "slow": [{"seconds": 100.0, "val_accuracy": 0.6}, {"seconds": 200.0, "val_accuracy": 0.705}],
        "fast": [{"seconds": 20.0, "val_accuracy": 0.76}],
    }
    # on 5,000 images the standard error at 70% is 0.65 points: 70.5% is within two of them, 76% is not
    assert rep.at_the_edge(curves["slow"], 0.7, 5000) and not rep.at_the_edge(curves["fast"], 0.7, 5000)
    text = rep.describe_race(curves, 0.7, 5000)
    assert "crossed within noise of the target, so the ratio is a rough one" in text and "**slow**" in text
    assert "(at the edge: within two standard errors of 70.0% on 5,000 images)" in text
    assert "edge" not in rep.describe_race(curves, 0.7, 50_000)  # 0.2-point standard error: a clear crossing


def test_race_and_ablation_commentary_quote_the_numbers():
    import pandas as pd

    from cifarkit.report import race as rep

    curves = {
        "slow": [{"seconds": 100.0, "val_accuracy": 0.6}, {"seconds": 200.0, "val_accuracy": 0.71}],
        "fast": [{"seconds": 20.0, "val_accuracy": 0.72}],
        "never": [
            {"epoch": 1, "seconds": 25.0, "val_accuracy": 0.5},
            {"epoch": 2, "seconds": 50.0, "val_accuracy": 0.49},
        ],
    }
    assert rep.time_to(curves["slow"], 0.7) == 200.0 and rep.time_to(curves["never"], 0.7) is None
    text = rep.describe_race(curves, 0.7)
    assert "**200.0 s**" in text and "**never** did not reach 70.0% in 2 epochs (peak 50.0%) after 50.0 s" in text
    assert "10.0x sooner" in text and "edge" not in text  # without a validation size, no edge is judged
    assert text.finding == (
        "**fast** reached 70.0% validation top-1 10.0x sooner than **slow** on this machine (training time only; "
        "each curve's validation passes are not counted). **never** did not reach 70.0% in 2 epochs (peak 50.0%). "
        "That question is unanswered at this budget."
    )  # 07's Takeaways say the course recipe never got there, and that its time to the target is not known
    assert "This run does not answer how long **never** takes to reach 70.0%" in text
    assert "within noise of the 70.0% target on 5,000 images" in rep.describe_test(0.706, "none", 5000, 60.0, 1.0, 0.7)
    assert "above the 70.0% target beyond noise" in rep.describe_test(0.74, "none", 5000, 60.0, 1.0, 0.7)
    assert "chosen on validation images" in rep.describe_test(0.74, "none", 5000, 60.0, 1.0, 0.7)
    # the index gets words, never a blank, for a target not reached
    assert rep.summarize(curves, 0.7, ["fast", "never"]) == {
        "seconds_to_70_fast": 20.0,
        "seconds_to_70_never": "not reached in 2 epochs (peak 50.0%)",
    }
    n = 5000

    def table(fixed: list[int], broken: list[int], names: str = "abcd"):  # images only the variant / the full gets
        df = pd.DataFrame(
            {
                "variant": ["full recipe", *(f"- {v}" for v in names)],
                "delta": [(f - b) / n for f, b in zip(fixed, broken, strict=True)],
                "se_delta": [paired_se(f, b, n) for f, b in zip(fixed, broken, strict=True)],
                "within_noise": [paired_is_noise(f, b) for f, b in zip(fixed, broken, strict=True)],
                "reason": [""] * len(fixed),
                "seconds": [1.0] * len(fixed),
            }
        )
        df["val_accuracy"] = 0.70 + df["delta"]
        df.attrs["n_val"] = n
        return df

    # seed 0: a costs 10 points, b is noise, c and d improved; seed 1 agrees on a, b and c but not on d
    seed0 = table([0, 50, 125, 400, 100], [0, 550, 100, 100, 25])
    seed1 = table([0, 40, 110, 390, 60], [0, 560, 100, 90, 55])
    text = rep.describe_ablation({0: seed0, 1: seed1})
    assert "**70.0%** validation top-1 (mean of seeds 0, 1)" in text and "5000 validation images" in text
    assert "**a** (-10.2 points) cost accuracy at every seed: that piece earns its place" in text
    assert "only when every seed agrees" in text
    # d is +1.5 points at seed 0 (noise for two independent samples of 5,000, but the paired test sees 100 vs 25)
    # and +0.1 at seed 1: one seed's 'does not pay' was that seed's luck
    assert difference_is_noise(0.70, n, 0.715, n)
    assert "**c** *improved* validation accuracy at every seed: at this budget that piece does not pay." in text
    assert (
        "d (+0.8, cannot tell: beyond noise at 1 of 2 seeds)" in text and "b (+0.4, within noise at every seed)" in text
    )
    # a rank is claimed only beyond noise of the next piece at every seed: a against b, not against e
    assert text.finding == (
        "The piece worth most here is **a**: without it validation top-1 falls 10.2 points from 70.0%, beyond noise "
        "of the next piece, **b** (+0.4), at every seed."
    )
    close = rep.describe_ablation(
        {0: table([0, 50, 60], [0, 550, 535], "ae"), 1: table([0, 40, 60], [0, 560, 560], "ae")}
    )
    assert close.finding == (
        "Switching off **a** cost the most validation top-1 (10.2 points from 70.0%), within noise of **e** (-9.8) at "
        "some seed: the run cannot rank them."
    )
    one = rep.describe_ablation({0: seed0})  # one seed calls nothing
    assert "cost accuracy" not in one and "a (-10.0, one seed: cannot tell)" in one
    assert (
        one.finding
        == "At this budget no single piece moved validation top-1 beyond noise at every seed from the full recipe's 70.0%."
    )
    assert rep.describe_race(curves, 0.7).startswith("**fast** reached 70.0% validation top-1 10.0x sooner")
    test_note = rep.describe_test(0.7212, "translate", 10000, 53.5, 1.9)
    assert test_note == (
        "The speedrun model reaches **72.1%** test top-1 with TTA `translate` on 10,000 images, after "
        "53.5 s of training plus 1.9 s of TTA = **55.4 s** in all."
    )
    plain = rep.describe_test(0.711, "none", 5000, 45.9, 1.8)  # not "with TTA `none`"
    assert "in a plain test pass (this recipe uses no TTA)" in plain and "1.8 s of the test pass" in plain


def test_curve_points_give_a_curve_inside_one_epoch():
    from cifarkit.data import make_synthetic

    ds = make_synthetic(num_classes=4, train_per_class=64, test_per_class=4)
    recipe = sr.get_recipe("tiny").with_(epochs=0.75)  # 4 batches an epoch: 3 steps
    lines = []
    result = sr.train(recipe, ds.train, ds.mean, ds.std, 4, CPU, val=ds.test, curve_points=3, log=lines.append)
    assert [r["epoch"] for r in result.curve] == [0.25, 0.5, 0.75]
    # progress lines project the whole run's time from the pace so far; the last line has no projection
    assert len(lines) == 3 and all("at this pace" in line for line in lines[:2]) and "at this pace" not in lines[2]
    assert [r["seconds"] for r in result.curve] == sorted(r["seconds"] for r in result.curve)
    assert result.seconds == result.curve[-1]["seconds"]


def test_pace_seconds_scales_the_time_so_far_to_the_whole_schedule():
    assert sr.pace_seconds(430.0, 44, 528) == pytest.approx(5160.0)
    assert sr.pace_seconds(60.0, 10, 10) == pytest.approx(60.0)
    assert sr.pace_seconds(0.0, 0, 5) == 0.0


@pytest.mark.parametrize(
    "seconds,said", [(9.4, "9 s"), (89, "89 s"), (150, "2.5 min"), (5160, "86.0 min"), (9000, "2.5 h")]
)
def test_durations_read_as_a_person_says_them(seconds, said):
    assert duration_text(seconds) == said  # the flagship on a GPU said "0 min of training in all"


def test_the_warm_up_runs_before_the_clock_starts(monkeypatch):
    """The flagship's first epoch took 5.7-7.5 s on the H200 and later ones 0.3 s: first-call costs sat inside
    the timed region. A fake clock, which the warm-up moves on by 1,000 s, shows they no longer do."""
    from cifarkit.data import load_dataset

    now = [0.0]

    def fake_clock() -> float:
        now[0] += 0.001  # every reading moves time on a little, like a real clock
        return now[0]

    real = sr.warm_up

    def slow_warm_up(*args, **kwargs) -> float:
        seconds = real(*args, **kwargs)
        now[0] += 1000.0  # a warm-up that took 1,000 s
        return seconds + 1000.0

    monkeypatch.setattr(train, "clock", fake_clock)  # the one training timer: the core loop's and the speedrun's
    monkeypatch.setattr(sr, "warm_up", slow_warm_up)
    ds = load_dataset("synthetic:classes=4,train=64,test=16")
    result = sr.train(sr.get_recipe("tiny").with_(epochs=0.5), ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    assert result.warmup_seconds >= 1000.0  # reported beside the training time
    assert 0 < result.seconds < 1.0  # and not inside it: the timed region read the clock only after it
    assert all(r["seconds"] < 1.0 for r in result.curve)


def test_the_warm_up_leaves_the_timed_run_unchanged(monkeypatch):
    """The warm-up draws its own random numbers before the seed is set, so a run is the same with or without."""
    from cifarkit.data import load_dataset

    ds = load_dataset("synthetic:classes=4,train=64,test=16")
    recipe = sr.get_recipe("tiny").with_(epochs=0.5)
    warmed = sr.train(recipe, ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    monkeypatch.setattr(sr, "warm_up", lambda *args, **kwargs: 0.0)  # the run as it was before the warm-up
    cold = sr.train(recipe, ds.train, ds.mean, ds.std, 4, CPU, log=lambda s: None)
    weights = [torch.cat([p.detach().flatten() for p in r.model.parameters()]) for r in (warmed, cold)]
    assert torch.equal(weights[0], weights[1]) and warmed.warmup_seconds > 0 and cold.warmup_seconds == 0
