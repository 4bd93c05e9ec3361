"""The speedrun recipe: fast CIFAR training after airbench (Keller Jordan, arXiv 2404.00498), one named piece at a time.

Every piece of the recipe is a field of :class:`Recipe` with a one-line reason in :data:`PIECES`,
so an ablation can switch each one off. The training loop is deliberately short: images live on
the device as uint8, each batch is a gather, a crop, a flip and a few fused tensor ops, and
nothing in the step waits for the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from cifarkit import train as loop  # loop.clock: the one training timer, which a test may replace
from cifarkit.config import check_settings, non_negative, number, positive_float, positive_int, setting, share
from cifarkit.data import Split, default_data_dir, load_dataset, stratified_split
from cifarkit.device import configure_threads, env_info, resolve_amp, resolve_device, synchronize
from cifarkit.errors import ConfigError, duration_text
from cifarkit.evaluate import autocast, evaluate, tta_forward
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.models import ACTIVATIONS, SpeedNet, create_model
from cifarkit.runs import (
    checkpoint_meta,
    ensure_dir,
    epoch_row,
    make_run_dir,
    mark_complete,
    save_checkpoint,
    train_json,
    write_json,
    write_metrics,
    write_run_file,
)
from cifarkit.speedrun.course import course_baseline
from cifarkit.train import train_steps

TTA_LEVELS = ("none", "flip", "translate")  # names of cifarkit.evaluate modes, cheapest first


@dataclass(frozen=True)
class Recipe:
    """Every knob of a speedrun. The defaults are the CPU ``speedrun`` recipe; see :data:`RECIPES`."""

    name: str = "speedrun"
    widths: tuple[int, int, int] = setting((32, 64, 96), type=positive_int)
    activation: str = setting("gelu", choices=tuple(ACTIVATIONS))
    whiten_signs: bool = True
    epochs: float = setting(0.8, type=positive_float)  # fractions allowed
    batch_size: int = setting(256, type=number(int, 2))
    # On a CPU each batch is fed in chunks of this many images, gradients summed (0: the whole batch at
    # once). The optimizer still steps once per batch; BatchNorm sees each chunk on its own ("ghost"
    # batches). A 128-image chunk stays in the CPU's caches: on a 2-core CPU it ran the flagship network
    # 40% faster per image than 1,024 at once. GPUs are fastest with the whole batch and ignore this.
    cpu_micro_batch: int = 0
    lr: float = setting(0.5, type=positive_float)  # peak SGD learning rate, for the batch-mean loss
    momentum: float = setting(0.85, type=share)
    # coupled (PyTorch SGD); scaled down for biases by bias_lr_scale
    weight_decay: float = setting(1e-3, type=non_negative)
    warmup: float = setting(0.2, type=share)  # share of the run spent ramping the learning rate up
    # The whitening layer's bias learns for this many epochs, then freezes. Frozen, it spares the
    # backward pass the gradient of the first block's input: 17% faster steps on a 2-core CPU.
    whiten_bias_epochs: float = setting(0.25, type=non_negative)
    # the pieces (each has a reason in PIECES and an "off" value)
    whiten: bool = True
    identity_init: bool = True
    frozen_bn_scale: bool = True
    bias_lr_scale: float = setting(64.0, type=number(float, 1))  # 1: off
    label_smoothing: float = setting(0.2, type=share)
    alternating_flip: bool = True
    translate: int = setting(2, type=number(int, 0, 8))  # pixels; 0: off
    lookahead: bool = False
    tta: str = setting("none", choices=TTA_LEVELS)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"recipe {name}={getattr(self, name)!r} is invalid: {what}")

        check_settings(self)
        check(len(self.widths) == 3, "widths", "use three positive integers")
        check(
            self.cpu_micro_batch == 0 or (self.cpu_micro_batch >= 2 and self.batch_size % self.cpu_micro_batch == 0),
            "cpu_micro_batch",
            f"use 0 (whole batch) or a divisor >= 2 of batch_size {self.batch_size}",
        )

    def with_(self, **changes: Any) -> Recipe:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "widths": list(self.widths)}


@dataclass(frozen=True)
class Piece:
    """One switchable idea of the recipe: the field it lives in, its "off" value and why it is there."""

    name: str
    field: str
    off: Any
    reason: str


PIECES: tuple[Piece, ...] = (
    Piece(
        "patch whitening",
        "whiten",
        False,
        "a frozen first layer that decorrelates 2x2 patches (from training-set statistics) gives every later layer well-conditioned input from step one",
    ),
    Piece(
        "identity init",
        "identity_init",
        False,
        "each block's second conv starts as (part) identity, so the untrained deep net passes signal like a shallow one",
    ),
    Piece(
        "frozen BN scales",
        "frozen_bn_scale",
        False,
        "BatchNorm scales fixed at 1 remove parameters that only fight weight decay; the biases still learn",
    ),
    Piece(
        "bias lr x64",
        "bias_lr_scale",
        1.0,
        "biases (the only BN parameters left) move 64x faster, so the few of them keep pace with the many weights",
    ),
    Piece(
        "label smoothing",
        "label_smoothing",
        0.0,
        "a 0.2-smoothed target stops the net from pushing logits to infinity on easy images: better calibrated, less overfit",
    ),
    Piece(
        "alternating flip",
        "alternating_flip",
        False,
        "each image is flipped in every other epoch (not at random), so every epoch pair shows both mirror images exactly once",
    ),
    Piece(
        "translate",
        "translate",
        0,
        "random shifts of up to 2 px (reflect padding): the cheapest augmentation that still teaches position invariance",
    ),
    Piece(
        "lookahead (EMA)",
        "lookahead",
        False,
        "every 5 steps the weights are pulled towards a slow moving average, which smooths the noise of a high learning rate",
    ),
    Piece(
        "TTA",
        "tta",
        "none",
        "averaging logits over mirrored (and shifted) test views cancels part of each view's error",
    ),
)

RECIPES: dict[str, Recipe] = {
    # CPU: the fastest way to the course's 70%, chosen on validation (see README "Speedrun"): at 0.8
    # epochs lookahead cost 1.2 points and flip TTA bought 0.7 points for 11% more time, so both are off;
    # freezing the whitening bias after 0.25 epochs cost 0.6 points (within noise) for ~12% faster steps
    "speedrun": Recipe(),
    # airbench94's network and hyperparameters in this module's units (batch-mean loss: its lr 11.5 and
    # decay 0.0153 per 1,024 x (1 + 1/(1 - momentum)) become lr 1.5 and decay 0.002 per step), fed to
    # the CPU in 128-image chunks; 12 epochs of the 45,000 training images: the longest schedule
    # that fits in 60 minutes of a 2-core AVX2 CPU with room for its speed to drift (see README)
    "flagship": Recipe(
        name="flagship",
        widths=(64, 256, 256),
        epochs=12.0,
        batch_size=1024,
        cpu_micro_batch=128,
        lr=1.5,
        weight_decay=0.002 / 1.5,
        warmup=0.23,
        lookahead=True,
        tta="translate",
        whiten_bias_epochs=3.0,
    ),
    # seconds on any machine: CI smoke runs and first experiments
    "tiny": Recipe(name="tiny", widths=(8, 16, 16), epochs=2.0, batch_size=64, lr=0.2),
}


def get_recipe(name: str) -> Recipe:
    """A named recipe, or a one-line error with the choices."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose {', '.join(RECIPES)}")
    return RECIPES[name]


