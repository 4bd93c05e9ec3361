"""Frozen, validated configuration for a training run; saved verbatim into run folders and checkpoints.

A field made with :func:`setting` is also a command-line option: ``cifarkit.cli.add_settings`` generates it from
the field (flag, type, default, help), so each setting is written once, in its dataclass: :class:`TrainConfig`
here, the tools' in :mod:`cifarkit.tools.settings`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from cifarkit.errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "cutout")
MONITORS = ("val_accuracy", "val_loss")
AMP_MODES = ("auto", "off", "fp16", "bf16")
AMP_HELP = "mixed precision; auto: bf16 on CPUs with native bf16, else off (fp16 needs a GPU)"
DEVICE_HELP = "auto, cpu, cuda, cuda:N (also AMD ROCm), mps"
DATASET_HELP = "cifar10, cifar100, cifar100:coarse, folder:PATH, synthetic[:classes=N,size=N,train=N,test=N]"
TTA_MODES = ("none", "flip", "5crop", "flip5crop", "scale3", "translate")
TTA_AVERAGES = ("logits", "probs")  # what TTA averages over the views


def parse_augment(spec: str) -> tuple[str, ...]:
    """Parse ``"crop+flip+cutout"`` (or ``"none"``) into a tuple of augmentation names."""
    if spec in ("", "none"):
        return ()
    parts = tuple(p.strip() for p in spec.replace(",", "+").split("+") if p.strip())
    unknown = [p for p in parts if p not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {unknown[0]!r}; combine {', '.join(AUGMENTATIONS)} with + or use none")
    return parts


def setting(default: Any, help: str, **option: Any) -> Any:
    """A settings field that is also a command-line option: ``help`` (``{default}`` is filled in) and argparse's
    ``type``, ``choices``, ``nargs`` or ``action``; ``flag`` names the option when it is not ``--`` and the field's
    name. A field named in :data:`RULES` is checked by its rule while the command line is parsed."""
    return field(default=default, metadata={"help": help, **option})


def option_of(f: Field) -> str:
    """The command-line option of a :func:`setting` field: its ``flag``, else ``--field-name``."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


SWITCH = {"action": argparse.BooleanOptionalAction}  # --x and --no-x, so a sweep can say false


# config.json keys of earlier versions and their names now
LEGACY_KEYS = {"profile": "telemetry", "profile_interval": "telemetry_interval"}


MAX_EPOCHS = 10_000  # a bad value (1e11) would otherwise lay out a schedule and train for ever


