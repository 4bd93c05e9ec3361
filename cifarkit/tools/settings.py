"""The settings of cifarkit's commands and tools, one frozen dataclass each: ``evaluate``, ``predict``,
``series``, ``speedrun``, ``input-bench``, ``amp-check``, ``deploy-bench`` (and notebook 08), ``sweep``'s SLURM
jobs, notebook 09's transfer study, and the notebooks' profiles (smoke / quick / full), which hold the last two. A training run's own
settings are :class:`cifarkit.config.TrainConfig`.

A field made with :func:`cifarkit.config.setting` is also a command-line option, generated from the field by
``cifarkit.cli.add_settings``, so each is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cifarkit.config import (
    AMP_HELP,
    AMP_MODES,
    EVAL_BATCH_SIZE,
    IMAGE_SIDES,
    TOP_K,
    TTA_AVERAGES,
    TTA_MODES,
    TrainConfig,
    check_settings,
    count,
    fraction,
    number,
    positive_float,
    positive_int,
    setting,
    text,
)
from cifarkit.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """A frozen settings dataclass whose fields are held to their declared ranges when it is made
    (:func:`cifarkit.config.check_settings`), in code, from a file or from the command line alike."""

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass(frozen=True)
class TtaSettings(Settings):
    """How ``predict`` and ``evaluate`` look at each image: the test-time augmentation and how its views are
    averaged."""

    tta: str = setting("none", "test-time augmentation (default {default})", choices=TTA_MODES)
    tta_average: str = setting(
        "logits", "average the views' logits or probabilities (default {default})", choices=TTA_AVERAGES
    )


@dataclass(frozen=True)
class PredictSettings(TtaSettings):
    """What ``cifarkit predict`` lists for each image."""

    topk: int = setting(
        TOP_K, "classes listed per image, at most all the checkpoint has (default {default})", type=positive_int
    )


@dataclass(frozen=True)
class EvaluateSettings(TtaSettings):
    """What ``cifarkit evaluate`` scores: a split, in batches, with one test-time augmentation or all of them."""

    tta: str = setting(
        "none", "test-time augmentation, or all side by side (default {default})", choices=(*TTA_MODES, "all")
    )
    split: str = setting("test", "default {default}", choices=("test", "train"))
    batch_size: int = setting(EVAL_BATCH_SIZE, "images per batch (default {default})", type=positive_int)


@dataclass(frozen=True)
class SpeedrunSettings(Settings):
    """What ``cifarkit speedrun`` runs: a recipe, the validation top-1 it must reach, whether the course baseline
    races it, and where the run goes."""

    recipe: str = setting("speedrun", "speedrun (CPU-sized) or flagship (airbench94-sized) (default {default})")
    target: float = setting(
        0.70, "validation top-1 that counts as reached, recipe and baseline (default {default})", type=fraction
    )
    baseline: bool = setting(
        False,
        "also time the course EX-1 recipe on a seed-style pipeline to --target (minutes on a CPU)",
        action="store_true",
    )
    seed: int = setting(0, "default {default}", type=count)
    amp: str = setting("auto", AMP_HELP + " (default {default})", choices=AMP_MODES)
    out: str = setting("reports/runs", "parent folder of the run folder (default {default})")
    val_fraction: float = TrainConfig.val_fraction


@dataclass(frozen=True)
class InputBenchSettings(Settings):
    """What ``input-bench`` times: a seed-style DataLoader, cifarkit's loader and the bare training step."""

    model: str = setting("ex1", "the network whose training step is timed (default {default})")
    batch_size: int = setting(128, "images per step (default {default})", type=positive_int)
    steps: int = setting(60, "timed training steps per measurement (default {default})", type=positive_int)
    workers: int = setting(2, "DataLoader workers of the seed-style pipeline (default {default})", type=count)
    rounds: int = setting(3, "interleaved repetitions; medians are reported (default {default})", type=positive_int)


