"""Transfer learning (notebook 09): class groups, draws, transplanted and frozen weights, choices made on
validation, the curve's statistics, and the ImageNet backbones' weights landing where they belong."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cifarkit.config import TrainConfig
from cifarkit.data import CIFAR10_CLASSES, Dataset, Split, make_synthetic
from cifarkit.errors import CheckpointError, ConfigError, DataError
from cifarkit.loader import Normalizer
from cifarkit.models import create_model
from cifarkit.tools import imagenet, transfer
from cifarkit.train import fit

CPU = torch.device("cpu")
SMALL = transfer.TransferSettings(
    pretrain_images=None, pretrain_epochs=1, labels_per_class=(2, 8), choose_at=8, val_per_class=6, steps=4,
    batch_size=8, sizes=(32,), weight_decays=(1e-2,), seeds=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_synthetic(num_classes=6, train_per_class=30, test_per_class=8)


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A real pretraining run on the source classes: its folder and weights."""
    groups = transfer.class_groups(data.classes)
    source = transfer.only_classes(data, groups.source)
    run = fit(
        TrainConfig(model="ex1", epochs=1, device="cpu"),
        tmp_path_factory.mktemp("pre"),
        source,
        test=False,
        log=lambda _: None,
    )
    return run, transfer.source_weights(run)


def test_cifar10_transfers_from_animals_to_vehicles_and_other_datasets_split_their_classes():
    groups = transfer.class_groups(CIFAR10_CLASSES)
    assert groups.source_name == "animals" and set(groups.target) == {"airplane", "automobile", "ship", "truck"}
    assert set(groups.source) | set(groups.target) == set(CIFAR10_CLASSES) and not set(groups.source) & set(
        groups.target
    )
    other = transfer.class_groups([f"c{i}" for i in range(10)])
    assert other.source == tuple(f"c{i}" for i in range(6)) and other.target == ("c6", "c7", "c8", "c9")
    with pytest.raises(DataError, match="at least 4 classes"):
        transfer.class_groups(["a", "b", "c"])


def test_only_classes_keeps_those_classes_relabelled_in_the_order_given(data):
    part = transfer.only_classes(data, (data.classes[4], data.classes[1]))
    assert part.classes == (data.classes[4], data.classes[1]) and part.num_classes == 2
    assert len(part.train) == 60 and len(part.test) == 16
    # the images of old class 4 are now label 0, those of old class 1 label 1
    assert torch.equal(part.train.images[part.train.labels == 0], data.train.images[data.train.labels == 4])
    assert torch.equal(part.train.images[part.train.labels == 1], data.train.images[data.train.labels == 1])


def test_target_task_holds_out_a_fixed_validation_set_and_draws_nest_within_a_seed(data):
    groups = transfer.class_groups(data.classes)
    task = transfer.target_task(data, groups.target, SMALL, seed=0)
    again = transfer.target_task(data, groups.target, SMALL, seed=0)
    assert torch.equal(task.val.images, again.val.images)  # the same validation images every time
    assert task.val.labels.bincount().tolist() == [6, 6] and len(task.pool) == 2 * 30 - 12
    pool_keys = {img.numpy().tobytes() for img in task.pool.images}
    assert not pool_keys & {img.numpy().tobytes() for img in task.val.images}  # disjoint
    picks = transfer.draws(task, SMALL)
    assert set(picks) == {(2, 0), (2, 1), (8, 0), (8, 1)}
    assert task.pool.labels[picks[(8, 1)]].bincount().tolist() == [8, 8]
    assert set(picks[(2, 0)].tolist()) < set(picks[(8, 0)].tolist())  # a seed's smaller draw is in its larger one
    assert not torch.equal(picks[(8, 0)], picks[(8, 1)])  # each seed draws its own images
    with pytest.raises(DataError, match="fewer than 100"):
        transfer.draws(task, replace(SMALL, labels_per_class=(2, 100), choose_at=2))


def test_pool_per_class_caps_the_images_labels_are_drawn_from(data):
    task = transfer.target_task(data, transfer.class_groups(data.classes).target, replace(SMALL, pool_per_class=10), 0)
    assert task.pool.labels.bincount().tolist() == [10, 10]


