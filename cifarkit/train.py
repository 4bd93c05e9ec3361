"""Training: one step, one epoch (``train_one_epoch``) and a whole run (``fit``).

``fit`` is one loop: train an epoch, validate, keep the best checkpoint, save the state to resume from.
Everything else plugs in from outside through two small interfaces, so the loop reads the same with or
without them:

- :class:`Callback`: hardware telemetry, TensorBoard, figures and the progress bar see the run start,
  each phase's steps, each epoch's row and the end (:mod:`cifarkit.tools`, :mod:`cifarkit.report`).
- :class:`SingleProcess`: the handful of collectives data parallelism needs; one process here,
  :class:`cifarkit.tools.distributed.Dist` under torchrun.

The run folder's files are written and read through :mod:`cifarkit.runs`; the test split is scored by
:func:`cifarkit.predict.evaluate_run`.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.config import TrainConfig
from cifarkit.data import Dataset, Split, load_dataset
from cifarkit.device import (
    IntervalTimer,
    StepGraph,
    configure_determinism,
    configure_threads,
    env_info,
    resolve_amp,
    resolve_channels_last,
    resolve_cuda_graphs,
    resolve_device,
    seed_everything,
    synchronize,
)
from cifarkit.errors import ConfigError, DataError, TrainingDiverged, duration_text
from cifarkit.evaluate import autocast, evaluate
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import create_model, default_input_size, load_imagenet_weights
from cifarkit.predict import evaluate_run
from cifarkit.resume import restore, resume_state, save_training_state
from cifarkit.runs import (
    RunLock,
    append_jsonl,
    checkpoint_meta,
    epoch_row,
    format_epoch,
    make_run_dir,
    mark_complete,
    save_checkpoint,
    train_json,
    write_run_file,
)

# ----------------------------------------------------------------------------- one step, one epoch


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (momentum, Nesterov) with weight decay, from the config; on a CUDA/ROCm device
    the fused version, which updates every tensor in one kernel launch instead of a few per tensor."""
    params = list(model.parameters())
    fused = {"fused": True} if params and params[0].is_cuda else {}
    if cfg.optimizer == "sgd":
        nesterov = cfg.nesterov and cfg.momentum > 0
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov, weight_decay=cfg.weight_decay, **fused
        )
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step scheduler (cosine or one-cycle over the whole run), or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    return None


# fp16's gradient scaler, switched off: scale() returns the loss, step() is optimizer.step(), update() does nothing,
# so the step has one path whatever the precision (as nanoGPT's); prepare() gives fp16 a real one (or it underflows)
NO_SCALER = torch.amp.GradScaler("cpu", enabled=False)


