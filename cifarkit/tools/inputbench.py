"""``cifarkit input-bench``: training throughput of (a) a seed-style PIL/DataLoader pipeline, (b) the cifarkit
device loader and (c) the training step alone on a fixed batch, measured in one run on one model; on CUDA/ROCm,
where the step is replayed as a CUDA graph as ``train`` does, also (d) the cifarkit loader with an eager step."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from cifarkit.config import TrainConfig
from cifarkit.data import default_data_dir, load_dataset
from cifarkit.device import (
    configure_threads,
    resolve_amp,
    resolve_channels_last,
    resolve_cuda_graphs,
    resolve_device,
    seed_everything,
    synchronize,
)
from cifarkit.errors import ConfigError, DataError
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import create_model, default_input_size
from cifarkit.speedrun.course import seed_style_loader
from cifarkit.tools.settings import InputBenchSettings
from cifarkit.train import make_optimizer, step_graph, train_step


def cycle(make_iter: Callable[[], Iterator]) -> Iterator:
    """Endless batches, starting a new epoch whenever one ends (run_bench refuses a batch larger than the
    training split first, so no epoch is empty)."""
    while True:
        yield from make_iter()


def time_training(
    model: nn.Module,
    batches: Iterator,
    device: torch.device,
    steps: int,
    warmup: int,
    amp: str = "off",
    graphs: bool = False,
) -> tuple[float, float]:
    """Images per second of ``steps`` optimizer steps fed by ``batches``, timed after ``warmup`` steps, and the
    seconds those warm-up steps took (first-call kernel selection, allocation and, with ``graphs``, the CUDA
    graph's capture: reported, never counted)."""
    opt = make_optimizer(model, TrainConfig())
    loss_fn = nn.CrossEntropyLoss()
    graph = step_graph(model, loss_fn, device, amp, graphs)
    model.train()

    def step() -> int:
        x, y = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        train_step(model, x, y, opt, loss_fn, device, amp, graph=graph)
        return y.shape[0]

    synchronize(device)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize(device)
    warmed = time.perf_counter() - start
    start = time.perf_counter()
    images = sum(step() for _ in range(steps))
    synchronize(device)
    return images / (time.perf_counter() - start), warmed


def run_bench(
    settings: InputBenchSettings,
    dataset: str = "cifar10",
    data_dir: str | None = None,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Measure (a) seed-style, (b) cifarkit loader, (c) step limit, interleaved over ``settings.rounds``; medians
    and ratios."""
    model, batch_size, steps, workers, rounds = (
        settings.model,
        settings.batch_size,
        settings.steps,
        settings.workers,
        settings.rounds,
    )
    seed_everything(0)
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    root = Path(data_dir) if data_dir else default_data_dir()
    ds = load_dataset(dataset, root)
    if ds.train is None:
        raise DataError(f"{dataset} has no train split to benchmark; give a dataset with PATH/train/<class>/ images")
    if batch_size > len(ds.train):
        raise ConfigError(
            f"--batch-size {batch_size} is larger than {dataset}'s {len(ds.train)} training images; "
            f"use at most {len(ds.train)}"
        )
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
    warmup = max(5, steps // 10)  # past a CUDA graph's eager warm-up and capture
    graphs = resolve_cuda_graphs(None, dev, amp)  # as `train` steps on this device
    seed_batches = cycle(lambda: ((finish(x.to(dev)), y) for x, y in seed_loader))
    cases = [
        ("seed_style_img_s", lambda: seed_batches, graphs),
        ("cifarkit_img_s", lambda: cycle(lambda: iter(ours)), graphs),
        ("step_limit_img_s", lambda: cycle(lambda: iter([(fixed_x, fixed_y)])), graphs),
    ]
    if graphs:  # what the graph buys, side by side
        cases.append(("cifarkit_without_graphs_img_s", lambda: cycle(lambda: iter(ours)), False))
    runs: dict[str, list[float]] = {key: [] for key, _, _ in cases}
    warmups: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for key, batches, graphed in cases:
            rate, warmed = time_training(copy.deepcopy(base), batches(), dev, steps, warmup, amp, graphed)
            runs[key].append(rate)
            warmups[key].append(warmed)
            log(f"round {r + 1}/{rounds} {key[:-6]:>12}: {rate:8.0f} img/s")
    result: dict = {k: statistics.median(v) for k, v in runs.items()}
    result["speedup_vs_seed"] = result["cifarkit_img_s"] / result["seed_style_img_s"]
    result["fraction_of_limit"] = result["cifarkit_img_s"] / result["step_limit_img_s"]
    if graphs:
        result["graphs_speedup"] = result["cifarkit_img_s"] / result["cifarkit_without_graphs_img_s"]
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
        cuda_graphs=graphs,
        threads=torch.get_num_threads(),
        spread={k: [min(v), max(v)] for k, v in runs.items()},
        warmup_steps=warmup,
        warmup_seconds={k[: -len("_img_s")]: statistics.median(v) for k, v in warmups.items()},
    )
    log(
        f"seed-style {result['seed_style_img_s']:.0f} img/s | cifarkit {result['cifarkit_img_s']:.0f} img/s | "
        f"step limit {result['step_limit_img_s']:.0f} img/s"
    )
    log(
        f"cifarkit / seed-style = {result['speedup_vs_seed']:.2f}x, cifarkit / step limit = {result['fraction_of_limit']:.2f}"
    )
    if graphs:
        log(f"the CUDA graph step / the eager step = {result['graphs_speedup']:.2f}x")
    return result