def test_every_pretrained_tensor_but_the_head_lands_and_head_only_trains_only_the_head(data, pretrained):
    run, state = pretrained
    candidate = transfer.Candidate(transfer.PRETRAINED, "head", 1e-2)
    model = transfer.ex1_for(candidate, 2, seed=0, source_state=state)
    assert isinstance(model, transfer.HeadOnly)
    inner = {k: v.clone() for k, v in model.model.state_dict().items()}
    landed = [k for k in state if not k.startswith("classifier.")]
    assert landed and all(torch.equal(inner[k], state[k]) for k in landed)
    assert inner["classifier.weight"].shape[0] == 2  # a new head for the target's classes
    task = transfer.target_task(data, transfer.class_groups(data.classes).target, SMALL, 0)
    normalizer = Normalizer(task.mean, task.std, CPU, 32)
    tuned = transfer.fine_tune(model, task.pool, task.val, normalizer, CPU, replace(SMALL, steps=12), 1e-2, seed=0)
    after = model.model.state_dict()
    assert all(torch.equal(after[k], state[k]) for k in landed)  # frozen, batch norm statistics included
    assert not torch.equal(after["classifier.weight"], inner["classifier.weight"])
    # the weights kept are the best checked on validation, and score what the run says they scored
    assert transfer.scores(model, task.val, normalizer)["accuracy"] == pytest.approx(tuned.val_accuracy)
    assert 0 < tuned.best_step <= tuned.steps


def test_weights_of_another_network_fail_in_one_line(data):
    candidate = transfer.Candidate(transfer.PRETRAINED, "all layers", 1e-3)
    wrong = create_model("smallcifarnet", 6).state_dict()
    with pytest.raises(DataError, match="did not land"):
        transfer.ex1_for(candidate, 2, 0, wrong)


def test_choices_are_made_on_validation_and_the_curve_reuses_the_winning_run(data, pretrained, monkeypatch):
    _, state = pretrained
    task = transfer.target_task(data, transfer.class_groups(data.classes).target, SMALL, 0)
    picks = transfer.draws(task, SMALL)
    looked_at_test = []
    real = transfer.scores
    monkeypatch.setattr(
        transfer, "scores", lambda m, split, *a, **k: looked_at_test.append(split) or real(m, split, *a, **k)
    )
    tried, winners = transfer.choose(state, task, picks, SMALL, CPU)
    assert len(tried) == len(transfer.candidates(SMALL)) == 6 and all("test_accuracy" not in r for r in tried)
    assert len(looked_at_test) == 2  # only the two winners were scored on test, after the choice
    for method, row in winners.items():
        best = max(r["val_accuracy"] for r in tried if r["method"] == method)
        assert row["val_accuracy"] == best and "test_accuracy" in row
    rows = transfer.label_curve(winners, state, task, picks, SMALL, CPU)
    assert len(rows) == 2 * len(picks) and all("test_accuracy" in r for r in rows)
    for row in rows:  # one prediction per image: the accuracy is the share of the images it gets right
        assert row["test_accuracy"] == pytest.approx(float(row["test_correct"].float().mean()))
    for row in winners.values():
        assert rows.count(row) == 1  # reused as it is, not trained again
    from cifarkit.report.stats import curve_table

    table = curve_table(rows)
    assert set(table["seeds"]) == {2} and len(table) == 4 and set(table["test_images"]) == {len(task.test)}