def forward_backward(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    criterion: nn.Module,
    device: torch.device,
    amp: str = "off",
    scaler: torch.amp.GradScaler = NO_SCALER,
    cache: bool = True,
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of batch ``x, y`` and its gradients, added to each parameter's ``.grad``; returns (loss, logits).

    ``chunk`` > 0 sums the gradient over micro-batches of that many images (the CPU speedrun's large batches
    fit in cache so): each chunk's mean loss is weighted by its share of the batch, so the sum is the whole
    batch's gradient; only batch norm, which normalises each chunk on its own, tells the two apart."""
    size = chunk or len(y)
    losses, outputs = [], []
    for xc, yc in zip(x.split(size), y.split(size), strict=True):
        with autocast(device, amp, cache):
            logits = model(xc)
            loss = criterion(logits, yc) * (len(yc) / len(y))
        scaler.scale(loss).backward()
        losses.append(loss)
        outputs.append(logits)
    if len(outputs) == 1:
        return losses[0], outputs[0]
    return torch.stack([loss.detach() for loss in losses]).sum(), torch.cat([o.detach() for o in outputs])


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    amp: str = "off",
    scaler: torch.amp.GradScaler = NO_SCALER,
    graph: StepGraph | None = None,
    chunk: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step on the batch ``x, y``; returns (loss, logits), both still on the device.
    With ``graph`` (CUDA/ROCm) a replay of its recorded forward and backward does the middle part; ``chunk``:
    see :func:`forward_backward`."""
    optimizer.zero_grad(set_to_none=graph is None)  # a graph's gradients stay in the tensors it recorded
    if graph is not None:
        loss, logits = graph(x, y)
    else:
        loss, logits = forward_backward(model, x, y, criterion, device, amp, scaler, chunk=chunk)
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def step_graph(
    model: nn.Module,
    criterion: nn.Module,
    device: torch.device,
    amp: str,
    value: bool | None = None,
    in_the_way: dict[str, bool] | None = None,
) -> StepGraph | None:
    """:func:`forward_backward` of ``model`` as a :class:`~cifarkit.device.StepGraph`, or None where graphs are off
    (``value``: None is auto, see :func:`~cifarkit.device.resolve_cuda_graphs`; fp16 and ``in_the_way`` stop it).
    No autocast weight cache: a replay must cast the weights it is given, not copies kept from the capture."""
    if not resolve_cuda_graphs(value, device, amp, in_the_way):
        return None
    return StepGraph(lambda x, y: forward_backward(model, x, y, criterion, device, amp, cache=False))


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


# the training timer; a module name so a test can hand it a clock of its own
clock = time.perf_counter


def train_steps(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    scheduler: Any = None,
    amp: str = "off",
    scaler: torch.amp.GradScaler = NO_SCALER,
    on_step: Callable[[int, int], None] | None = None,
    graph: StepGraph | None = None,
    chunk: int = 0,
    first: int = 0,
) -> EpochStats:
    """The training loop: ``steps`` optimisation steps on the next batches of ``batches``, timed as one stretch.
    The scheduler steps after every batch (per-group learning rates are the scheduler's); ``on_step(step, n)``
    sees each step (numbered from ``first``) after it is taken: telemetry, the speedrun's whitening-bias
    freeze and lookahead plug in there. ``graph`` replays the forward and backward on CUDA/ROCm and ``chunk``
    splits each batch's backward (see :func:`train_step`).

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
    start = clock()
    for step in range(first, first + steps):
        with timer:
            x, y = next(batches)
        loss, logits = train_step(model, x, y, optimizer, criterion, device, amp, scaler, graph, chunk)
        if scheduler is not None:
            scheduler.step()
        total_loss += loss.detach() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
        images += y.shape[0]
        if on_step is not None:
            on_step(step, int(y.shape[0]))
    synchronize(device)
    seconds = clock() - start
    n = max(images, 1)
    return EpochStats(float(total_loss) / n, float(correct) / n, images, seconds, timer.seconds())


def train_one_epoch(model: nn.Module, loader: DeviceLoader, *args: Any, **kwargs: Any) -> EpochStats:
    """One pass over ``loader``: :func:`train_steps` over its batches (the same further arguments)."""
    return train_steps(model, iter(loader), len(loader), *args, **kwargs)


# ----------------------------------------------------------------------------- the plug-in interfaces


@dataclass
class StepHooks:
    """What a phase's listeners hear: ``hooks(step, n)`` after each step, ``hooks.data_wait(s)`` at the end."""

    steps: list[Callable[[int, int], None]] = field(default_factory=list)
    waits: list[Callable[[float], None]] = field(default_factory=list)

    def __call__(self, step: int, images: int) -> None:
        for listener in self.steps:
            listener(step, images)

    def data_wait(self, seconds: float) -> None:
        for listener in self.waits:
            listener(seconds)


class Callback:
    """A plug-in of :func:`fit`; every hook does nothing unless a subclass overrides it.

    ``run_start`` sees the prepared :class:`Run` (its folder exists), ``phase("train"|"val", epoch)`` wraps
    each phase and may yield :class:`StepHooks`, ``epoch_end`` gets each metrics row (rank 0 only) and
    ``run_end`` the test result (None when the run was not tested). Failures inside a callback are the
    callback's own business: telemetry and TensorBoard turn theirs into one warning and carry on.
    A callback that records what ``cfg.telemetry`` asks for sets ``records_telemetry``.
    """

    records_telemetry = False

    def run_start(self, run: Run) -> None:
        """The run folder exists and config.json is written."""

    def phase(self, name: str, epoch: int) -> contextlib.AbstractContextManager[StepHooks | None]:
        """Wrap one ``train`` or ``val`` phase."""
        return contextlib.nullcontext()

    def epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        """One epoch's metrics row (as written to metrics.jsonl)."""

    def run_end(self, run: Run, test: dict[str, Any] | None) -> None:
        """train.json (and test.json when tested) are written."""


class Callbacks(Callback):
    """Several callbacks as one: each hook calls them in order; phases nest and their step hooks merge."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def run_start(self, run: Run) -> None:
        for cb in self.callbacks:
            cb.run_start(run)

    @contextlib.contextmanager
    def phase(self, name: str, epoch: int) -> Iterator[StepHooks]:
        merged = StepHooks()
        with contextlib.ExitStack() as stack:
            for cb in self.callbacks:
                hooks = stack.enter_context(cb.phase(name, epoch))
                if hooks is not None:
                    merged.steps += hooks.steps
                    merged.waits += hooks.waits
            yield merged

    def epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.epoch_end(run, row)

    def run_end(self, run: Run, test: dict[str, Any] | None) -> None:
        for cb in self.callbacks:
            cb.run_end(run, test)


class ProgressBar(Callback):
    """One tqdm bar over the whole run (every epoch's steps), so its estimated end is the run's end; after
    the first steps it says once how long the whole run will take on this machine at that pace."""

    def run_start(self, run: Run) -> None:
        from tqdm.auto import tqdm

        done = (run.start_epoch - 1) * len(run.train_loader)
        self.bar = tqdm(total=run.cfg.epochs * len(run.train_loader), initial=done, desc="training", unit="step")
        self.first, self.told = done, False

    def step(self, step: int, images: int) -> None:
        self.bar.update(1)
        if self.told:  # said once; every later step only moves the bar
            return
        taken = self.bar.n - self.first
        elapsed = self.bar.format_dict["elapsed"]
        if taken >= 20 or elapsed > 10:
            total = elapsed / taken * (self.bar.total - self.first)
            self.bar.write(
                f"at the pace of its first {taken} steps this training takes about {duration_text(total)} here"
            )
            self.told = True

    def phase(self, name: str, epoch: int) -> contextlib.AbstractContextManager[StepHooks | None]:
        return contextlib.nullcontext(StepHooks([self.step]) if name == "train" else None)

    def run_end(self, run: Run, test: dict[str, Any] | None) -> None:
        self.bar.close()


class SingleProcess:
    """The collectives ``fit`` needs, for one process: each is the identity. Under torchrun,
    :class:`cifarkit.tools.distributed.Dist` implements them across the processes."""

    rank = 0
    world_size = 1
    local_world_size = 1
    device: torch.device | None = None  # a rank's own device (None: the config's choice)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that validates, writes the run folder and prints."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        return {"world_size": 1, "backend": None}

    def shard(self, split: Split) -> Split:
        return split

    def batch_size(self, global_batch: int) -> int:
        return global_batch

    def prepare_model(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def broadcast(self, obj: Any) -> Any:
        return obj

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def reduce_epoch(self, stats: EpochStats) -> EpochStats:
        return stats

    def barrier(self) -> None:
        pass


# ----------------------------------------------------------------------------- a run


@dataclass
class Run:
    """One training run: what ``fit`` builds before the first step, and where the loop stands."""

    cfg: TrainConfig
    dist: SingleProcess
    device: torch.device
    dataset: Dataset
    train: Split
    val: Split
    model: nn.Module
    model_kwargs: dict
    image_size: int
    normalizer: Normalizer
    train_loader: DeviceLoader
    val_loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: str
    scaler: torch.amp.GradScaler  # NO_SCALER unless fp16
    criterion: nn.Module
    graph: StepGraph | None = None  # the training step replayed as a CUDA graph (CUDA/ROCm)
    run_dir: Path = Path()
    rows: list[dict] = field(default_factory=list)
    best_value: float | None = None
    best_epoch: int | None = None
    stale: int = 0  # epochs since the monitored metric last improved
    start_epoch: int = 1

    @property
    def resumed_after(self) -> int | None:
        """The epoch a resumed run's checkpoint held (None for a fresh run)."""
        return self.start_epoch - 1 if self.start_epoch > 1 else None

    def train_epoch(self, net: nn.Module, hooks: StepHooks) -> EpochStats:
        """One epoch of ``net`` (the model, or its DDP/compiled wrapper) with this run's optimizer and data."""
        stats = train_one_epoch(
            net,
            self.train_loader,
            self.optimizer,
            self.criterion,
            self.device,
            self.scheduler,
            self.amp,
            self.scaler,
            hooks,
            self.graph,
        )
        hooks.data_wait(stats.data_seconds)
        return stats

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """Loss, top-1 and top-5 of ``model`` on the validation split, in the run's precision."""
        return evaluate(model, self.val_loader, self.device, amp=self.amp)

    def meta(self, epoch: int) -> dict[str, Any]:
        """Everything a checkpoint of this run needs to be used on its own."""
        cfg = self.cfg
        return checkpoint_meta(
            cfg.model, self.model_kwargs, self.dataset, cfg.dataset, self.image_size, cfg.to_dict(), epoch
        )


def prepare(
    cfg: TrainConfig, dataset: Dataset | None = None, data_dir: str | None = None, dist: SingleProcess | None = None
) -> Run:
    """Seed, pick the device (a rank's own), load and split the data, build model, loaders and optimizer."""
    dist = dist or SingleProcess()
    seed_everything(cfg.seed)
    configure_determinism(cfg.deterministic)
    device = dist.device or resolve_device(cfg.device)
    if device.type == "cpu":
        configure_threads(processes=dist.local_world_size)
    dataset = dataset if dataset is not None else load_dataset(cfg.dataset, data_dir)
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
    channels_last = resolve_channels_last(cfg.channels_last, device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = dist.prepare_model(model, cfg.sync_bn)
    if dist.enabled:
        torch.manual_seed(cfg.seed + dist.rank)  # dropout draws its own masks on each rank
    normalizer = Normalizer(dataset.mean, dataset.std, device, image_size, channels_last)
    train_loader = DeviceLoader(
        dist.shard(train),
        dist.batch_size(cfg.batch_size),
        normalizer,
        train=True,
        augment=cfg.augmentations,
        crop_padding=cfg.crop_padding,
        cutout_size=cfg.cutout_size,
        seed=cfg.seed + dist.rank,  # each rank draws its own order and augmentation
        alternating_flip=cfg.alternating_flip,
    )
    if len(train_loader) == 0:
        raise ConfigError(
            f"no training batches: {train_loader.num_images} images per process, batch_size {cfg.batch_size}"
        )
    optimizer = make_optimizer(model, cfg)
    amp = resolve_amp(cfg.amp, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    in_the_way = {"--compile": cfg.compile, "--torch-profile": cfg.torch_profile_steps > 0, "torchrun": dist.enabled}
    return Run(
        cfg=cfg,
        dist=dist,
        device=device,
        dataset=dataset,
        train=train,
        val=val,
        model=model,
        model_kwargs=model_kwargs,
        image_size=image_size,
        normalizer=normalizer,
        train_loader=train_loader,
        val_loader=DeviceLoader(val, max(cfg.batch_size, 256), normalizer),
        optimizer=optimizer,
        scheduler=make_scheduler(optimizer, cfg, len(train_loader)),
        amp=amp,
        scaler=torch.amp.GradScaler(device.type) if amp == "fp16" else NO_SCALER,
        criterion=criterion,
        graph=step_graph(model, criterion, device, amp, cfg.cuda_graphs, in_the_way),
    )


def warn_unrecorded_telemetry(cfg: TrainConfig, callbacks: Sequence[Callback]) -> None:
    """Say so when ``cfg`` asks for telemetry that none of ``callbacks`` records (``fit`` alone records none)."""
    if (cfg.telemetry or cfg.torch_profile_steps) and not any(c.records_telemetry for c in callbacks):
        fix = "pass callbacks=cifarkit.report.figures.run_callbacks() (or a cifarkit.tools.telemetry.Telemetry())"
        warnings.warn(f"telemetry was asked for, but no callback records it: {fix}", stacklevel=3)


def fit(
    cfg: TrainConfig,
    out: str | Path = "runs",
    dataset: Dataset | None = None,
    data_dir: str | None = None,
    resume: str | Path | None = None,
    log: Callable[[str], None] = print,
    progress: bool = False,
    test: bool = True,
    callbacks: Sequence[Callback] = (),
    dist: SingleProcess | None = None,
) -> Path:
    """Train ``cfg.model`` on ``cfg.dataset``; return the run folder.

    The folder gets config.json, env.json, metrics.jsonl (a line per epoch), best.pt (best validation
    ``cfg.monitor``), last.pt (the state to resume from, every ``checkpoint_every`` epochs), train.json and,
    with ``test``, test.json (best.pt on the test split; model selection passes False so that the test
    split never guides a choice, then calls :func:`cifarkit.predict.evaluate_run` on the winner).

    Args:
        cfg: the run's configuration.
        out: parent folder of the run folder.
        dataset: an already loaded dataset (else ``cfg.dataset`` is loaded from ``data_dir``).
        resume: a last.pt to continue from; the run continues in that checkpoint's folder.
        log: where the per-epoch lines go.
        progress: one progress bar over the whole run.
        callbacks: plug-ins (telemetry, TensorBoard, figures; see :class:`Callback`).
        dist: this process's place in a torchrun launch; rank 0 validates, writes and logs.
    """
    dist = dist or SingleProcess()
    warn_unrecorded_telemetry(cfg, callbacks)
    saved = resume_state(resume, cfg.epochs, dist.world_size) if resume is not None else None
    if saved is not None:
        cfg = TrainConfig.from_dict({**saved["config"], "epochs": cfg.epochs})
    run = prepare(cfg, dataset, data_dir, dist)
    with open_folder(run, out, saved, resume, log):  # locked by rank 0 until the run ends, however it ends
        main = dist.is_main
        hooks = Callbacks([*callbacks, *([ProgressBar()] if progress and main else [])])
        if main:
            write_run_file(run.run_dir, "config", {**cfg.to_dict(), "resolved": resolved_settings(run)})
            write_run_file(run.run_dir, "env", environment(run))
        hooks.run_start(run)
        # torch.compile wraps the same parameters; checkpoints keep saving the plain module's state dict
        model = torch.compile(run.model) if cfg.compile else run.model
        net = dist.wrap(model)  # DistributedDataParallel when launched by torchrun
        for epoch in range(run.start_epoch, cfg.epochs + 1):
            with hooks.phase("train", epoch) as on_step:
                stats = dist.reduce_epoch(run.train_epoch(net, on_step))
            row = None
            if main:
                with hooks.phase("val", epoch):
                    row = epoch_row(epoch, stats, run.validate(model), run.optimizer)
                append_jsonl(run.run_dir / "metrics.jsonl", row)
                hooks.epoch_end(run, row)
                log(format_epoch(row, cfg.epochs))
            run.rows.append(dist.broadcast(row))  # rank 0's validation decides for every rank
            if (what := non_finite(stats.loss, run.rows[-1], run.model)) is not None:
                finish(run, hooks, test)
                raise TrainingDiverged(diverged_message(run, epoch, what))
            stop = keep_best(run, run.rows[-1][cfg.monitor], epoch)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or stop:
                save_training_state(run, epoch)
            if stop:
                log(f"early stopping at epoch {epoch}: no {cfg.monitor} improvement for {cfg.patience} epochs")
                break
        finish(run, hooks, test)
        dist.barrier()  # every rank returns once the run folder is complete
    return run.run_dir


# ----------------------------------------------------------------------------- the loop's named steps


def keep_best(run: Run, value: float, epoch: int) -> bool:
    """Save best.pt when ``value`` improves on the best so far; return whether early stopping is due."""
    best, lower = run.best_value, run.cfg.monitor == "val_loss"  # a loss improves downwards
    if best is None or (value < best if lower else value > best):
        run.best_value, run.best_epoch, run.stale = value, epoch, 0
        if run.dist.is_main:
            save_checkpoint(run.run_dir / "best.pt", run.model, run.meta(epoch))
    else:
        run.stale += 1
    return run.cfg.patience > 0 and run.stale >= run.cfg.patience


def finish(run: Run, hooks: Callback, test: bool) -> None:
    """train.json; with ``test``, best.pt scored on the test split (test.json); the callbacks' end."""
    if not run.dist.is_main:
        return
    write_run_file(run.run_dir, "train", train_json(run.rows, run.cfg.monitor, run.best_epoch))
    result = None
    # a folder with only train/ has nothing to test on; a run stopped before its first best epoch has no best.pt
    if test and run.dataset.test is not None and (run.run_dir / "best.pt").is_file():
        result = evaluate_run(run.run_dir, run.dataset, run.device)
    hooks.run_end(run, result)
    mark_complete(run.run_dir, tested=result is not None)  # last: a kill before it leaves a run resume finishes


def non_finite(loss: float, row: dict[str, Any] | None, model: nn.Module) -> str | None:
    """What went non-finite in an epoch, or None: its training loss, its validation loss, or the weights
    themselves (a learning rate far too high can leave the mean loss finite while weights or batch-norm
    statistics overflow; such a network must not be kept as a checkpoint). One device sync for all the weights."""
    if not math.isfinite(loss):
        return f"loss {loss}"
    if row is not None and not math.isfinite(row.get("val_loss", 0.0)):
        return f"validation loss {row['val_loss']}"
    state = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    finite = torch.stack([torch.isfinite(v).all() for v in state.values()]) if state else torch.ones(1, dtype=bool)
    if not bool(finite.all()):
        name = next(k for k, ok in zip(state, finite.tolist(), strict=True) if not ok)
        return f"non-finite weights in {name}"
    return None


def diverged_message(run: Run, epoch: int, what: str) -> str:
    """What a diverged run says: which epoch and what went non-finite, which checkpoints survive, what to
    change."""
    files = [f for f in ("best.pt", "last.pt") if (run.run_dir / f).is_file()]
    kept = (
        f"{' and '.join(files)} from before it are kept"
        if files
        else "no epoch finished cleanly, so no checkpoint was written"
    )
    return (
        f"training diverged in epoch {epoch} ({what}); {kept} in {run.run_dir}; "
        "lower --lr (or add --scheduler onecycle for a warm-up) and train again"
    )


def resolved_settings(run: Run) -> dict[str, Any]:
    """What ``auto`` and the defaults resolved to on this machine (config.json's ``resolved``)."""
    return {
        "image_size": run.image_size,
        "model_kwargs": run.model_kwargs,
        "amp": run.amp,
        "device": str(run.device),
        "channels_last": run.normalizer.channels_last,
        "cuda_graphs": run.graph is not None,
        **run.dist.describe(),
    }


def environment(run: Run) -> dict[str, Any]:
    """env.json: the machine (:func:`cifarkit.device.env_info`), the launch and the data's sizes."""
    world = run.dist.world_size
    return {
        **env_info(run.device),
        **run.dist.describe(),
        "dataset_classes": list(run.dataset.classes),
        "train_images": len(run.train) // world * world,
        "val_images": len(run.val),
    }


# ----------------------------------------------------------------------------- resume


@contextlib.contextmanager
def open_folder(
    run: Run, out: str | Path, saved: dict | None, resume: str | Path | None, log: Callable
) -> Iterator[None]:
    """The run's folder, locked by rank 0 while the block runs (two trainers never write one): a new one
    under ``out``, or the resumed checkpoint's with its state restored (or, when it had trained to its end
    and only its reports are missing, set to write them)."""
    main = run.dist.is_main
    if saved is None:
        run.run_dir = run.dist.broadcast(make_run_dir(out, run.cfg.model, run.cfg.dataset) if main else None)
    lock = RunLock(run.run_dir if saved is None else Path(resume).resolve().parent) if main else None
    try:
        if saved is not None:
            restore(run, saved, Path(resume))
            done = saved["finish_only"]
            log(
                f"finishing {run.run_dir}: it has trained, writing its reports"
                if done
                else f"resuming {run.run_dir} at epoch {run.start_epoch}"
            )
        yield
    finally:
        if lock is not None:
            lock.close()
