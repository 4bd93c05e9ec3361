"""``cifarkit bench``: training throughput of (a) a seed-style PIL/DataLoader pipeline, (b) the cifarkit
device loader and (c) the training step alone on a fixed batch, measured in one run on one model."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data import CIFAR_ARCHIVES, Dataset, default_data_dir, load_dataset, resolve_user_path
from .device import configure_threads, resolve_amp, resolve_channels_last, resolve_device, seed_everything, synchronize
from .engine import make_optimizer
from .errors import DataError
from .evaluation import autocast
from .loader import DeviceLoader, Normalizer
from .models import create_model, default_input_size


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


def cycle(make_iter: Callable[[], Iterator]) -> Iterator:
    """Endless batches, starting a new epoch whenever one ends."""
    while True:
        yield from make_iter()


def time_training(
    model: nn.Module, batches: Iterator, device: torch.device, steps: int, warmup: int, amp: str = "off"
) -> float:
    """Images per second of ``steps`` optimizer steps fed by ``batches`` (after ``warmup`` untimed steps)."""
    opt = make_optimizer(model, TrainConfig())
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step() -> int:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return y.shape[0]

    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    synchronize(device)
    return images / (time.perf_counter() - start)


def run_bench(
    dataset: str = "cifar10",
    model: str = "ex1",
    batch_size: int = 128,
    steps: int = 60,
    workers: int = 2,
    rounds: int = 3,
    data_dir: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Measure (a) seed-style, (b) cifarkit loader, (c) step limit, interleaved over ``rounds``; medians and ratios."""
    seed_everything(0)
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    root = Path(data_dir) if data_dir else default_data_dir()
    ds = load_dataset(dataset, root)
    if ds.train is None:
        raise ValueError(f"{dataset} has no train split to benchmark")
    size = default_input_size(model)
    amp = resolve_amp("auto", dev)
    channels_last = resolve_channels_last(None, dev)
    base = create_model(model, ds.num_classes, image_size=size).to(dev)
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    norm = Normalizer(ds.mean, ds.std, dev, size, channels_last=channels_last)
    ours = DeviceLoader(ds.train, batch_size, norm, train=True, augment=("crop", "flip"), seed=0)
    seed_loader = seed_style_loader(dataset, ds, batch_size, workers, root)
    finish = norm.finish  # seed-style batches arrive normalised at the data size: same resize and memory format
    fixed_x, fixed_y = next(iter(ours))
    warmup = max(3, steps // 10)
    runs: dict[str, list[float]] = {"seed_style_img_s": [], "cifarkit_img_s": [], "step_limit_img_s": []}
    seed_batches = cycle(lambda: ((finish(x.to(dev)), y) for x, y in seed_loader))
    for r in range(rounds):
        for key, batches in (
            ("seed_style_img_s", seed_batches),
            ("cifarkit_img_s", cycle(lambda: iter(ours))),
            ("step_limit_img_s", cycle(lambda: iter([(fixed_x, fixed_y)]))),
        ):
            rate = time_training(copy.deepcopy(base), batches, dev, steps, warmup, amp)
            runs[key].append(rate)
            log(f"round {r + 1}/{rounds} {key[:-6]:>12}: {rate:8.0f} img/s")
    result: dict = {k: statistics.median(v) for k, v in runs.items()}
    result["speedup_vs_seed"] = result["cifarkit_img_s"] / result["seed_style_img_s"]
    result["fraction_of_limit"] = result["cifarkit_img_s"] / result["step_limit_img_s"]
    result.update(
        model=model,
        dataset=dataset,
        batch_size=batch_size,
        steps=steps,
        rounds=rounds,
        workers=workers,
        device=str(dev),
        amp=amp,
        channels_last=channels_last,
        threads=torch.get_num_threads(),
        spread={k: [min(v), max(v)] for k, v in runs.items()},
    )
    log(
        f"seed-style {result['seed_style_img_s']:.0f} img/s | cifarkit {result['cifarkit_img_s']:.0f} img/s | "
        f"step limit {result['step_limit_img_s']:.0f} img/s"
    )
    log(
        f"cifarkit / seed-style = {result['speedup_vs_seed']:.2f}x, cifarkit / step limit = {result['fraction_of_limit']:.2f}"
    )
    return result