def test_curve_table_counts_the_seeds_spread_and_the_test_images_noise():
    from cifarkit.report.stats import curve_table, standard_error

    rows = [
        {"method": "a", "trains": "all layers", "labels_per_class": 10, "test_accuracy": 0.5, "seconds": 1.0},
        {"method": "a", "trains": "all layers", "labels_per_class": 10, "test_accuracy": 0.7, "seconds": 3.0},
        {"method": "b", "trains": "head", "labels_per_class": 10, "test_accuracy": 0.4, "seconds": 2.0},
        {"method": "c", "trains": "head", "labels_per_class": 10, "test_accuracy": 0.6, "seconds": 2.0},
        {"method": "c", "trains": "head", "labels_per_class": 10, "test_accuracy": 0.6, "seconds": 2.0},
    ]
    table = curve_table([{**r, "test_images": 1000} for r in rows]).set_index("method")
    assert table.loc["a", "test_accuracy"] == pytest.approx(0.6) and table.loc["a", "seconds"] == 2.0
    seeds = math.sqrt(0.02) / math.sqrt(2)  # sample std (n-1) over sqrt(n)
    assert table.loc["a", "seed_se"] == pytest.approx(seeds)
    assert table.loc["a", "se"] == pytest.approx(math.hypot(seeds, standard_error(0.6, 1000)))
    # one seed: no spread to measure, the test images' noise remains
    assert math.isnan(table.loc["b", "seed_se"]) and table.loc["b", "se"] == pytest.approx(standard_error(0.4, 1000))
    # two seeds that agree by chance do not make the accuracy exact
    assert table.loc["c", "seed_se"] == 0 and table.loc["c", "se"] == pytest.approx(standard_error(0.6, 1000))
    assert table.loc["b", "trains"] == "head" and table.loc["b", "seeds"] == 1


def curve_rows(gains: dict[int, list[int]], n: int = 1000) -> list[dict]:
    """Rows of scratch ("s") and pretrained ("p") at each budget and seed on the same ``n`` test images: scratch
    right on the first 500, pretrained on the first 500 + ``gain`` (a gain of ``gain`` images, none broken)."""
    rows = []
    for budget, per_seed in gains.items():
        for seed, gain in enumerate(per_seed):
            for method, right in (("s", 500), ("p", 500 + gain)):
                correct = torch.zeros(n, dtype=torch.bool)
                correct[:right] = True
                rows.append(
                    {
                        "method": method, "trains": "all layers", "labels_per_class": budget, "seed": seed,
                        "test_accuracy": right / n, "test_correct": correct, "test_images": n, "seconds": 2.0,
                    }
                )  # fmt: skip
    return rows


def test_the_commentary_calls_a_gain_only_when_every_seed_shows_it():
    from cifarkit.report.commentary import transfer as note
    from cifarkit.report.stats import curve_table, paired_curve

    rows = curve_rows({10: [100, 90, 110], 1000: [30, 2, 3]})
    paired = {"p": paired_curve(rows, "p", "s")}
    assert paired["p"].loc[10, "verdict"] == "helped" and paired["p"].loc[10, "gain_per_seed"] == "+10.0, +9.0, +11.0"
    assert paired["p"].loc[1000, "verdict"] == "cannot tell: beyond noise at 1 of 3 seeds"
    assert paired["p"].loc[1000, "fixed_broken_per_seed"] == "30/0, 2/0, 3/0"
    info = {"name": "Lite0 (ImageNet)", "params": 4_650_000, "size": 96, "ex1_params": 50_326}
    text = note(curve_table(rows), paired, "s", info, 30.0)
    assert (
        "at **10** labels per class +10.0 points (seeds +10.0, +9.0, +11.0; fixed/broken 100/0, 90/0, 110/0): helped"
        in text
    )
    assert "head start shrinks as labels grow, beyond noise" in text  # +10.0 at 10 against +1.2 at 1,000
    assert (
        "4.65M parameters against EX-1's 50k" in text
        and "instead of 32" in text
        and "upsampled to 96 px" in text
        and "frozen" in text
    )
    assert "30 s" in text and "3 seeds" in text.finding
    close = curve_table(curve_rows({10: [40, 35, 45], 1000: [30, 25, 35]}))
    text = note(
        close, {"p": paired_curve(curve_rows({10: [40, 35, 45], 1000: [30, 25, 35]}), "p", "s")}, "s", None, 1.0
    )
    assert "Whether `p`'s head start shrinks as labels grow, this run cannot tell" in text


def test_choices_at_the_edge_of_their_grid_or_still_improving_are_named():
    from cifarkit.report.commentary import transfer_choices

    winners = {"s": {"lr": 3e-3}, "p": {"lr": 1e-3}}
    tried = [{"best_step": 60, "steps": 60}, {"best_step": 45, "steps": 60}]
    note = transfer_choices(tried, winners, (1e-3, 2e-3, 3e-3))
    assert "`s` chose lr 0.003, the highest of the 3 rates tried" in note and "`p` chose lr 0.001, the lowest" in note
    assert "1 of the 2 choosing runs were best at their last check" in note
    inside = transfer_choices([{"best_step": 45, "steps": 60}], {"s": {"lr": 2e-3}}, (1e-3, 2e-3, 3e-3))
    assert inside.startswith("Every choice was made inside its grid")