# the valid range of each numeric TrainConfig field, declared once: TrainConfig checks its values with it,
# and `train`'s options check theirs at parse time through train_option_type (NaN fails every comparison)
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: 1 <= v <= MAX_EPOCHS, f"use an integer from 1 to {MAX_EPOCHS:,}"),
    "batch_size": (lambda v: v >= 1, "use an integer >= 1"),
    "lr": (lambda v: 0 < v < math.inf, "use a finite number > 0"),
    "momentum": (lambda v: 0 <= v < 1, "use 0 <= momentum < 1"),
    "weight_decay": (lambda v: 0 <= v < math.inf, "use a finite number >= 0"),
    "label_smoothing": (lambda v: 0 <= v < 1, "use 0 <= label_smoothing < 1"),
    "crop_padding": (lambda v: v >= 0, "use an integer >= 0"),
    "cutout_size": (lambda v: v >= 1, "use an integer >= 1"),
    "patience": (lambda v: v >= 0, "use 0 (off) or a positive integer"),
    "val_fraction": (lambda v: 0 < v < 1, "use a fraction between 0 and 1, e.g. 0.1"),
    "image_size": (lambda v: v is None or v >= 8, "use an integer >= 8"),
    "checkpoint_every": (lambda v: v >= 1, "use an integer >= 1"),
    "telemetry_interval": (lambda v: 0 < v < math.inf, "use a finite number > 0 of seconds"),
    "torch_profile_steps": (lambda v: v >= 0, "use 0 (off) or a positive integer"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run. Invalid values raise ConfigError naming the field."""

    model: str = setting("ex1", "registered model name (see `cifarkit info`; default {default})")
    dataset: str = "cifar10"
    epochs: int = 10
    batch_size: int = setting(128, "default {default}")
    lr: float = setting(1e-3, "peak learning rate (default {default})")
    optimizer: str = setting("adam", "default {default}", choices=OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum, Nesterov when > 0 (default {default})")
    nesterov: bool = True
    weight_decay: float = setting(0.0, "default {default}")
    scheduler: str = setting(
        "none", "learning-rate schedule over the whole run, stepped every batch (default {default})", choices=SCHEDULERS
    )
    label_smoothing: float = setting(0.0, "default {default}")
    augment: str = setting("crop+flip", "none, or crop/flip/cutout joined with + (default {default})")
    crop_padding: int = 4
    cutout_size: int = 8
    alternating_flip: bool = setting(
        False, "flip each image every other epoch rather than by chance (with flip in --augment)", **SWITCH
    )
    patience: int = setting(0, "early stopping patience in epochs (default {default}: off)")
    monitor: str = setting(
        "val_accuracy", "metric for best.pt and early stopping (default {default})", choices=MONITORS
    )
    val_fraction: float = setting(0.1, "share of train held out for validation (default {default})")
    seed: int = setting(0, "default {default}", type=int)
    device: str = "auto"
    image_size: int | None = setting(None, "model input side (default: the model's own)")
    amp: str = "auto"
    channels_last: bool | None = None
    deterministic: bool = setting(
        True, "repeatable GPU kernels, so --resume continues exactly (--no-deterministic trades it for speed)", **SWITCH
    )
    compile: bool = setting(False, "torch.compile the model (pays back only on long runs; see README)", **SWITCH)
    cuda_graphs: bool | None = None  # replay the training step as a CUDA graph; None: auto (CUDA/ROCm, plain step)
    checkpoint_every: int = setting(1, "write last.pt every k epochs (default {default})")
    model_kwargs: dict[str, Any] | None = None
    telemetry: bool = setting(False, "record hardware telemetry into perf/*.jsonl", **SWITCH)
    telemetry_interval: float = setting(0.5, "telemetry sampling period in seconds (default {default})")
    torch_profile_steps: int = setting(
        0, "record N training steps with torch.profiler (default {default}: off)", flag="--torch-profile", metavar="N"
    )
    pretrained: bool = setting(
        False,
        "start from ImageNet weights (resnet18_imagenet, mobilenetv3_imagenet; cached in $TORCH_HOME/hub)",
        **SWITCH,
    )
    sync_bn: bool = setting(
        False,
        "under torchrun on GPUs: synchronise batch norm over all processes (statistics of the global batch)",
        **SWITCH,
    )

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid: {what}")

        for name, (ok, what) in RULES.items():
            check(ok(getattr(self, name)), name, what)
        check(self.optimizer in OPTIMIZERS, "optimizer", f"choose {', '.join(OPTIMIZERS)}")
        check(self.scheduler in SCHEDULERS, "scheduler", f"choose {', '.join(SCHEDULERS)}")
        parse_augment(self.augment)
        check(self.monitor in MONITORS, "monitor", f"choose {', '.join(MONITORS)}")
        check(self.amp in AMP_MODES, "amp", f"choose {', '.join(AMP_MODES)}")

    @property
    def augmentations(self) -> tuple[str, ...]:
        return parse_augment(self.augment)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in fields(cls)}
        data = {LEGACY_KEYS.get(k, k): v for k, v in data.items()}  # config.json of earlier versions
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


# Named recipes: the settings an experiment is known by, declared once; notebooks and the CLI name them.
RECIPES: dict[str, dict[str, Any]] = {
    # the course's EX-1 as the students ran it: Adam at 1e-3, batch 128, no augmentation, no schedule
    "course-ex1": {"model": "ex1", "optimizer": "adam", "lr": 1e-3, "batch_size": 128, "augment": "none"},
    # cifarkit's EX-1 (notebook 01): the same network with crop+flip and a one-cycle schedule to a 5x peak
    "ex1": {
        "model": "ex1",
        "optimizer": "adam",
        "lr": 5e-3,
        "batch_size": 128,
        "augment": "crop+flip",
        "scheduler": "onecycle",
    },
}


def recipe(name: str, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of the named recipe in :data:`RECIPES`, with ``overrides`` on top."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose {', '.join(RECIPES)}")
    return TrainConfig(**{**RECIPES[name], **overrides})


# ----------------------------------------------------------------------------- command-line types
# argparse ``type=`` functions: a bad value is refused while parsing, in argparse's one line


def train_option_type(name: str, parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse type of ``train``'s option for the TrainConfig field ``name``: ``parse`` (int or float) reads
    the text, and the field's rule in :data:`RULES` checks it, so the range is written once."""
    ok, what = RULES[name]

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if parse is int else 'a number'}"
            ) from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{text} is invalid: {what}")
        return value

    return convert


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def finite_float(text: str, minimum: float, inclusive: bool) -> float:
    """A finite number >= (or >) ``minimum``, or an argparse error saying which."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    ok = value >= minimum if inclusive else value > minimum
    if not (ok and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number {'>=' if inclusive else '>'} {minimum:g}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return finite_float(text, 0, inclusive=False)


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a fraction between 0 and 1, e.g. 0.70")
    return value
