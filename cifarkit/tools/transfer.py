"""Transfer learning on the course's own data (notebook 09): pretrain on some classes, fine-tune on the others
with few labels, against the same network trained from scratch on the same labels, and an ImageNet row.

The protocol, read top to bottom:

1. split the classes in two groups (CIFAR-10: the six animals are the *source*, the four vehicles the *target*);
2. pretrain EX-1 on the source classes (a normal training run of the notebook);
3. from the target's training images, hold out a fixed validation set (the same for every row), and draw
   ``n`` labelled images per class for each label budget and seed (:func:`draws`);
4. choose every setting on validation, at one label budget: what is trained (the head only, or all layers)
   and the learning rate for EX-1; input size and weight decay for the ImageNet backbone's linear head;
   the best step of each run is kept, also by validation (:func:`fine_tune`);
5. train each method at each budget with each seed, score it on the target's test images, and report the mean
   and standard error over seeds (:func:`label_curve`).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from cifarkit.data import CIFAR10_CLASSES, Dataset, Split
from cifarkit.errors import DataError, short_list
from cifarkit.evaluate import evaluate, predict_logits, predicted_labels
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import create_model
from cifarkit.runs import load_checkpoint, read_run
from cifarkit.speedrun.recipe import scores
from cifarkit.tools.imagenet import Backbone
from cifarkit.tools.settings import TransferSettings
from cifarkit.train import step_graph, train_one_epoch, train_steps

CIFAR10_GROUPS = {
    "animals": ("bird", "cat", "deer", "dog", "frog", "horse"),
    "vehicles": ("airplane", "automobile", "ship", "truck"),
}


@dataclass(frozen=True)
class Groups:
    """The classes pretrained on (source) and transferred to (target), with a name for each group."""

    source_name: str
    source: tuple[str, ...]
    target_name: str
    target: tuple[str, ...]


def class_groups(classes: Sequence[str]) -> Groups:
    """CIFAR-10: animals -> vehicles. Any other dataset: its first 60% of classes -> the rest."""
    if sorted(classes) == sorted(CIFAR10_CLASSES):
        return Groups("animals", CIFAR10_GROUPS["animals"], "vehicles", CIFAR10_GROUPS["vehicles"])
    if len(classes) < 4:
        raise DataError(f"transfer needs at least 4 classes (2 to pretrain on, 2 to transfer to), got {len(classes)}")
    k = math.ceil(0.6 * len(classes))
    return Groups(f"the first {k} classes", tuple(classes[:k]), f"the other {len(classes) - k}", tuple(classes[k:]))


def only_classes(dataset: Dataset, keep: Sequence[str]) -> Dataset:
    """``dataset`` restricted to the classes ``keep``, relabelled 0..len(keep)-1 in that order."""
    unknown = [name for name in keep if name not in dataset.classes]
    if unknown or len(set(keep)) < len(keep):
        what = f"has no class {unknown[0]!r}" if unknown else "names a class twice"
        raise DataError(f"keep={short_list(list(keep))} {what}; choose among {short_list(dataset.classes, 10)}")
    new_label = torch.full((dataset.num_classes,), -1, dtype=torch.long)
    for i, name in enumerate(keep):
        new_label[dataset.classes.index(name)] = i

    def cut(split: Split | None) -> Split | None:
        if split is None:
            return None
        labels = new_label[split.labels]
        index = torch.nonzero(labels >= 0).flatten()
        return Split(split.images[index], labels[index])

    return Dataset(dataset.name, tuple(keep), dataset.mean, dataset.std, cut(dataset.train), cut(dataset.test))


def per_class(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """The first ``n`` indices of each class in a seeded shuffle (for one seed, a smaller ``n`` draws a subset of a
    larger one); a one-line error when a class has fewer."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < n:
            raise DataError(f"class {c} has {idx.numel()} training images, fewer than {n}; use smaller label budgets")
        chosen.append(idx[torch.randperm(idx.numel(), generator=g)[:n]])
    return torch.cat(chosen).sort().values