def ablation_recipes(recipe: Recipe) -> list[tuple[str, Recipe]]:
    """The full recipe, then one variant per piece it uses, with only that piece switched off."""
    used = [p for p in PIECES if getattr(recipe, p.field) != p.off]
    return [("full recipe", recipe)] + [(f"- {p.name}", replace(recipe, **{p.field: p.off})) for p in used]


# ----------------------------------------------------------------------------- building the network


@torch.no_grad()
def init_whitening(layer: nn.Conv2d, images: torch.Tensor, eps: float = 5e-4) -> None:
    """Set a 2x2 conv to whiten patches: weights are the patch covariance's eigenvectors scaled by
    1/sqrt(eigenvalue), each used with both signs (so the GELU after it loses nothing).

    Args:
        layer: a ``Conv2d(3, 24, 2)``.
        images: normalised training images (N, 3, H, W), float.
        eps: added to the eigenvalues so near-constant directions are not blown up.
    """
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, 3, H-1, W-1, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12).double()
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / patches.shape[0]
    eigval, eigvec = torch.linalg.eigh(cov)
    filters = (eigvec.T / torch.sqrt(eigval + eps)[:, None]).reshape(12, 3, 2, 2)
    both = torch.cat([filters, -filters]) if layer.out_channels == 24 else filters
    layer.weight.copy_(both.to(layer.weight))
    layer.bias.zero_()


