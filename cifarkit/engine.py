"""Training: ``train_one_epoch`` and ``fit`` (validation, early stopping, checkpoints, resume).

Evaluation lives below it in :mod:`cifarkit.evaluation`, a finished run's reports in :mod:`cifarkit.results`."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .data import Dataset, Split, load_dataset
from .device import (
    IntervalTimer,
    configure_determinism,
    configure_threads,
    env_info,
    resolve_amp,
    resolve_channels_last,
    resolve_device,
    seed_everything,
    synchronize,
)
from .distributed import Dist, per_rank_batch, shard
from .errors import CheckpointError, ConfigError, DataError, TrainingDiverged, short_list
from .evaluation import autocast, evaluate
from .loader import DeviceLoader, Normalizer
from .models import create_model, default_input_size, load_imagenet_weights
from .profiler import RunProfiler
from .results import finish_run
from .runs import append_jsonl, load_checkpoint, make_run_dir, save_checkpoint, write_json
from .runs import checkpoint_meta as run_checkpoint_meta
from .tblog import TensorBoardLog

# ----------------------------------------------------------------------------- small pieces


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum, Nesterov) with weight decay, from the config."""
    params = model.parameters()
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, weight_decay=cfg.weight_decay
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step scheduler (cosine or one-cycle over the whole run), or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    return None


@dataclass
class EpochStats:
    """What one training epoch measured."""

    loss: float
    accuracy: float
    images: int
    seconds: float
    data_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    model: nn.Module,
    loader: DeviceLoader,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    scheduler: Any = None,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> EpochStats:
    """One pass over ``loader``; the scheduler steps per batch. ``on_step(step, n)`` sees each step.

    Nothing in the step waits for the device (no ``.item()``, no host copies): loss and accuracy
    accumulate on the device and are read once at the end, so a GPU is never left idle by Python.
    The data-wait share is timed with :class:`IntervalTimer` (CUDA events on GPUs).
    """
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    images = 0
    timer = IntervalTimer(device)
    synchronize(device)
    start = time.perf_counter()
    it = iter(loader)
    step = 0
    while True:
        timer.start()
        try:
            x, y = next(it)
        except StopIteration:
            timer.stop()
            break
        timer.stop()
        with autocast(device, amp):
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        images += y.shape[0]
        if on_step is not None:
            on_step(step, int(y.shape[0]))
        step += 1
    synchronize(device)
    seconds = time.perf_counter() - start
    return EpochStats(
        float(total_loss) / max(images, 1), float(correct) / max(images, 1), images, seconds, timer.seconds()
    )


# ----------------------------------------------------------------------------- fit


@dataclass
class Prepared:
    """Everything ``fit`` builds before the first step."""

    cfg: TrainConfig
    device: torch.device
    dataset: Dataset
    train: Split
    val: Split
    model: nn.Module
    model_kwargs: dict
    image_size: int
    normalizer: Normalizer
    history: list[dict] = field(default_factory=list)