@dataclass(frozen=True)
class Task:
    """The target classes: labelled images are drawn from ``pool``; ``val`` chooses, ``test`` reports."""

    classes: tuple[str, ...]
    pool: Split
    val: Split
    test: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def target_task(dataset: Dataset, classes: Sequence[str], settings: TransferSettings, seed: int) -> Task:
    """The target task: ``settings.val_per_class`` validation images per class held out of the training images
    (seeded, the same for every row), the rest the pool, and the test images (at most ``settings.test_images``)."""
    target = only_classes(dataset, classes)
    train, test = target.split("train"), target.split("test").sample(settings.test_images, seed)
    val_index = per_class(train.labels, settings.val_per_class, seed)
    rest = torch.ones(len(train), dtype=torch.bool)
    rest[val_index] = False
    pool = train.subset(torch.nonzero(rest).flatten())
    if settings.pool_per_class is not None:
        pool = pool.subset(
            per_class(pool.labels, min(settings.pool_per_class, int(pool.labels.bincount().min())), seed)
        )
    return Task(
        target.classes,
        pool,
        train.subset(val_index),
        test,
        target.mean,
        target.std,
    )


def draws(task: Task, settings: TransferSettings) -> dict[tuple[int, int], torch.Tensor]:
    """(labels per class, seed) -> indices into ``task.pool``: each seed draws its own images."""
    return {
        (n, s): per_class(task.pool.labels, n, 1000 + s)
        for n in settings.labels_per_class
        for s in range(settings.seeds)
    }


def pretraining(run: Path) -> dict[str, float | int]:
    """What the pretraining run ``run`` reached and cost: best validation accuracy (on the source classes), its
    epoch, the images it trained on and its training time in seconds (train.json)."""
    files = read_run(run)
    return {
        "val_accuracy": files.train["best_val_accuracy"],
        "best_epoch": files.train["best_epoch"],
        "train_images": files.env.get("train_images"),
        "seconds": files.train["train_time"],
    }


def source_weights(run: Path) -> dict[str, torch.Tensor]:
    """The pretrained weights: the best validation epoch (``best.pt``) of the pretraining run ``run``."""
    return load_checkpoint(Path(run) / "best.pt")["state_dict"]


def transplant(state: dict[str, torch.Tensor], model: nn.Module) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape match into ``model``; return the names that did not
    land (the new head, sized for other classes), so a caller can check that nothing else was left out."""
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({**own, **fits})
    return sorted(k for k in own if k not in fits)


class HeadOnly(nn.Module):
    """``model`` with everything but ``model.classifier`` frozen: no gradients, and batch norm kept in eval mode
    (its running statistics stay the pretrained ones), so only the new head learns."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("classifier."))

    def train(self, mode: bool = True) -> HeadOnly:
        self.training = mode
        self.model.eval()
        self.model.classifier.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


@dataclass(frozen=True)
class Tuned:
    """One fine-tuning run: its best validation accuracy and where it was, and what it cost."""

    val_accuracy: float
    best_step: int
    steps: int
    seconds: float


def steps_for(settings: TransferSettings, images: int) -> int:
    """Optimiser steps of a fine-tuning run on ``images`` labelled images: ``settings.steps``, or
    ``settings.passes`` passes over them when that is more, so the largest budget is not cut short of steps."""
    return max(settings.steps, math.ceil(settings.passes * images / settings.batch_size))