@torch.no_grad()
def init_identity(model: SpeedNet) -> None:
    """Make each block's second conv start as an identity on its first channels (Dirac init)."""
    for block in model.blocks:
        w = block.conv2.weight
        n = min(w.shape[0], w.shape[1])
        nn.init.dirac_(w[:n])


def model_kwargs(recipe: Recipe) -> dict[str, Any]:
    """The ``speednet`` options of a recipe (also stored in its checkpoints)."""
    return {
        "widths": list(recipe.widths),
        "whiten": recipe.whiten,
        "act": recipe.activation,
        "whiten_signs": recipe.whiten_signs,
    }


# images whose 2x2 patches estimate the whitening filters: 5,000 give 4.8 million patches (961 each), far more
# than a 12x12 covariance needs, and the estimate takes well under a second on a CPU
WHITENING_SAMPLE = 5000


def build_model(recipe: Recipe, num_classes: int, train_images: torch.Tensor | None, device: torch.device) -> nn.Module:
    """The speedrun network with the recipe's initialisation (whitening needs normalised training images)."""
    model = create_model("speednet", num_classes, **model_kwargs(recipe))
    if recipe.whiten and train_images is not None:
        init_whitening(model.whiten, train_images[:WHITENING_SAMPLE])
    if recipe.identity_init:
        init_identity(model)
    if recipe.frozen_bn_scale:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.requires_grad_(False)
    return model.to(device=device, memory_format=torch.channels_last)


