"""The course's EX-1 recipe as the students ran it, on their pipeline (a per-item dataset with PIL
transforms and DataLoader workers): the yardstick ``cifarkit speedrun --baseline`` races the speedrun
recipe against (same validation split, same target, same process), and what ``cifarkit input-bench`` compares
cifarkit's device loader with."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.config import recipe
from cifarkit.data import CIFAR_ARCHIVES, Dataset, Split, resolve_user_path
from cifarkit.device import synchronize
from cifarkit.errors import DataError
from cifarkit.evaluate import evaluate
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import create_model
from cifarkit.train import make_optimizer, train_step


class PILArrayDataset(torch.utils.data.Dataset):
    """What torchvision's CIFAR datasets do per item: uint8 array -> PIL image -> transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def seed_style_loader(
    spec: str,
    dataset: Dataset,
    batch_size: int,
    workers: int,
    data_dir: Path,
    augment: bool = True,
    indices: torch.Tensor | None = None,
):
    """The pipeline the course seeds used: a per-item dataset with PIL transforms and DataLoader workers.

    Args:
        spec: the dataset spec (folders are read with torchvision's ``ImageFolder``, decoding every epoch).
        dataset: the loaded dataset (its statistics, and its images for in-memory specs).
        batch_size: images per batch.
        workers: DataLoader worker processes.
        data_dir: where CIFAR archives live.
        augment: random crop (reflect padding 4) and flip, as in the seeds' augmented runs; the course's
            EX-1 recipe trains without them.
        indices: keep only these training images (a train/validation split made elsewhere).
    """
    from torchvision import datasets, transforms

    size = dataset.image_size
    steps = [transforms.RandomCrop(size, padding=4, padding_mode="reflect"), transforms.RandomHorizontalFlip()]
    tf = transforms.Compose(
        [*(steps if augment else []), transforms.ToTensor(), transforms.Normalize(dataset.mean, dataset.std)]
    )
    kind, _, arg = spec.partition(":")
    if kind == "folder":
        ds = datasets.ImageFolder(str(resolve_user_path(arg) / "train"), transform=tf)
    elif kind in CIFAR_ARCHIVES and not arg:
        cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
        ds = cls(str(data_dir), train=True, transform=tf, download=False)
    else:
        ds = PILArrayDataset(dataset.train.images, dataset.train.labels, tf)
    if indices is not None:
        targets = torch.as_tensor(ds.targets if hasattr(ds, "targets") else ds.labels)
        if not torch.equal(targets, dataset.train.labels):
            raise DataError(
                f"{spec}: torchvision lists the images in another order than cifarkit; cannot split it alike"
            )
        ds = torch.utils.data.Subset(ds, indices.tolist())
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True, persistent_workers=workers > 0
    )


def course_baseline(
    spec: str,
    dataset: Dataset,
    train_idx: torch.Tensor,
    val: Split,
    target: float,
    device: torch.device,
    data_dir,
    max_epochs: int = 30,
    workers: int = 2,
    log: Callable[[str], None] = print,
    seed: int = 0,
) -> dict[str, Any]:
    """The course's EX-1 recipe (``course-ex1`` in :data:`cifarkit.config.RECIPES`) on a seed-style pipeline
    (torchvision dataset + PIL transforms + DataLoader workers), trained until validation top-1
    reaches ``target``. Validation passes are not timed, as for the speedrun.
    """
    cfg = recipe("course-ex1", seed=seed)
    torch.manual_seed(seed)
    loader = seed_style_loader(spec, dataset, cfg.batch_size, workers, data_dir, augment=False, indices=train_idx)
    model = create_model(cfg.model, dataset.num_classes).to(device)
    optimizer = make_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss()
    val_loader = DeviceLoader(val, 500, Normalizer(dataset.mean, dataset.std, device))
    seconds, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        model.train()
        synchronize(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            train_step(model, x, y, optimizer, criterion, device)
        synchronize(device)
        seconds += time.perf_counter() - t0
        top1 = evaluate(model, val_loader, device)["accuracy"]
        curve.append({"epoch": epoch, "seconds": seconds, "val_accuracy": top1})
        log(f"baseline epoch {epoch:>3} {seconds:7.1f}s val_accuracy {top1:.4f}")
        if top1 >= target:
            return {"baseline_seconds": seconds, "baseline_epochs": epoch, "baseline_curve": curve}
    return {"baseline_seconds": None, "baseline_epochs": max_epochs, "baseline_curve": curve}