def test_steps_grow_with_the_labels_so_the_largest_budget_gets_a_few_passes():
    settings = transfer.TransferSettings(steps=60, passes=3.0, batch_size=64)
    assert transfer.steps_for(settings, 40) == 60  # 10 labels x 4 classes: the floor
    assert transfer.steps_for(settings, 4000) == 188  # 1,000 x 4: three passes of 63 batches


def test_a_linear_probe_chooses_its_weight_decay_on_validation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    y = (x[:, 0] > 0).long()
    probe = transfer.linear_probe(x[:100], y[:100], x[100:], y[100:], (1e-4, 1e3), seed=0)
    assert probe.weight_decay == 1e-4 and probe.val_accuracy > 0.9  # a huge decay leaves a useless head
    assert probe.accuracy(x[100:], y[100:]) == probe.val_accuracy


def test_every_tensor_of_the_efficientnet_lite0_file_lands_in_timms_network():
    import timm  # a dependency: its absence is a failure, not a skip

    path = imagenet.lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = timm.create_model(imagenet.LITE0_ARCH, pretrained=False)
    mapping = imagenet.lite0_key_map(state, net.state_dict())
    assert len(mapping) == len(state) == 296 and sorted(mapping.values()) == sorted(state)
    net.load_state_dict({mine: state[theirs] for mine, theirs in mapping.items()})
    landed = net.state_dict()
    assert all(torch.equal(landed[mine], state[theirs]) for mine, theirs in mapping.items())
    # an independent reference: the names translated by the two libraries' naming rules, not by position
    expected = {mine: lite0_name_by_rule(mine, [len(stage) for stage in net.blocks]) for mine in net.state_dict()}
    assert mapping == expected  # all 296, batch-norm means, variances and counts included
    backbone = imagenet.efficientnet_lite0()
    with torch.no_grad():
        features = backbone.net.eval()(torch.zeros(2, 3, 64, 64))
    assert features.shape == (2, imagenet.LITE0_FEATURES) and backbone.source == str(path)
    kept = backbone.net.state_dict()  # every backbone tensor is the file's tensor of that name (classifier dropped)
    assert len(kept) == 294 and all(torch.equal(kept[k], state[expected[k]]) for k in kept)


# timm's EfficientNet names -> efficientnet_pytorch's (the file's): the stem, head and each block's layers
LITE0_TOP = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
LITE0_FIRST_STAGE = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
LITE0_BLOCK = {
    "conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1", "conv_pwl": "_project_conv",
    "bn3": "_bn2",
}  # fmt: skip


def lite0_name_by_rule(name: str, stage_lengths: list[int]) -> str:
    """The file's name for timm's ``name``: ``blocks.s.b.layer.kind`` is the flat block ``sum(stages before s) + b``
    with the layer renamed (the first stage has no expansion layer); the rest renames the stem and head."""
    parts = name.split(".")
    if parts[0] != "blocks":
        return ".".join([LITE0_TOP[parts[0]], *parts[1:]])
    stage, block, layer, kind = int(parts[1]), int(parts[2]), parts[3], parts[4]
    flat = sum(stage_lengths[:stage]) + block
    return f"_blocks.{flat}.{(LITE0_FIRST_STAGE if stage == 0 else LITE0_BLOCK)[layer]}.{kind}"


