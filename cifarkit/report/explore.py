"""Looking at a dataset before training: class balance, per-class samples, channel statistics."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from cifarkit.config import check_value, positive_int
from cifarkit.data import (
    CIFAR10_CLASSES,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    Dataset,
    Split,
    channel_stats,
)


def class_counts(ds: Dataset):
    """Images per class and split, as a DataFrame (classes as rows)."""
    cols = {}
    for name in ("train", "test"):
        split = getattr(ds, name)
        if split is not None:
            cols[name] = torch.bincount(split.labels, minlength=ds.num_classes).tolist()
    return pd.DataFrame(cols, index=list(ds.classes))


def samples_per_class(
    split: Split, classes: Sequence[str], per_class: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``per_class`` random images of each class (class-major order) and their titles, for
    :func:`cifarkit.report.figures.image_grid`."""
    check_value("per_class", per_class, positive_int)
    g = torch.Generator().manual_seed(seed)
    images, titles = [], []
    for c, name in enumerate(classes):
        idx = torch.nonzero(split.labels == c).flatten()
        pick = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        images.append(split.images[pick].numpy())
        titles += [name] * len(pick)
    return np.concatenate(images), titles


def stats_table(ds: Dataset, published: dict[str, tuple] | None = None):
    """Per-channel mean/std computed from the training images next to the published values."""
    split = ds.train if ds.train is not None else ds.test
    mean, std = channel_stats(split.images)
    table = pd.DataFrame({"computed_mean": mean, "computed_std": std}, index=["R", "G", "B"])
    if published:
        table["published_mean"] = published["mean"]
        table["published_std"] = published["std"]
    return table


def published_stats(ds: Dataset) -> dict[str, tuple] | None:
    """The published CIFAR statistics that apply to ``ds`` (CIFAR-10 also for folder copies of it)."""
    if ds.name.startswith("cifar100"):
        return {"mean": CIFAR100_MEAN, "std": CIFAR100_STD}
    if ds.name == "cifar10" or tuple(ds.classes) == CIFAR10_CLASSES:
        return {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    return None
