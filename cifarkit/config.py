"""Frozen, validated configuration for a training run; saved verbatim into run folders and checkpoints.

A field made with :func:`setting` is also a command-line option: ``cifarkit.cli.add_settings`` generates it from
the field (flag, type, default, help), so each setting is written once, in its dataclass: :class:`TrainConfig`
here, the tools' in :mod:`cifarkit.tools.settings`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
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
EVAL_BATCH_SIZE = 256  # images per batch when a checkpoint is scored (evaluate --batch-size, Predictor)
TOP_K = 5  # classes listed per image (predict --topk, the notebooks' predictions)
IMAGE_SIDES = (8, 4096)  # the model input sides a run may ask for and a checkpoint may hold, in pixels
MONTAGE_COLS = 3  # figures per row of a montage (montage --cols, figures.montage)


def parse_augment(spec: str) -> tuple[str, ...]:
    """Parse ``"crop+flip+cutout"`` (or ``"none"``) into a tuple of augmentation names."""
    if spec in ("", "none"):
        return ()
    parts = tuple(p.strip() for p in spec.replace(",", "+").split("+") if p.strip())
    unknown = [p for p in parts if p not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {unknown[0]!r}; combine {', '.join(AUGMENTATIONS)} with + or use none")
    return parts


def setting(default: Any = MISSING, help: str | None = None, **option: Any) -> Any:
    """A settings field, declared once: its ``default`` (none: the field must be given), its range or set as
    argparse's ``type`` (one of the number types below) or ``choices`` (also ``nargs``, ``action``, ``metavar``),
    and with ``help`` (``{default}`` is filled in) a command-line option too, ``--`` and the field's name unless
    ``flag`` names it. :func:`check_settings` holds a value set in code to the same ``type`` and ``choices``."""
    return field(default=default, metadata={"help": help, **option} if help else option)


def option_of(f: Field) -> str:
    """The command-line option of a :func:`setting` field: its ``flag``, else ``--field-name``."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def check_settings(settings: Any) -> None:
    """Hold each field of a settings dataclass to its declared ``choices`` and ``type``, in the command line's
    words, so a settings object built in code or read from a file (a profile, a sweep, a report's series.json, a
    notebook) is checked as the command line checks it: a value must read back as itself (``"3"`` is text, not
    the integer 3), a ``str`` field holds text, a ``bool`` one True or False. ``__post_init__`` calls it."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        name = option_of(f) if "help" in f.metadata else f"{type(settings).__name__}.{f.name}"
        read = f.metadata.get("type", str if str(f.type).startswith("str") else None)
        for v in value if isinstance(value, tuple) else (value,):  # nargs="+" options hold tuples
            if v is None and "None" in str(f.type):  # a field typed ``X | None`` may be unset
                continue
            if str(f.type).startswith("bool") and not isinstance(v, bool):  # "False" is text, and text is true
                raise ConfigError(f"{name}: {v!r} is not True or False")
            if v not in f.metadata.get("choices", (v,)):
                raise ConfigError(f"{name}: {v!r} is not one of {', '.join(map(str, f.metadata['choices']))}")
            if read is not None:
                check_value(name, v, read)


def check_value(name: str, value: Any, read: Callable[[str], Any]) -> None:
    """Hold ``value`` to the argparse type ``read`` (e.g. :data:`positive_int`) in the command line's words: it must
    read back as itself. For a function's argument, as :func:`check_settings` does for a settings field."""
    try:
        same = read(str(value)) == value
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    if not same:
        wanted = "text" if read in (str, text) else "a number"
        raise ConfigError(f"{name}: {value!r} is {type(value).__name__}; give {wanted}")


# ----------------------------------------------------------------------------- ranges
# argparse ``type`` functions, and each setting's declared range: a bad value is refused while parsing, in
# argparse's one line, and check_settings refuses the same value set in code with the same words.


def number(
    parse: type = float,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    above: bool = False,
    below: bool = False,
    words: str = "",
) -> Callable[[str], Any]:
    """An argparse type: text that ``parse`` (int or float) reads as a finite number >= ``low`` (> with
    ``above``) and <= ``high`` (< with ``below``); an error says the range in ``words``, or in symbols."""
    bounds = [f"{'>' if above else '>='} {low:,g}"] if low > -math.inf else []
    bounds += [f"{'<' if below else '<='} {high:,g}"] if high < math.inf else []
    rule = words or f"{'an integer' if parse is int else 'a finite number'} {' and '.join(bounds)}"

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {'an integer' if parse is int else 'a number'}"
            ) from None
        inside = (value > low if above else value >= low) and (value < high if below else value <= high)
        if not (inside and math.isfinite(value)):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"{text} must be {rule}")
        return value

    return convert