@dataclass(frozen=True)
class AmpCheckSettings(Settings):
    """What ``amp-check`` compares: one speedrun recipe's training step under each precision."""

    recipe: str = setting("flagship", "the speedrun recipe whose network is timed (default {default})")
    modes: tuple[str, ...] = setting(
        ("off", "bf16"), "amp modes; off is fp32 (default off bf16)", nargs="+", choices=AMP_MODES[1:]
    )
    batch_size: int | None = setting(None, "images per step (default: the recipe's)", type=positive_int)
    steps: int = setting(3, "timed steps per mode, after one warm-up step (default {default})", type=positive_int)


@dataclass(frozen=True)
class DeploySettings(Settings):
    """How ``deploy-bench`` builds and times the deployment variants (notebook 08 takes its profile's)."""

    sparsities: tuple[float, ...] = setting(
        (0.3, 0.5),
        "share of channels removed per prunable layer (default {default})",
        flag="--sparsity",
        type=fraction,
        nargs="+",
    )
    finetune_epochs: float = setting(
        1.0,
        "epochs over the training split after each pruning, fractions allowed (default {default})",
        type=positive_float,
    )
    finetune_lr: float = setting(1e-3, type=positive_float)
    calibration_images: int = setting(512, type=positive_int)  # training images that calibrate the int8 ranges
    warmup: int = setting(20, "untimed calls first (default {default})", type=positive_int)
    runs: int = setting(
        200, "batch-1 calls timed for the latency percentiles, 2 or more (default {default})", type=number(int, 2)
    )
    throughput_batch: int = setting(256, type=positive_int)
    throughput_runs: int = setting(5, type=positive_int)
    seed: int = setting(0, type=count)

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [variant_name(s) for s in self.sparsities]
        if len(set(names)) < len(names):
            raise ConfigError(
                f"--sparsity {' '.join(f'{s:g}' for s in self.sparsities)} names one variant twice; "
                "give shares that differ by at least 0.001"
            )


@dataclass(frozen=True)
class SweepSettings(Settings):
    """How ``cifarkit sweep`` runs the runs of a sweep file: how many at a time, into which folder, and where."""

    workers: int | None = setting(None, "processes at a time (default: one per GPU, else 1)", type=positive_int)
    out: str | None = setting(None, "parent of the run folders (default reports/sweeps/<the sweep file's name>)")
    executor: str = setting(
        "local",
        "local processes (default), or one SLURM job per run submitted with submitit (--workers: at a time)",
        choices=("local", "slurm"),
    )


@dataclass(frozen=True)
class Slurm(Settings):
    """Where and how each run of a sweep is submitted as its own SLURM job (through submitit).

    ``cluster`` is submitit's: ``slurm`` on a cluster; ``local`` runs the same jobs as local processes
    (what the tests use on machines without SLURM).
    """

    partition: str | None = setting(None, "SLURM partition (default: the cluster's)", flag="--slurm-partition")
    time_min: int = setting(60, "minutes per job (default {default})", flag="--slurm-time", type=positive_int)
    gpus: int = setting(1, "GPUs per job (default {default}; 0 for CPU jobs)", flag="--slurm-gpus", type=count)
    cpus: int = setting(4, "CPU cores per job (default {default})", flag="--slurm-cpus", type=positive_int)
    cluster: str = "slurm"


