"""The course's EX-1 recipe as the students ran it: the yardstick ``cifarkit speedrun --baseline``
races the speedrun recipe against (same validation split, same target, same process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .bench import seed_style_loader
from .data import Dataset, Split
from .device import synchronize
from .evaluation import evaluate
from .loader import DeviceLoader, Normalizer
from .models import create_model


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
) -> dict[str, Any]:
    """The course's EX-1 recipe (Adam 1e-3, batch 128, no augmentation) on a seed-style pipeline
    (torchvision dataset + PIL transforms + DataLoader workers), trained until validation top-1
    reaches ``target``. Validation passes are not timed, as for the speedrun.
    """

    torch.manual_seed(0)
    loader = seed_style_loader(spec, dataset, 128, workers, data_dir, augment=False, indices=train_idx)
    model = create_model("ex1", dataset.num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    val_loader = DeviceLoader(val, 500, Normalizer(dataset.mean, dataset.std, device))
    seconds, curve = 0.0, []
    for epoch in range(1, max_epochs + 1):
        model.train()
        synchronize(device)
        t0 = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = criterion(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        synchronize(device)
        seconds += time.perf_counter() - t0
        top1 = evaluate(model, val_loader, device)["top1"]
        curve.append({"epoch": epoch, "seconds": seconds, "val_top1": top1})
        log(f"baseline epoch {epoch:>3} {seconds:7.1f}s val_top1 {top1:.4f}")
        if top1 >= target:
            return {"baseline_seconds": seconds, "baseline_epochs": epoch, "baseline_curve": curve}
    return {"baseline_seconds": None, "baseline_epochs": max_epochs, "baseline_curve": curve}