def fine_tune(
    model: nn.Module,
    labeled: Split,
    val: Split,
    normalizer: Normalizer,
    device: torch.device,
    settings: TransferSettings,
    lr: float,
    seed: int,
    amp: str = "off",
    checks: int = 4,
) -> Tuned:
    """Train ``model`` (already on ``device``) on ``labeled`` for about :func:`steps_for` Adam steps (crop and
    flip, a cosine schedule), check validation ``checks`` times and keep the best weights (loaded back)."""
    torch.manual_seed(seed)
    loader = DeviceLoader(
        labeled, min(settings.batch_size, len(labeled)), normalizer, True, ("crop", "flip"), seed=seed
    )
    val_loader = DeviceLoader(val, 256, normalizer)
    epochs = max(1, round(steps_for(settings, len(labeled)) / len(loader)))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    criterion = nn.CrossEntropyLoss()
    graph = step_graph(model, criterion, device, amp)  # on CUDA/ROCm: each step one CUDA graph replay, as in fit
    every = max(1, epochs // checks)
    best, best_step, best_state = -1.0, 0, None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        train_one_epoch(model, loader, optimizer, criterion, device, scheduler, amp, graph=graph)
        if epoch % every == 0 or epoch == epochs:
            accuracy = evaluate(model, val_loader, device, amp=amp)["accuracy"]
            if accuracy > best:
                best, best_step, best_state = accuracy, epoch * len(loader), copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return Tuned(best, best_step, epochs * len(loader), time.perf_counter() - start)


# ----------------------------------------------------------------------------- an ImageNet backbone, frozen


def embed(
    backbone: Backbone, split: Split, size: int, device: torch.device, amp: str = "off"
) -> tuple[torch.Tensor, float]:
    """The frozen backbone's feature vector for every image of ``split``, upsampled to ``size`` px, scaled as its
    weights expect; and the seconds it took."""
    channels_last = device.type != "mps"  # depthwise convolutions run faster in it on CPUs and CUDA
    net = backbone.net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    normalizer = Normalizer(backbone.mean, backbone.std, device, size, channels_last)
    features, _, seconds = predict_logits(net, DeviceLoader(split, 64, normalizer), device, amp)
    return features, seconds


@dataclass(frozen=True)
class Probe:
    """A linear head trained on frozen features: its weight decay and validation accuracy."""

    head: nn.Linear
    weight_decay: float
    val_accuracy: float
    mean: torch.Tensor  # the training features' mean and std, which the head's inputs are standardised by
    std: torch.Tensor

    def accuracy(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """Top-1 of the head on ``features`` (the one tie rule of every metric: the lower class)."""
        return float(self.correct(features, labels).float().mean())

    def correct(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each image's top-1 right or wrong (the one tie rule: the lower class), for paired comparisons."""
        with torch.no_grad():
            logits = self.head((features - self.mean) / self.std)
        return predicted_labels(logits) == labels


def linear_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    weight_decays: Sequence[float],
    seed: int,
    steps: int = 200,
) -> Probe:
    """Logistic regression on standardised features, one per weight decay: ``steps`` full-batch Adam steps of
    the core's training loop (every step sees the same batch); the one with the best validation accuracy (the
    first of equals)."""
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones_like(mean)
    classes = int(max(y.max(), val_y.max())) + 1
    batch = itertools.repeat(((x - mean) / std, y))  # standardised once, the same batch for every weight decay
    best = None
    for wd in weight_decays:
        torch.manual_seed(seed)
        head = nn.Linear(x.shape[1], classes).to(x.device)
        optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=wd)
        train_steps(head, batch, steps, optimizer, nn.CrossEntropyLoss(), x.device)
        probe = Probe(head, wd, 0.0, mean, std)
        probe = replace(probe, val_accuracy=probe.accuracy(val_x, val_y))
        if best is None or probe.val_accuracy > best.val_accuracy:
            best = probe
    return best


# ----------------------------------------------------------------------------- EX-1: chosen on validation, then the curve

SCRATCH = "EX-1 from scratch"
PRETRAINED = "EX-1 pretrained"
TRAINS = ("head", "all layers")  # what a pretrained EX-1 trains: its new head only, or everything


@dataclass(frozen=True)
class Candidate:
    """One way to train EX-1 on the target: from scratch or from the source weights, what it trains, its rate."""

    method: str
    trains: str
    lr: float


def candidates(settings: TransferSettings) -> list[Candidate]:
    """Every setting tried on validation: scratch at each rate; pretrained with each of :data:`TRAINS` at each rate."""
    scratch = [Candidate(SCRATCH, "all layers", lr) for lr in settings.lrs]
    return scratch + [Candidate(PRETRAINED, trains, lr) for trains in TRAINS for lr in settings.lrs]


def ex1_for(candidate: Candidate, num_classes: int, seed: int, source_state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh EX-1 for the target (its head seeded by ``seed``), with the source weights in all its other layers
    when the candidate is pretrained; a one-line error if any other tensor fails to land."""
    torch.manual_seed(seed)
    model = create_model("ex1", num_classes)
    if candidate.method == SCRATCH:
        return model
    left = transplant(source_state, model)
    if any(not name.startswith("classifier.") for name in left):
        raise DataError(f"the pretrained weights do not fit EX-1: {', '.join(left)} did not land")
    return HeadOnly(model) if candidate.trains == "head" else model


def train_one(
    candidate: Candidate,
    source_state: dict[str, torch.Tensor],
    task: Task,
    draw: tuple[int, int, torch.Tensor],
    settings: TransferSettings,
    device: torch.device,
    amp: str = "off",
) -> tuple[dict, nn.Module]:
    """Fine-tune ``candidate`` on one draw ``(labels per class, seed, pool indices)``: its row (best validation
    accuracy, its step, the time) and the model holding those weights. The test images are not looked at."""
    n, seed, index = draw
    model = ex1_for(candidate, len(task.classes), seed, source_state).to(device)
    normalizer = Normalizer(task.mean, task.std, device, 32)
    tuned = fine_tune(model, task.pool.subset(index), task.val, normalizer, device, settings, candidate.lr, seed, amp)
    row = {
        "method": candidate.method,
        "trains": candidate.trains,
        "lr": candidate.lr,
        "labels_per_class": n,
        "seed": seed,
        "val_accuracy": tuned.val_accuracy,
        "best_step": tuned.best_step,
        "steps": tuned.steps,
        "seconds": tuned.seconds,
    }
    return row, model


def tested(row: dict, model: nn.Module, task: Task, device: torch.device, amp: str = "off") -> dict:
    """``row`` with its model's test accuracy on the target's test images (once every choice is made), and each
    image's right or wrong (``test_correct``) for the paired comparison of two methods on those images."""
    result = scores(model, task.test, Normalizer(task.mean, task.std, device, 32), amp=amp, batch_size=256)
    return {
        **row,
        "test_images": len(task.test),
        "test_accuracy": result["accuracy"],
        "test_correct": result["correct"].cpu(),
    }


def choose(
    source_state: dict[str, torch.Tensor],
    task: Task,
    picks: dict,
    settings: TransferSettings,
    device: torch.device,
    amp: str = "off",
) -> tuple[list[dict], dict[str, dict]]:
    """Train every :func:`candidates` on the first seed's draw of ``settings.choose_at`` labels per class and keep,
    per method, the one with the best validation accuracy (the first of equals: the cheaper settings are listed
    first). Returns every row tried (validation only) and each method's winner, its row now tested."""
    draw = (settings.choose_at, 0, picks[(settings.choose_at, 0)])
    tried, winners = [], {}
    for candidate in candidates(settings):
        row, model = train_one(candidate, source_state, task, draw, settings, device, amp)
        tried.append(row)
        if candidate.method not in winners or row["val_accuracy"] > winners[candidate.method][0]["val_accuracy"]:
            winners[candidate.method] = (row, model)
    return tried, {method: tested(row, model, task, device, amp) for method, (row, model) in winners.items()}


def label_curve(
    winners: dict[str, dict],
    source_state: dict[str, torch.Tensor],
    task: Task,
    picks: dict,
    settings: TransferSettings,
    device: torch.device,
    amp: str = "off",
) -> list[dict]:
    """Each method's chosen setting (a row of :func:`choose`) at every (label budget, seed) of ``picks``, tested;
    the run already made while choosing is reused, not repeated."""
    rows = []
    for row in winners.values():
        candidate = Candidate(row["method"], row["trains"], row["lr"])
        for (n, seed), index in picks.items():
            if (n, seed) == (row["labels_per_class"], row["seed"]):
                rows.append(row)  # made while choosing
            else:
                trained, model = train_one(candidate, source_state, task, (n, seed, index), settings, device, amp)
                rows.append(tested(trained, model, task, device, amp))
    return rows


# ----------------------------------------------------------------------------- an ImageNet backbone: the size, then the curve


def choose_size(
    backbone: Backbone, task: Task, picks: dict, settings: TransferSettings, device: torch.device, amp: str = "off"
) -> list[dict]:
    """For each of ``settings.sizes``: a linear head on the frozen backbone's features of the first seed's
    ``choose_at`` draw, scored on validation, and the backbone's milliseconds per image at that size."""
    labeled = task.pool.subset(picks[(settings.choose_at, 0)])
    rows = []
    for size in settings.sizes:
        x, seconds = embed(backbone, labeled, size, device, amp)
        val_x, val_seconds = embed(backbone, task.val, size, device, amp)
        probe = linear_probe(x, labeled.labels, val_x, task.val.labels, settings.weight_decays, seed=0)
        ms = 1000 * (seconds + val_seconds) / (len(labeled) + len(task.val))
        rows.append(
            {"size": size, "val_accuracy": probe.val_accuracy, "weight_decay": probe.weight_decay, "ms_per_image": ms}
        )
    return rows


def best_size(rows: list[dict]) -> int:
    """The input size of :func:`choose_size`'s rows with the best validation accuracy (the smallest of equals)."""
    return max(sorted(rows, key=lambda r: r["size"]), key=lambda r: r["val_accuracy"])["size"]


def size_line(rows: list[dict], size: int) -> str:
    """One line on the input size chosen from :func:`choose_size`'s rows: its validation accuracy and cost
    against the next best size's."""
    chosen = next(r for r in rows if r["size"] == size)
    others = sorted((r for r in rows if r["size"] != size), key=lambda r: -r["val_accuracy"])
    said = f"input size {size} px: validation {100 * chosen['val_accuracy']:.1f}% at {chosen['ms_per_image']:.1f} ms an image"
    if others:
        o = others[0]
        said += (
            f", against {100 * o['val_accuracy']:.1f}% at {o['ms_per_image']:.1f} ms for {o['size']} px, the next best"
        )
    return said + f"; {len(rows)} sizes tried on validation"


def imagenet_rows(
    backbone: Backbone,
    size: int,
    task: Task,
    picks: dict,
    settings: TransferSettings,
    device: torch.device,
    amp: str = "off",
) -> list[dict]:
    """The backbone's row of the curve at input ``size``: features of every drawn image once (the union of all
    draws), then a linear head per (label budget, seed), its weight decay chosen on validation."""
    used = torch.unique(torch.cat(list(picks.values())))
    where = torch.full((len(task.pool),), -1, dtype=torch.long)
    where[used] = torch.arange(len(used))
    start = time.perf_counter()
    pool_x, _ = embed(backbone, task.pool.subset(used), size, device, amp)
    val_x, _ = embed(backbone, task.val, size, device, amp)
    test_x, _ = embed(backbone, task.test, size, device, amp)
    per_image = (time.perf_counter() - start) / (len(used) + len(task.val) + len(task.test))
    rows = []
    for (n, seed), index in picks.items():
        begin = time.perf_counter()
        probe = linear_probe(
            pool_x[where[index]], task.pool.labels[index], val_x, task.val.labels, settings.weight_decays, seed
        )
        seconds = time.perf_counter() - begin + per_image * len(index)  # its own images' features, and the head
        rows.append(
            {
                "method": f"{backbone.name} (ImageNet)",
                "trains": "head",
                "lr": 1e-2,
                "labels_per_class": n,
                "seed": seed,
                "size": size,
                "weight_decay": probe.weight_decay,
                "val_accuracy": probe.val_accuracy,
                "test_accuracy": probe.accuracy(test_x, task.test.labels),
                "test_correct": probe.correct(test_x, task.test.labels),
                "test_images": len(task.test),
                "seconds": seconds,
            }
        )
    return rows


def imagenet_info(backbone: Backbone, size: int) -> dict[str, object]:
    """What the ImageNet row differs in from the EX-1 rows besides its pretraining data: the network and its size,
    and the input size it sees (its backbone is always frozen), for :func:`cifarkit.report.commentary.transfer`."""
    return {
        "name": f"{backbone.name} (ImageNet)",
        "params": sum(p.numel() for p in backbone.net.parameters()),
        "size": size,
        "ex1_params": sum(p.numel() for p in create_model("ex1", 10).parameters()),
    }


def headline(table, winners: dict[str, dict], size: int | None) -> dict[str, object]:
    """The numbers notebook 09 leaves in its summary: each method's mean test accuracy at each budget, the
    settings chosen on validation, and the ImageNet backbone's input size."""
    out: dict[str, object] = {
        f"test_accuracy[{r['method']}, {r['labels_per_class']}]": r["test_accuracy"] for r in table.to_dict("records")
    }
    out.update({f"chosen[{m}]": f"trains {r['trains']}, lr {r['lr']:g}" for m, r in winners.items()})
    if size is not None:
        out["imagenet_input_size"] = size
    return out