def prepare(
    cfg: TrainConfig, dataset: Dataset | None = None, data_dir: str | None = None, dist: Dist | None = None
) -> Prepared:
    """Seed, pick the device (a distributed rank's own), load and split the data, build the model."""
    dist = dist or Dist()
    seed_everything(cfg.seed)
    configure_determinism(cfg.deterministic)
    device = dist.device or resolve_device(cfg.device)
    if device.type == "cpu":
        configure_threads(processes=dist.local_world_size)
    if dataset is None:
        dataset = load_dataset(cfg.dataset, data_dir)
    if dataset.train is None:
        raise ConfigError(f"dataset {cfg.dataset} has no train split; training needs {cfg.dataset}/train/<class>/")
    train, val = dataset.train.hold_out(cfg.val_fraction, cfg.seed)
    if len(val) == 0:
        raise DataError(
            f"{cfg.dataset}: no image is left for the validation split ({len(dataset.train)} training images, "
            "one per class); give every class at least 2 training images"
        )
    image_size = cfg.image_size or default_input_size(cfg.model)
    model_kwargs = {"image_size": image_size, **(cfg.model_kwargs or {})}
    model = create_model(cfg.model, dataset.num_classes, **model_kwargs)
    if cfg.pretrained:
        load_imagenet_weights(model)
    model = model.to(device)
    channels_last = resolve_channels_last(cfg.channels_last, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(dataset.mean, dataset.std, device, image_size, channels_last)
    return Prepared(
        cfg,
        device,
        dataset,
        train,
        val,
        model,
        model_kwargs,
        image_size,
        normalizer,
    )


def eval_loader(split: Split, p: Prepared, batch_size: int | None = None) -> DeviceLoader:
    """A deterministic, unaugmented loader over ``split``."""
    return DeviceLoader(split, batch_size or max(p.cfg.batch_size, 256), p.normalizer)


def checkpoint_meta(p: Prepared, epoch: int) -> dict[str, Any]:
    """Everything a checkpoint of this run needs to be used on its own."""
    return run_checkpoint_meta(
        p.cfg.model, p.model_kwargs, p.dataset, p.cfg.dataset, p.image_size, p.cfg.to_dict(), epoch
    )


def is_better(value: float, best: float | None, monitor: str) -> bool:
    """Whether ``value`` of the monitored metric improves on ``best``."""
    if best is None:
        return True
    return value < best if monitor == "val_loss" else value > best


def format_epoch(r: dict, epochs: int) -> str:
    """The one log line printed per epoch."""
    return (
        f"epoch {r['epoch']:>3}/{epochs} train_loss {r['train_loss']:.4f} train_acc {r['train_accuracy']:.4f} "
        f"val_loss {r['val_loss']:.4f} val_acc {r['val_accuracy']:.4f} val_top5 {r['val_top5']:.4f} "
        f"lr {r['lr']:.2e} {r['images_per_s']:.0f} img/s data_wait {r['data_wait_s']:.2f}s {r['epoch_time_s']:.1f}s"
    )


def check_resume(state: dict[str, Any], epochs: int, path: str | Path, world_size: int = 1) -> None:
    """Refuse, in one line and before anything is written, a resume that cannot continue the run as asked.

    The rule: a run whose learning rate follows a schedule (``onecycle``, ``cosine``) keeps the number
    of epochs it started with, because the whole schedule was laid out for that length at step 0;
    a run without a schedule may be extended. A finished (or early-stopped) run has nothing to resume.
    """
    saved = state["config"]
    done = int(state["epoch"])
    trained_by = int(state["training"].get("world_size", 1))
    if trained_by != world_size:
        how = (
            f"{trained_by} processes in all (torchrun --nproc_per_node {trained_by} -m cifarkit train --resume {path}, "
            "or as many over several --nnodes)"
            if trained_by > 1
            else f"one process (python -m cifarkit train --resume {path})"
        )
        raise ConfigError(
            f"{path} was trained by {trained_by} process(es) and this launch has {world_size}; last.pt holds each "
            f"process's own data order and augmentation stream, so resume it with {how}"
        )
    if epochs != saved["epochs"] and saved["scheduler"] != "none":
        raise ConfigError(
            f"cannot change epochs from {saved['epochs']} to {epochs} when resuming: the {saved['scheduler']} "
            "learning-rate schedule was fixed for the run's length at its start; resume without --epochs, "
            "or start a new run with the length you want"
        )
    t = state["training"]
    if saved["patience"] > 0 and t["stale"] >= saved["patience"]:
        raise ConfigError(f"{path}: the run stopped early at epoch {done}; there is nothing to resume")
    if epochs <= done:
        raise ConfigError(
            f"{path} has already trained {done} epoch(s); nothing to resume for {epochs} epochs "
            + ("(pass --epochs above it to train longer)" if saved["scheduler"] == "none" else "(the run is finished)")
        )


def fit(
    cfg: TrainConfig,
    out: str | Path = "runs",
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    test: bool = True,
    dist: Dist | None = None,
) -> Path:
    """Train ``cfg.model`` on ``cfg.dataset``; return the run folder.

    The folder gets config.json, env.json, metrics.jsonl (a line per epoch), best.pt (best
    validation ``cfg.monitor``), last.pt (full training state, every ``checkpoint_every``
    epochs), train.json, test.json (best.pt on the test split) and figures/.

    Args:
        cfg: the run's configuration.
        out: parent folder of the run folder.
        dataset: an already loaded dataset (else ``cfg.dataset`` is loaded).
        data_dir: where datasets are stored.
        resume: a last.pt to continue from; the run continues in that checkpoint's folder.
        log: where the per-epoch lines go.
        progress: tqdm bars (default: only when stdout is a terminal).
        test: evaluate best.pt on the test split at the end. Model selection sweeps pass False and
            call :func:`evaluate_run` on the winner only, so the test split never guides a choice.
        dist: this process's rank in a torchrun launch (:func:`cifarkit.distributed.setup`). Each rank
            trains on its shard with ``cfg.batch_size / world_size`` images per step (the global batch
            stays ``cfg.batch_size``); rank 0 validates, writes and logs; every rank returns the folder.
    """
    dist = dist or Dist()
    if not dist.is_main:
        log = _quiet
        progress = False
    state = None
    if resume is not None:
        state = load_checkpoint(resume, wanted="last.pt")
        if "training" not in state:
            raise CheckpointError(f"{resume} holds weights only; resume from the run's last.pt")
        check_resume(state, cfg.epochs, resume, dist.world_size)
        cfg = TrainConfig.from_dict({**state["config"], "epochs": cfg.epochs})
    p = prepare(cfg, dataset, data_dir, dist)
    p.model = dist.sync_batchnorm(p.model, cfg.sync_bn)
    if dist.enabled:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout draws its own masks on each rank
    train_loader = DeviceLoader(
        shard(p.train, dist.rank, dist.world_size),
        per_rank_batch(cfg.batch_size, dist.world_size),
        p.normalizer,
        train=True,
        augment=cfg.augmentations,
        crop_padding=cfg.crop_padding,
        cutout_size=cfg.cutout_size,
        seed=cfg.seed + dist.rank,  # each rank draws its own order and augmentation
    )
    val_loader = eval_loader(p.val, p) if dist.is_main else None
    if len(train_loader) == 0:
        raise ConfigError(
            f"no training batches: {train_loader.num_images} images per process, batch_size {cfg.batch_size}"
        )
    optimizer = make_optimizer(p.model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(train_loader))
    amp = resolve_amp(cfg.amp, p.device)
    scaler = torch.amp.GradScaler(p.device.type) if amp == "fp16" else None
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    rows: list[dict] = []
    best_value: float | None = None
    best_epoch: int | None = None
    stale = 0
    start_epoch = 1

    if state is not None:
        run_dir = Path(resume).resolve().parent
        t = state["training"]
        mine = t["ranks"][dist.rank] if dist.enabled else t  # this rank's data order and random stream
        if list(state["classes"]) != list(p.dataset.classes):
            raise CheckpointError(
                f"{resume} was trained on the classes {short_list(state['classes'])} but {cfg.dataset} has "
                f"{short_list(p.dataset.classes)}; resume on the dataset the run started with"
            )
        p.model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(t["optimizer"])
        if scheduler is not None and t.get("scheduler"):
            scheduler.load_state_dict(t["scheduler"])
        if scaler is not None and t.get("scaler"):
            scaler.load_state_dict(t["scaler"])
        train_loader.load_state_dict(mine["loader"])
        torch.set_rng_state(mine["torch_rng"])
        rows, best_value, best_epoch, stale = list(t["rows"]), t["best_value"], t["best_epoch"], t["stale"]
        start_epoch = state["epoch"] + 1
        if dist.is_main:
            (run_dir / "metrics.jsonl").unlink(missing_ok=True)  # rewrite: it may hold epochs after the checkpoint
            for r in rows:
                append_jsonl(run_dir / "metrics.jsonl", r)
        log(f"resuming {run_dir} at epoch {start_epoch}")
    else:
        run_dir = dist.broadcast(make_run_dir(out, cfg.model, cfg.dataset) if dist.is_main else None)
    resumed_after = start_epoch - 1 if state else None
    # rank 0's telemetry in perf/ as always; every other rank's in perf/rank<N>/
    perf_dir = run_dir / "perf" if dist.is_main else run_dir / "perf" / f"rank{dist.rank}"
    profiler = (
        RunProfiler(perf_dir, p.device, cfg, resumed_after=resumed_after)
        if cfg.telemetry or cfg.torch_profile_steps
        else None
    )
    # torch.compile wraps the same parameters; checkpoints keep saving the plain module's state dict
    model = torch.compile(p.model) if cfg.compile else p.model
    net = dist.wrap(model)  # DistributedDataParallel when launched by torchrun
    tb = write_run_start(run_dir, p, cfg, amp, dist, resumed_after) if dist.is_main else None
    use_bar = sys.stdout.isatty() if progress is None else progress
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs + 1):
        epoch_iter = _progress(train_loader, use_bar, f"epoch {epoch}")
        with profiler.phase("train", epoch) if profiler else contextlib.nullcontext() as hooks:
            stats = train_one_epoch(
                net, epoch_iter, optimizer, criterion, p.device, scheduler, amp, scaler, on_step=hooks
            )
            if hooks is not None:
                hooks.data_wait(stats.data_seconds)
        stats = all_ranks(stats, dist)
        row = None
        if dist.is_main:
            with profiler.phase("val", epoch) if profiler else contextlib.nullcontext():
                val = evaluate(model, val_loader, p.device, amp=amp)
            row = epoch_row(epoch, stats, val, optimizer)
            append_jsonl(run_dir / "metrics.jsonl", row)
            if tb is not None:
                tb.epoch(row, profiler.summaries if profiler else None)
            log(format_epoch(row, cfg.epochs))
        row = dist.broadcast(row)  # rank 0's validation decides for every rank
        rows.append(row)
        if not math.isfinite(stats.loss):
            if dist.is_main:
                finish_run(run_dir, p, rows, best_epoch, test, tb)  # train.json, test.json of the last good best.pt
            files = [f for f in ("best.pt", "last.pt") if (run_dir / f).is_file()]
            kept = (
                f"{' and '.join(files)} from before it are kept"
                if files
                else "no epoch finished cleanly, so no checkpoint was written"
            )
            raise TrainingDiverged(
                f"training diverged in epoch {epoch} (loss {stats.loss}); {kept} in {run_dir}; "
                "lower --lr (or add --scheduler onecycle for a warm-up) and train again"
            )
        value = row[cfg.monitor]
        if is_better(value, best_value, cfg.monitor):
            best_value, best_epoch, stale = value, epoch, 0
            if dist.is_main:
                save_checkpoint(run_dir / "best.pt", p.model, checkpoint_meta(p, epoch))
        else:
            stale += 1
        stop = cfg.patience > 0 and stale >= cfg.patience
        if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stop:
            ranks = dist.gather({"loader": train_loader.state_dict(), "torch_rng": torch.get_rng_state()})
            training = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                **ranks[0],
                "world_size": dist.world_size,
                **({"ranks": ranks} if dist.enabled else {}),
                "rows": rows,
                "best_value": best_value,
                "best_epoch": best_epoch,
                "stale": stale,
            }
            if dist.is_main:
                save_checkpoint(run_dir / "last.pt", p.model, checkpoint_meta(p, epoch), training)
        if stop:
            log(f"early stopping at epoch {epoch}: no {cfg.monitor} improvement for {cfg.patience} epochs")
            break
    if dist.is_main:
        finish_run(run_dir, p, rows, best_epoch, test, tb)
    dist.barrier()  # every rank returns once the run folder is complete
    return run_dir