def text(value: str) -> str:
    """argparse type: text that is not blank (a dataset spec, a name)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is blank; give a name")
    return value


positive_int = number(int, 1)
count = number(int, 0)  # 0 (none, off) or more
positive_float = number(float, 0, above=True)
non_negative = number(float, 0)
fraction = number(float, 0, 1, above=True, below=True, words="a fraction between 0 and 1, e.g. 0.7")
share = number(float, 0, 1, below=True)  # momentum, label smoothing: 0 (off) up to, not including, 1
# a bad value (1e11) would otherwise lay out a schedule and train for ever
epochs_type = number(int, 1, 10_000)


SWITCH = {"action": argparse.BooleanOptionalAction}  # --x and --no-x, so a sweep can say false


def auto_switch(text: str) -> bool | None:
    """argparse type of an auto/on/off option: None (the device decides), True or False (as set in code)."""
    words = {"auto": None, "on": True, "off": False, "True": True, "False": False}
    if text not in words:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of auto, on, off")
    return words[text]


AUTO = {"type": auto_switch, "metavar": "{auto,on,off}"}  # an auto/on/off option; auto is None


# config.json keys of earlier versions and their names now
LEGACY_KEYS = {"profile": "telemetry", "profile_interval": "telemetry_interval"}


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run. Invalid values raise ConfigError naming the field."""

    model: str = setting("ex1", "registered model name (see `cifarkit info`; default {default})")
    dataset: str = "cifar10"
    epochs: int = setting(10, type=epochs_type)  # train's --epochs is its own option: with --resume it extends a run
    batch_size: int = setting(128, "default {default}", type=positive_int)
    lr: float = setting(1e-3, "peak learning rate (default {default})", type=positive_float)
    optimizer: str = setting("adam", "default {default}", choices=OPTIMIZERS)
    momentum: float = setting(0.9, "SGD momentum, Nesterov when > 0 (default {default})", type=share)
    nesterov: bool = True
    weight_decay: float = setting(0.0, "default {default}", type=non_negative)
    scheduler: str = setting(
        "none", "learning-rate schedule over the whole run, stepped every batch (default {default})", choices=SCHEDULERS
    )
    label_smoothing: float = setting(0.0, "default {default}", type=share)
    augment: str = setting("crop+flip", "none, or crop/flip/cutout joined with + (default {default})")
    crop_padding: int = setting(4, type=count)
    cutout_size: int = setting(8, type=positive_int)
    alternating_flip: bool = setting(
        False, "flip each image every other epoch rather than by chance (with flip in --augment)", **SWITCH
    )
    patience: int = setting(0, "early stopping patience in epochs (default {default}: off)", type=count)
    monitor: str = setting("val_accuracy", "picks best.pt and drives --patience (default {default})", choices=MONITORS)
    val_fraction: float = setting(0.1, "share of train held out for validation (default {default})", type=fraction)
    seed: int = setting(0, "default {default}", type=count)
    device: str = "auto"
    image_size: int | None = setting(
        None, "model input side in pixels (default: the model's own)", type=number(int, *IMAGE_SIDES)
    )
    amp: str = setting("auto", AMP_HELP + " (default {default})", choices=AMP_MODES)
    channels_last: bool | None = setting(None, "memory format; auto: on for CUDA/ROCm, off on CPU/MPS", **AUTO)
    deterministic: bool = setting(
        True, "repeatable GPU kernels, so --resume continues exactly (--no-deterministic trades it for speed)", **SWITCH
    )
    compile: bool = setting(False, "torch.compile the model (pays back only on long runs; see README)", **SWITCH)
    cuda_graphs: bool | None = setting(
        None,
        "replay each training step as one CUDA graph; auto: on for CUDA/ROCm unless --compile, fp16, --torch-profile or torchrun is in the way",
        **AUTO,
    )
    checkpoint_every: int = setting(1, "write last.pt every k epochs (default {default})", type=positive_int)
    model_kwargs: dict[str, Any] | None = None
    telemetry: bool = setting(False, "record hardware telemetry into perf/*.jsonl", **SWITCH)
    telemetry_interval: float = setting(0.5, "sampling period in seconds (default {default})", type=positive_float)
    torch_profile_steps: int = setting(
        0,
        "record N training steps with torch.profiler (default {default}: off)",
        flag="--torch-profile",
        metavar="N",
        type=count,
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
        check_settings(self)
        parse_augment(self.augment)

    @property
    def augmentations(self) -> tuple[str, ...]:
        return parse_augment(self.augment)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON and checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        if not isinstance(data, dict):
            raise ConfigError(f"a training configuration is a mapping of settings, not a {type(data).__name__}")
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