def sgd_with_bias_groups(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """Nesterov SGD; biases get ``bias_lr_scale`` x the learning rate and 1/``bias_lr_scale`` the decay."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    biases = [p for n, p in trainable if p.ndim < 2]
    weights = [p for n, p in trainable if p.ndim >= 2]
    groups = [
        {"params": weights, "lr": recipe.lr, "weight_decay": recipe.weight_decay},
        {
            "params": biases,
            "lr": recipe.lr * recipe.bias_lr_scale,
            "weight_decay": recipe.weight_decay / recipe.bias_lr_scale,
        },
    ]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def lr_factor(progress: float, warmup: float) -> float:
    """Triangular schedule: linear from 0.2 to 1 over the warm-up share, then linear down to 0."""
    if progress < warmup:
        return 0.2 + 0.8 * progress / warmup
    return max(0.0, (1.0 - progress) / (1.0 - warmup))


class Lookahead:
    """Slow weights that follow the fast ones; every ``every`` steps the fast weights are reset to them.

    The pull strength grows as the learning rate falls (``decay`` scales with progress cubed), and
    :meth:`finish` leaves the model holding the slow weights.
    """

    def __init__(self, model: nn.Module, every: int = 5, base_decay: float = 0.95) -> None:
        self.model = model
        self.every = every
        self.base_decay = base_decay
        self.slow = [t.detach().clone() for t in self._tensors()]

    def _tensors(self) -> list[torch.Tensor]:
        return [t for t in self.model.state_dict().values() if t.dtype.is_floating_point]

    @torch.no_grad()
    def step(self, step: int, progress: float) -> None:
        if step % self.every:
            return
        decay = self.base_decay**self.every * progress**3
        fast = self._tensors()
        torch._foreach_lerp_(self.slow, fast, 1.0 - decay)
        torch._foreach_copy_(fast, self.slow)

    @torch.no_grad()
    def finish(self) -> None:
        torch._foreach_copy_(self._tensors(), self.slow)


# ----------------------------------------------------------------------------- training


@dataclass
class SpeedrunResult:
    """What :func:`train` returns: the trained model and its time-to-accuracy curve."""

    model: nn.Module
    recipe: Recipe
    seconds: float  # training only (validation passes are not counted, as airbench counts)
    curve: list[dict[str, float]]  # per epoch: seconds so far, val_accuracy
    val_accuracy: float | None
    amp: str = "off"  # the precision it trained in ("off", "bf16", "fp16"), for evaluating it the same way
    warmup_seconds: float = 0.0  # the untimed warm-up before the clock started (see :func:`warm_up`)


def warm_up(
    recipe: Recipe,
    train_split: Split,
    norm: Normalizer,
    num_classes: int,
    device: torch.device,
    amp: str,
    steps: int = 3,
) -> float:
    """Run a throwaway copy of the recipe's network for a few steps of the same training loop and one evaluation
    pass, so the one-off costs of a first call (kernel selection, cuDNN autotuning, the allocator's first
    blocks, lazy initialisation) are paid before the clock starts, as airbench does: on a GPU they can be most
    of a short run. Returns the seconds it took (reported beside, never inside, the timed training)."""
    synchronize(device)
    t0 = loop.clock()
    model, optimizer, criterion, batches = setup(recipe, train_split, norm, num_classes, device, seed=0)
    if len(batches) == 0:
        return loop.clock() - t0  # train() refuses this split in one line
    chunk = recipe.cpu_micro_batch if device.type == "cpu" else 0
    train_steps(model, iter(batches), min(steps, len(batches)), optimizer, criterion, device, amp=amp, chunk=chunk)
    x, _ = next(iter(batches))
    with torch.no_grad(), autocast(device, amp):
        tta_forward(model.eval(), recipe.tta)(x)
    synchronize(device)
    return loop.clock() - t0


def setup(
    recipe: Recipe, train_split: Split, norm: Normalizer, num_classes: int, device: torch.device, seed: int
) -> tuple[nn.Module, torch.optim.Optimizer, nn.Module, DeviceLoader]:
    """The network (its whitening fixed from the training images), optimizer, loss and batches of a run of
    ``recipe``: what :func:`train` times and :func:`warm_up` runs once untimed."""
    sample = norm(train_split.images[:WHITENING_SAMPLE].to(device)).float()
    model = build_model(recipe, num_classes, sample, device)
    optimizer = sgd_with_bias_groups(model, recipe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    augment = ("crop", "flip") if recipe.translate else ("flip",)
    batches = DeviceLoader(
        train_split,
        recipe.batch_size,
        norm,
        train=True,
        augment=augment,
        crop_padding=recipe.translate,
        seed=seed,
        alternating_flip=recipe.alternating_flip,
    )
    return model, optimizer, criterion, batches


def scores(
    model: nn.Module, split: Split, normalizer: Normalizer, tta: str = "none", amp: str = "off", batch_size: int = 128
) -> dict[str, Any]:
    """:func:`cifarkit.evaluate.evaluate` of ``model`` on ``split`` with a TTA mode (top-1, top-5, loss and
    ``correct``, each image's top-1 right or wrong, for paired comparisons); the model is left in training
    mode (the speedrun validates mid-run).

    The batch is small on purpose: views are stacked (2-6x the batch), and on a 2-core CPU a
    forward pass of ~256 images ran 30% faster per image than one of 1,000.
    """
    loader = DeviceLoader(split, batch_size, normalizer)
    result = evaluate(model, loader, normalizer.mean.device, amp=amp, forward=tta_forward(model, tta), per_image=True)
    model.train()
    return result


def accuracy(
    model: nn.Module, split: Split, normalizer: Normalizer, tta: str = "none", amp: str = "off", batch_size: int = 128
) -> float:
    """Top-1 of ``model`` on ``split`` with a TTA mode (see :func:`scores`)."""
    return scores(model, split, normalizer, tta, amp, batch_size)["accuracy"]


def pace_seconds(seconds: float, step: int, total: int) -> float:
    """Seconds the whole schedule of ``total`` steps takes if every step costs what the first
    ``step`` did on average: a projection, not a promise (a machine's pace drifts)."""
    return seconds * total / max(step, 1)


def endless(loader: DeviceLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches epoch after epoch (each epoch its own order and flips), for a schedule counted in
    steps rather than epochs."""
    while True:
        yield from loader


def train(
    recipe: Recipe,
    train_split: Split,
    mean,
    std,
    num_classes: int,
    device: torch.device,
    val: Split | None = None,
    seed: int = 0,
    amp: str = "auto",
    curve_points: int = 0,
    log: Callable[[str], None] = print,
) -> SpeedrunResult:
    """Train the recipe's fixed schedule with the core's loop (:func:`cifarkit.train.train_steps`), validating
    (untimed) when ``val`` is given.

    The recipe is a configuration of that loop: a triangular learning rate per parameter group (biases at
    ``bias_lr_scale`` x) as a ``LambdaLR`` schedule; after each step the whitening bias is frozen once its
    epochs are over and lookahead pulls the weights back every few steps; on CPUs each batch's gradient is
    summed over micro-batches. Data and evaluation are the core's too (:class:`cifarkit.loader.DeviceLoader`
    with alternating flip, :func:`cifarkit.evaluate.evaluate`). The clock runs over the setup and each
    stretch of training between validations, never over a validation.

    Args:
        amp: mixed precision: ``auto`` is bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32
            (see :func:`cifarkit.device.resolve_amp`); the whitening layer stays fp32 in any case.
        curve_points: validate at this many evenly spaced points of the run (0: after each epoch), so
            a run shorter than an epoch still draws a time-to-accuracy curve.
    """

    amp = resolve_amp(amp, device)
    norm = Normalizer(mean, std, device, channels_last=True)
    warmup_seconds = warm_up(recipe, train_split, norm, num_classes, device, amp)
    torch.manual_seed(seed)  # after the warm-up, so the timed run draws the same numbers as without one
    synchronize(device)
    t_start = loop.clock()
    model, optimizer, criterion, batches = setup(recipe, train_split, norm, num_classes, device, seed)
    if len(batches) == 0:
        raise ConfigError(f"{len(train_split.labels)} training images make no batch of {recipe.batch_size}")
    total = max(1, round(recipe.epochs * len(batches)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step / total, recipe.warmup))
    lookahead = Lookahead(model) if recipe.lookahead else None
    bias_steps = round(recipe.whiten_bias_epochs * len(batches))
    model.whiten.bias.requires_grad_(bias_steps > 0)

    def after_step(step: int, images: int) -> None:
        done = step + 1
        if done == bias_steps:
            model.whiten.bias.requires_grad_(False)
        if lookahead is not None:
            lookahead.step(done, done / total)

    synchronize(device)
    seconds = loop.clock() - t_start
    every = [max(1, round(total * k / curve_points)) for k in range(1, curve_points + 1)] if curve_points else []
    checks = sorted({*(every or range(len(batches), total, len(batches))), total})  # validate after these steps
    chunk = recipe.cpu_micro_batch if device.type == "cpu" else 0
    stream, step, curve = endless(batches), 0, []
    for check in checks:
        stats = train_steps(
            model, stream, check - step, optimizer, criterion, device, schedule, amp, on_step=after_step,
            chunk=chunk, first=step,
        )  # fmt: skip
        seconds, step = seconds + stats.seconds, check
        if step == total and lookahead is not None:
            lookahead.finish()
        row = {"epoch": round(step / len(batches), 3), "seconds": seconds}
        if val is not None:  # a metrics.jsonl row, as a training epoch of any run writes one
            row = {**epoch_row(row["epoch"], stats, scores(model, val, norm, amp=amp), optimizer), **row}
        curve.append(row)
        pace = f" (at this pace {duration_text(pace_seconds(seconds, step, total))} of training in all)"
        val_text = f" val_accuracy {row['val_accuracy']:.4f}" if val is not None else ""
        log(f"epoch {row['epoch']:>5.2f} {seconds:7.1f}s{val_text}" + (pace if step < total else ""))
    model.eval()
    return SpeedrunResult(
        model, recipe, seconds, curve, curve[-1].get("val_accuracy") if curve else None, amp, warmup_seconds
    )


def evaluate_with_tta(result: SpeedrunResult, split: Split, mean, std, device: torch.device) -> tuple[float, float]:
    """Top-1 on ``split`` with the recipe's TTA, and the seconds it took (counted, as airbench counts it)."""
    norm = Normalizer(mean, std, device, channels_last=True)
    synchronize(device)
    t0 = loop.clock()
    top1 = accuracy(result.model, split, norm, result.recipe.tta, result.amp)
    synchronize(device)
    return top1, loop.clock() - t0


# ----------------------------------------------------------------------------- the command


def write_run_files(
    run_dir, recipe: Recipe, spec: str, seed: int, val_fraction: float, result: SpeedrunResult, env: dict, test: dict
) -> None:
    """A speedrun's run files, written by :mod:`cifarkit.runs` as any run's are (config, env, metrics.jsonl, train,
    test, then marked complete), so ``comparison.compare_runs`` and the figures read it like one; ``env`` holds
    the machine and the data's sizes. train.json is :func:`cifarkit.runs.train_json` of the validation checks,
    with the speedrun's own clock (setup included, as airbench counts it) and its length in epochs (fractions
    allowed); the speedrun keeps its last weights, so the last check is its best epoch."""
    write_run_file(
        run_dir,
        "config",
        {
            "model": "speednet",
            "dataset": spec,
            "seed": seed,
            "epochs": recipe.epochs,
            "batch_size": recipe.batch_size,
            "val_fraction": val_fraction,
            "recipe": recipe.to_dict(),
        },
    )
    write_run_file(run_dir, "env", env)
    write_metrics(run_dir, result.curve)
    summary = train_json(result.curve, "val_accuracy", result.curve[-1]["epoch"])
    write_run_file(
        run_dir, "train", {**summary, "epochs_run": recipe.epochs, "train_time": result.seconds, "curve": result.curve}
    )
    write_run_file(run_dir, "test", test)
    mark_complete(run_dir, tested=True)


def run_speedrun(
    spec: str,
    *,
    recipe: str,
    target: float,
    baseline: bool,
    seed: int,
    amp: str,
    out: str,
    val_fraction: float,
    device: str = "auto",
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train a recipe's fixed schedule on train minus validation, check it on test with its TTA, and
    (with ``baseline``) time the course recipe to the same validation ``target`` in the same process.
    The settings are ``cifarkit.tools.settings.SpeedrunSettings``' fields (their defaults and checks live there).

    Returns the JSON line of ``cifarkit speedrun``: ``recipe``, ``seconds`` (training + TTA),
    ``val_accuracy``, ``test_accuracy``, ``epochs``, ``checkpoint``, ``curve`` and, with a baseline,
    ``baseline_seconds`` and ``speedup``. The run folder gets config.json, train.json, test.json and best.pt.
    """
    ensure_dir(out, "--out folder")  # before the training, not after it
    recipe = get_recipe(recipe)
    dev = resolve_device(device)
    if dev.type == "cpu":
        configure_threads()
    root = data_dir or default_data_dir()
    ds = load_dataset(spec, root)
    if ds.train is None or ds.test is None:
        raise ConfigError(f"{spec} needs a train and a test split for a speedrun")
    train_idx, val_idx = stratified_split(ds.train.labels, val_fraction, seed)  # the baseline needs the indices
    train_split, val = ds.train.subset(train_idx), ds.train.subset(val_idx)
    log(
        f"speedrun recipe {recipe.name} on {spec}: {len(train_split)} train / {len(val)} val / {len(ds.test)} test images, {dev}"
    )
    result = train(recipe, train_split, ds.mean, ds.std, ds.num_classes, dev, val=val, seed=seed, amp=amp, log=log)
    test_accuracy, tta_seconds = evaluate_with_tta(result, ds.test, ds.mean, ds.std, dev)
    # the curve's last point already is the plain validation top-1; only TTA needs another pass
    val_tta = (
        result.val_accuracy
        if recipe.tta == "none"
        else accuracy(result.model, val, Normalizer(ds.mean, ds.std, dev, channels_last=True), recipe.tta, result.amp)
    )
    run_dir = make_run_dir(out, recipe.name, spec)
    config = {"recipe": recipe.to_dict(), "amp": result.amp}
    meta = checkpoint_meta(
        "speednet", model_kwargs(recipe), ds, spec, SpeedNet.input_size, config, math.ceil(recipe.epochs)
    )
    ckpt = save_checkpoint(run_dir / "best.pt", result.model, meta)
    summary: dict[str, Any] = {
        "recipe": recipe.name,
        "dataset": spec,
        "device": str(dev),
        "seconds": result.seconds + tta_seconds,
        "train_seconds": result.seconds,
        "tta_seconds": tta_seconds,
        "warmup_seconds": result.warmup_seconds,  # before the clock started: first-call costs, not training
        "tta": recipe.tta,
        "amp": result.amp,
        "val_accuracy": val_tta,
        "test_accuracy": test_accuracy,
        "epochs": recipe.epochs,
        "target": target,
        "reached_target": val_tta >= target,  # a target is met on validation; test only reports
        "checkpoint": str(ckpt),
        "curve": result.curve,
    }
    if baseline:
        base = course_baseline(spec, ds, train_idx, val, target, dev, root, log=log)
        summary.update(base)
        summary["speedup"] = base["baseline_seconds"] / summary["seconds"] if base["baseline_seconds"] else None
    env = {**env_info(dev), "train_images": len(train_split), "val_images": len(val)}
    test = {
        "accuracy": test_accuracy,
        "tta": recipe.tta,
        "testing time": tta_seconds,
        "split": "test",
        "n": len(ds.test),
    }
    write_run_files(run_dir, recipe, spec, seed, val_fraction, result, env, test)
    write_json(run_dir / "speedrun.json", summary)
    log(
        f"{recipe.name}: test top-1 {test_accuracy:.4f} (TTA {recipe.tta}) in {summary['seconds']:.1f} s "
        f"(training {result.seconds:.1f} s + TTA {tta_seconds:.1f} s); run folder {run_dir}"
    )
    if baseline:
        b = summary["baseline_seconds"]
        log(
            f"course EX-1 baseline: {'never reached ' + str(target) if b is None else f'{b:.1f} s to val {target}'}"
            + (f"; speedup {summary['speedup']:.1f}x" if summary.get("speedup") else "")
        )
    return summary