def write_run_start(
    run_dir: Path, p: Prepared, cfg: TrainConfig, amp: str, dist: Dist, resumed_after: int | None
) -> TensorBoardLog:
    """config.json (the settings and what ``auto`` resolved to) and env.json; the run's TensorBoard log."""
    resolved = {
        "image_size": p.image_size,
        "model_kwargs": p.model_kwargs,
        "amp": amp,
        "device": str(p.device),
        "channels_last": p.normalizer.channels_last,
        **dist.describe(),
    }
    write_json(run_dir / "config.json", {**cfg.to_dict(), "resolved": resolved})
    write_json(
        run_dir / "env.json",
        {
            **env_info(p.device),
            **dist.describe(),
            "dataset_classes": list(p.dataset.classes),
            "train_images": len(p.train) // dist.world_size * dist.world_size,
            "val_images": len(p.val),
        },
    )
    return TensorBoardLog(run_dir, resumed_after=resumed_after)


def epoch_row(epoch: int, stats: EpochStats, val: dict, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """One line of metrics.jsonl."""
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "val_loss": val["loss"],
        "val_accuracy": val["top1"],
        "val_top5": val["top5"],
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": stats.images_per_s,
        "data_wait_s": stats.data_seconds,
        "epoch_time_s": stats.seconds,
        "val_time_s": val["testing_time"],
    }


def all_ranks(stats: EpochStats, dist: Dist) -> EpochStats:
    """One epoch's statistics over every rank: loss and accuracy over all their images, the slowest
    rank's time (the step waits for it), so ``images_per_s`` is the whole group's throughput."""
    if not dist.enabled:
        return stats
    loss_sum, correct, images = dist.sum([stats.loss * stats.images, stats.accuracy * stats.images, stats.images])
    n = max(images, 1)
    return EpochStats(loss_sum / n, correct / n, int(images), dist.max(stats.seconds), dist.max(stats.data_seconds))


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""


def _progress(loader: DeviceLoader, enabled: bool, desc: str):
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, leave=False)