@dataclass(frozen=True)
class TransferSettings(Settings):
    """How much work notebook 09 does (each profile has its own)."""

    pretrain_images: int | None = setting(10_000, type=positive_int)  # source-class images to pretrain on (None: all)
    pretrain_epochs: int = setting(3, type=positive_int)
    labels_per_class: tuple[int, ...] = setting((10, 100, 1000), type=positive_int)  # the label budgets of the curve
    choose_at: int = 100  # the budget at which every setting is chosen on validation
    # the fixed validation set, held out of the target's training images
    val_per_class: int = setting(100, type=positive_int)
    # labelled images are drawn from at most this many per class (None: all)
    pool_per_class: int | None = setting(None, type=positive_int)
    steps: int = setting(60, type=positive_int)  # optimiser steps of a fine-tuning run at least, whatever its budget
    # and at least this many passes over its labelled images: a large budget is not starved
    passes: float = setting(3.0, type=positive_float)
    batch_size: int = setting(64, type=positive_int)
    lrs: tuple[float, ...] = setting((1e-3, 3e-3), type=positive_float)  # Adam learning rates tried on validation
    seeds: int = setting(3, type=positive_int)  # each seed draws its own labelled images and initialises its own head
    # input sizes tried for the ImageNet backbone (images are upsampled)
    sizes: tuple[int, ...] = setting((32, 64, 96), type=number(int, *IMAGE_SIDES))
    # the ImageNet backbone's linear head: L2 tried on validation
    weight_decays: tuple[float, ...] = setting((1e-4, 1e-2), type=positive_float)
    test_images: int | None = setting(None, type=positive_int)  # target-class test images scored (None: all)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.choose_at not in self.labels_per_class:
            raise ConfigError(f"choose_at={self.choose_at} must be one of labels_per_class {self.labels_per_class}")


def variant_name(sparsity: float) -> str:
    """The pruned variant's name (and file stem) for a channel share: 0.3 -> ``pruned-30``, 0.305 -> ``pruned-30.5``."""
    return f"pruned-{round(100 * sparsity, 1):g}"


@dataclass(frozen=True)
class Profile(Settings):
    """How much work a notebook does. ``None`` limits keep the whole split."""

    name: str = setting(type=text)
    epochs: int = setting(type=positive_int)  # baseline epochs; notebooks scale from it
    train_images: int | None = setting(type=positive_int)
    test_images: int | None = setting(type=positive_int)
    big_model_train_images: int | None = setting(type=positive_int)  # EX-2 at 128 px and its 32 px reference: costly
    big_model_epochs: int = setting(type=positive_int)
    big_model_seeds: int = setting(type=positive_int)  # 02 trains both models at this many seeds
    ablation_train_images: int | None = setting(type=positive_int)
    ablation_epochs: int = setting(type=positive_int)
    ablation_hidden_units: int = setting(type=positive_int)
    # every arm of 03's ablation and every piece of 07's, at this many seeds
    ablation_seeds: int = setting(type=positive_int)
    tta_test_images: int | None = setting(type=positive_int)
    lr_finder_steps: int = setting(200, type=positive_int)  # 03's learning-rate range test
    # 03 holds out this share of its images for validation: the paired test needs enough of them to separate arms
    ablation_val_fraction: float = setting(0.1, type=fraction)
    # 02's test split: EX-2 at 128 px is slow to score on a CPU
    big_model_test_images: int | None = setting(None, type=positive_int)
    # 02 holds out this share for validation: enough images to separate its models
    big_model_val_fraction: float = setting(0.1, type=fraction)
    speedrun_recipe: str = setting("speedrun", type=text)  # a name from cifarkit.speedrun.recipe.RECIPES
    speedrun_ablation_train_images: int | None = setting(None, type=positive_int)
    course_epochs: int = setting(10, type=positive_int)  # the course EX-1 recipe's budget in the 07 race
    deploy: DeploySettings = DeploySettings()  # 08: how the variants are built and timed
    transfer: TransferSettings = TransferSettings()  # 09: pretraining, label budgets, fine-tuning, the ImageNet row


