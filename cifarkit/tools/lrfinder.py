"""A learning-rate range test (Leslie Smith's "LR finder"): train a fresh network for a few hundred steps while the
learning rate grows exponentially from tiny to huge, and watch the training loss. It falls slowly at first, then
fast, then turns and explodes; a rate well below the turn, where the loss still falls fast, is a good peak rate."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from cifarkit.config import TrainConfig, check_value, number, positive_float
from cifarkit.data import Dataset
from cifarkit.errors import ConfigError, TrainingDiverged
from cifarkit.train import prepare, train_step

SMOOTHING = 0.98  # the loss is averaged exponentially over about 50 steps: one batch's loss is noisy
DIVERGED = 4.0  # the sweep stops when the smoothed loss exceeds this many times its lowest value


@dataclass(frozen=True)
class LrSweep:
    """One range test: the rate and loss at every step, and what it suggests."""

    lrs: list[float]
    losses: list[float]  # each step's training loss
    smoothed: list[float]  # exponentially averaged, corrected for the average's start at zero
    lowest: float  # the rate at which the smoothed loss was lowest
    suggestion: float  # a tenth of ``lowest``: still on the fast-falling part of the curve, before the turn
    stopped: str  # "diverged" (the loss exploded) or "end" (the sweep reached its last rate)
    optimizer: str
    batch_size: int


def lr_range_test(
    cfg: TrainConfig, dataset: Dataset, start: float = 1e-6, end: float = 1.0, steps: int = 200
) -> LrSweep:
    """Train ``cfg``'s network (fresh, seeded, on ``dataset``'s training images less its validation split, with
    ``cfg``'s optimizer, augmentation and precision, no schedule) for up to ``steps`` steps, the rate growing by
    the same factor each step from ``start`` to ``end``. Nothing is saved: the network is thrown away."""
    check_value("start", start, positive_float)  # one line for text, NaN or a float step count, as the CLI says it
    check_value("end", end, positive_float)
    check_value("steps", steps, number(int, 10, words="an integer >= 10: fewer say nothing (a few hundred is usual)"))
    if start >= end:
        raise ConfigError(f"learning-rate range {start:g} to {end:g}: use start < end, e.g. 1e-6 to 1")
    run = prepare(cfg, dataset)
    batches = itertools.chain.from_iterable(run.train_loader for _ in itertools.count())  # epoch after epoch
    factor = (end / start) ** (1 / (steps - 1))
    lrs, losses, smoothed, average, stopped = [], [], [], 0.0, "end"
    for step in range(steps):
        lr = start * factor**step
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        loss, _ = train_step(run.model, x, y, run.optimizer, run.criterion, run.device, run.amp, run.scaler)
        value = float(loss.detach())  # the sweep reads every step's loss, so it waits for the device each step
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        lrs.append(lr)
        losses.append(value)
        smoothed.append(average / (1 - SMOOTHING ** (step + 1)))
        if not math.isfinite(value) or smoothed[-1] > DIVERGED * min(smoothed):
            stopped = "diverged"
            break
    finite = [(s, lr) for s, lr in zip(smoothed, lrs, strict=True) if math.isfinite(s)]
    if not finite:  # no rate gave a usable loss: there is nothing to suggest, and a made-up rate would mislead
        raise TrainingDiverged(
            f"the range test's first step at lr {start:g} already gave a non-finite loss; check the data and "
            "the network, or start the sweep lower"
        )
    lowest = min(finite)[1]
    return LrSweep(lrs, losses, smoothed, lowest, lowest / 10, stopped, cfg.optimizer, cfg.batch_size)
