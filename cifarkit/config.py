"""Frozen, validated configuration for a training run; saved verbatim into run folders and checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import ConfigError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle")
AUGMENTATIONS = ("crop", "flip", "cutout")
MONITORS = ("val_accuracy", "val_loss")
AMP_MODES = ("auto", "off", "fp16", "bf16")
DEVICE_HELP = "auto, cpu, cuda, cuda:N (also AMD ROCm), mps"


def parse_augment(spec: str) -> tuple[str, ...]:
    """Parse ``"crop+flip+cutout"`` (or ``"none"``) into a tuple of augmentation names."""
    if spec in ("", "none"):
        return ()
    parts = tuple(p.strip() for p in spec.replace(",", "+").split("+") if p.strip())
    unknown = [p for p in parts if p not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {unknown[0]!r}; combine {', '.join(AUGMENTATIONS)} with + or use none")
    return parts


# config.json keys of earlier versions and their names now
LEGACY_KEYS = {"profile": "telemetry", "profile_interval": "telemetry_interval"}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run. Invalid values raise ConfigError naming the field."""

    model: str = "ex1"
    dataset: str = "cifar10"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    scheduler: str = "none"
    label_smoothing: float = 0.0
    augment: str = "crop+flip"
    crop_padding: int = 4
    cutout_size: int = 8
    patience: int = 0
    monitor: str = "val_accuracy"
    val_fraction: float = 0.1
    seed: int = 0
    device: str = "auto"
    image_size: int | None = None
    amp: str = "auto"
    channels_last: bool | None = None
    deterministic: bool = True
    compile: bool = False
    checkpoint_every: int = 1
    model_kwargs: dict[str, Any] | None = None
    telemetry: bool = False  # hardware telemetry into perf/*.jsonl (cifarkit.profiler)
    telemetry_interval: float = 0.5  # seconds between telemetry samples
    torch_profile_steps: int = 0
    pretrained: bool = False  # start from ImageNet weights (resnet18_imagenet, mobilenetv3_imagenet)
    sync_bn: bool = False  # under torchrun on GPUs: batch norm statistics over the global batch

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid: {what}")

        check(self.epochs >= 1, "epochs", "use an integer >= 1")
        check(self.batch_size >= 1, "batch_size", "use an integer >= 1")
        check(0 < self.lr < math.inf, "lr", "use a finite positive number")
        check(self.optimizer in OPTIMIZERS, "optimizer", f"choose {', '.join(OPTIMIZERS)}")
        check(0 <= self.momentum < 1, "momentum", "use 0 <= momentum < 1")
        check(self.weight_decay >= 0, "weight_decay", "use a number >= 0")
        check(self.scheduler in SCHEDULERS, "scheduler", f"choose {', '.join(SCHEDULERS)}")
        check(0 <= self.label_smoothing < 1, "label_smoothing", "use 0 <= label_smoothing < 1")
        parse_augment(self.augment)
        check(self.crop_padding >= 0, "crop_padding", "use an integer >= 0")
        check(self.cutout_size >= 1, "cutout_size", "use an integer >= 1")
        check(self.patience >= 0, "patience", "use 0 (off) or a positive integer")
        check(self.monitor in MONITORS, "monitor", f"choose {', '.join(MONITORS)}")
        check(0 < self.val_fraction < 1, "val_fraction", "use a fraction between 0 and 1, e.g. 0.1")
        check(self.image_size is None or self.image_size >= 8, "image_size", "use an integer >= 8")
        check(self.amp in AMP_MODES, "amp", f"choose {', '.join(AMP_MODES)}")
        check(self.checkpoint_every >= 1, "checkpoint_every", "use an integer >= 1")
        check(0 < self.telemetry_interval < math.inf, "telemetry_interval", "use a finite positive number of seconds")
        check(self.torch_profile_steps >= 0, "torch_profile_steps", "use 0 (off) or a positive integer")

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