PROFILES = {
    # CI: every notebook runs end to end in about a minute on a 2-core CPU (synthetic data)
    "smoke": Profile(
        "smoke",
        epochs=2,
        train_images=1000,
        test_images=300,
        big_model_train_images=160,  # one batch of 128 after the validation split: 02 is the smoke's costliest
        big_model_epochs=1,
        big_model_seeds=2,
        ablation_train_images=500,
        ablation_epochs=1,
        ablation_hidden_units=8,
        ablation_seeds=2,
        ablation_val_fraction=0.3,
        tta_test_images=200,
        speedrun_recipe="tiny",
        speedrun_ablation_train_images=500,
        course_epochs=2,
        lr_finder_steps=20,
        big_model_test_images=300,
        deploy=DeploySettings(sparsities=(0.5,), finetune_epochs=0.5, runs=20),
        transfer=TransferSettings(
            pretrain_images=None,
            pretrain_epochs=1,
            labels_per_class=(2, 10),
            choose_at=10,
            val_per_class=10,
            steps=6,
            batch_size=16,
            sizes=(32,),
            weight_decays=(1e-2,),
        ),
    ),
    # meaningful numbers on a laptop CPU, the whole series in one sitting: at most 30 min of notebooks on a
    # 2-core AVX2 CPU (make bench-series checks it; docs/results.md has what each budget cost)
    "quick": Profile(
        "quick",
        epochs=7,
        train_images=None,
        test_images=None,
        big_model_train_images=2_880,  # half held out: 1,440 to train on, 1,440 to validate
        big_model_epochs=3,
        big_model_seeds=2,
        big_model_val_fraction=0.5,
        ablation_train_images=8_000,  # 5,600 to train on, 2,400 to validate: about 1 point of standard error
        ablation_epochs=3,
        ablation_hidden_units=32,
        ablation_seeds=2,
        ablation_val_fraction=0.3,
        tta_test_images=None,
        speedrun_recipe="speedrun",
        speedrun_ablation_train_images=6_000,
        course_epochs=3,
        lr_finder_steps=100,
        big_model_test_images=2_500,
        transfer=TransferSettings(pool_per_class=1_100, test_images=1_000),  # 96 px Lite0 features cost most in 09
    ),
    # the course's settings: for a GPU
    "full": Profile(
        "full",
        epochs=30,
        train_images=None,
        test_images=None,
        big_model_train_images=None,
        big_model_epochs=30,
        big_model_seeds=2,
        ablation_train_images=None,
        ablation_epochs=30,
        ablation_hidden_units=64,
        ablation_seeds=3,
        tta_test_images=None,
        speedrun_recipe="flagship",
        speedrun_ablation_train_images=None,
        course_epochs=30,
        deploy=DeploySettings(sparsities=(0.3, 0.5, 0.7), finetune_epochs=3.0, runs=500),
        transfer=TransferSettings(
            pretrain_images=None,
            pretrain_epochs=15,
            val_per_class=200,
            steps=300,
            lrs=(3e-4, 1e-3, 3e-3),
            seeds=3,
            sizes=(64, 96, 128, 224),
            weight_decays=(1e-4, 1e-3, 1e-2),
        ),
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile, or a one-line error listing the choices."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass(frozen=True)
class SeriesSettings(Settings):
    """What ``cifarkit series`` runs: on which data, at which budget, which notebooks, into which report folder."""

    dataset: str | None = setting(
        None,
        "cifar10 (downloaded), cifar100, folder:PATH or synthetic (default cifar10; with --resume the report's)",
        type=text,
    )
    profile: str = setting(
        "quick",
        "how much work: on a 2-core AVX2 CPU smoke takes about 2 min (synthetic data, a check) and quick "
        "at most 30 min (CIFAR-10); full: the course settings, for a GPU (default {default})",
        choices=tuple(PROFILES),
    )
    amp: str | None = setting(
        None,
        "precision of every notebook that trains; auto (default): bf16 on CPUs with native bf16, else fp32 (off); "
        "fp16 needs a GPU (with --resume: the report's)",
        choices=AMP_MODES,
    )
    seed: int = setting(0, "seed of every notebook's runs (default {default})", type=count)
    out: str = setting("reports", "parent folder of the report folder (default {default})")
    only: str | None = setting(None, "comma-separated notebook numbers, e.g. 00,03")
    resume: str | None = setting(None, "continue a report folder, skipping finished notebooks", metavar="DIR")
    goal: float | None = setting(
        None,
        "at the end, print each notebook's time and the series' beside this goal (make bench-series: 1800, the quick "
        "series on a 2-core AVX2 CPU); with --resume of a finished report it only prints",
        type=positive_float,
        metavar="SECONDS",
    )