def test_a_file_of_another_network_does_not_load_into_lite0():
    state = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_bn0.weight": torch.zeros(16)}
    target = {"conv_stem.weight": torch.zeros(32, 3, 3, 3), "bn1.weight": torch.zeros(32)}
    with pytest.raises(CheckpointError, match=r"_bn0.weight \(16,\) does not fit bn1.weight \(32,\)"):
        imagenet.lite0_key_map(state, target)
    with pytest.raises(CheckpointError, match="1 tensors in the weights file, 2 in"):
        imagenet.lite0_key_map({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, target)


def test_imagenet_rows_embed_each_image_once_and_score_every_draw(data):
    backbone = imagenet.efficientnet_lite0()
    task = transfer.target_task(data, transfer.class_groups(data.classes).target, SMALL, 0)
    picks = transfer.draws(task, SMALL)
    sizes = transfer.choose_size(backbone, task, picks, SMALL, CPU)
    assert [r["size"] for r in sizes] == [32] and transfer.best_size(sizes) == 32
    rows = transfer.imagenet_rows(backbone, 32, task, picks, SMALL, CPU)
    assert [(r["labels_per_class"], r["seed"]) for r in rows] == list(picks)
    assert all(0 <= r["test_accuracy"] <= 1 and r["trains"] == "head" for r in rows)
    assert transfer.best_size([{"size": 64, "val_accuracy": 0.7}, {"size": 32, "val_accuracy": 0.7}]) == 32


def test_torchvision_backbones_join_only_where_their_weights_are_cached(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert imagenet.cached_torchvision_backbones() == []
    assert "none cached" in imagenet.torchvision_line() and str(tmp_path) in imagenet.torchvision_line()
    path = imagenet.torchvision_weights_file("mobilenet_v3_small")  # as torchvision's download leaves it
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    assert imagenet.cached_torchvision_backbones() == ["mobilenet_v3_small"]
    backbone = imagenet.torchvision_backbone("mobilenet_v3_small")
    with torch.no_grad():
        assert backbone.net.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 576)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # another network's weights
    with pytest.raises(DataError, match="lacks features.0.0.weight .* delete it .it should hold mobilenet_v3_small's"):
        imagenet.torchvision_backbone("mobilenet_v3_small")
    path.write_bytes(b"truncated")
    with pytest.raises(DataError, match="not a readable weights file .*; delete it"):
        imagenet.torchvision_backbone("mobilenet_v3_small")


def test_settings_choose_at_one_of_their_budgets():
    with pytest.raises(ConfigError, match="choose_at=50"):
        transfer.TransferSettings(labels_per_class=(10, 100), choose_at=50)
    # 09's third exercise edits sizes: an input side no checkpoint may hold is refused before a feature is computed
    with pytest.raises(ConfigError, match="TransferSettings.sizes: 100000 must be an integer >= 8 and <= 4,096"):
        transfer.TransferSettings(sizes=(96, 100_000))


def test_a_split_smaller_than_a_budget_is_a_one_line_error():
    split = Split(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(DataError, match="class 0 has 3 training images, fewer than 5"):
        transfer.per_class(split.labels, 5, 0)


def test_the_label_curve_draws_one_line_per_method_with_its_error_bars():
    from cifarkit.report.figures import plot_label_curve
    from cifarkit.report.stats import curve_table

    rows = [
        {"method": m, "trains": t, "labels_per_class": n, "test_accuracy": 0.5, "seconds": 1.0, "test_images": 400}
        for m, t in (("scratch", "all layers"), ("pretrained", "head"))
        for n in (10, 100)
        for _ in range(2)
    ]
    fig = plot_label_curve(curve_table(rows))
    ax = fig.axes[0]
    assert [c.get_label() for c in ax.containers] == ["scratch, trains all layers", "pretrained, trains head"]
    assert ax.get_xscale() == "log" and "mean of 2 seeds" in ax.get_title() and "400 test images" in ax.get_title()


def test_the_index_never_names_the_pretraining_run_as_the_series_best_model(data, tmp_path):
    """09's pretraining trains on part of the classes: another dataset, which the index's best model skips."""
    from cifarkit.report import series

    source = transfer.only_classes(data, transfer.class_groups(data.classes).source)
    cfg = TrainConfig(model="ex1", epochs=1, device="cpu", dataset="synthetic (the first 4 classes only)")
    fit(cfg, tmp_path / "09_transfer", source, test=False, log=lambda _: None)
    assert series.best_run(tmp_path) is not None  # it is a run
    assert series.best_run(tmp_path, "synthetic") is None  # but not one on the series' dataset
    fit(replace(cfg, dataset="synthetic"), tmp_path / "01_ex1_baseline", data, test=False, log=lambda _: None)
    assert series.best_run(tmp_path, "synthetic")["run"].startswith("01_ex1_baseline/")
