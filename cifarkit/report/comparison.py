"""Comparing run folders: ranking tables, legend labels, histories, model costs, throughput, the ablation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from cifarkit.models import create_model
from cifarkit.runs import read_run, read_run_file, slug
from cifarkit.tools.perflogs import bottleneck, perf_summary, run_conditions


def find_runs(root: str | Path) -> list[Path]:
    """Every readable training run folder (holding train.json and config.json) under ``root``; a run whose
    JSON is broken is left out with one warning."""
    found = sorted(p.parent for p in Path(root).rglob("train.json") if (p.parent / "config.json").is_file())
    return [run for run in found if read_run_file(run / "config.json") and read_run_file(run / "train.json")]


def run_row(run: Path, root: Path | None = None) -> dict[str, Any]:
    """One comparison row: config essentials, best epoch, val/test top-1/top-5, time and throughput."""
    files = read_run(run)
    cfg, env, train, test = files.config, files.env, files.train, files.test
    return {
        "run": str(run.relative_to(root)) if root else run.name,
        "model": cfg.get("model"),
        "dataset": cfg.get("dataset"),
        "augment": cfg.get("augment"),
        "model_kwargs": json.dumps(cfg.get("model_kwargs") or {}),
        "label_smoothing": cfg.get("label_smoothing"),
        "train_images": env.get("train_images"),
        "val_images": env.get("val_images"),
        "epochs": train.get("epochs_run"),
        "best_epoch": train.get("best_epoch"),
        "val_accuracy": train.get("best_val_accuracy"),
        "val_top5_accuracy": train.get("best_val_top5_accuracy", train.get("best_val_top5")),
        "test_accuracy": test.get("accuracy"),
        "test_top5_accuracy": test.get("top5_accuracy"),
        "train_time_s": train.get("train_time"),
        "images_per_s": train.get("images_per_s"),
        "data_wait_fraction": train.get("data_wait_fraction"),
    }


# what notebook 06 shows of the ranking: what ran, on what data, with what budget, and how it scored
RANKING_COLUMNS = [
    "run", "model", "dataset", "augment", "model_kwargs", "train_images", "epochs", "budget",
    "best_epoch", "val_images", "val_accuracy", "val_top5_accuracy", "test_accuracy", "test_top5_accuracy", "train_time_s",
]  # fmt: skip


def compare_runs(root: str | Path, dataset: str | None = None):
    """All runs under ``root`` (only those on ``dataset``, when given) as a DataFrame ranked by best
    validation top-1 (test never ranks); ``budget`` is training images x epochs. Empty, with every
    column, when there is no run."""
    root = Path(root)
    rows = [run_row(r, root) for r in find_runs(root)]
    if not rows:
        return pd.DataFrame(columns=[*RANKING_COLUMNS, "label_smoothing", "images_per_s", "data_wait_fraction"])
    df = pd.DataFrame(rows)
    df["budget"] = df["train_images"] * df["epochs"]
    df = df.sort_values("val_accuracy", ascending=False, ignore_index=True)
    return df if dataset is None else on_dataset(df, dataset)


def same_dataset(spec: Any, dataset: str) -> bool:
    """Whether a run's dataset ``spec`` is ``dataset``: specs compared by their slug, so ``folder:data/x`` and
    ``folder:/abs/data/x`` are one dataset, and 09's ``cifar10 (animals only)`` is another."""
    return slug(str(spec)) == slug(dataset)


def on_dataset(table: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The rows of a ranking table whose runs trained on ``dataset`` (:func:`same_dataset`)."""
    return table[table["dataset"].map(lambda d: same_dataset(d, dataset))].reset_index(drop=True)


def notebook_number(name: str) -> str | None:
    """The notebook a report's folder or run path belongs to, from its ``NN_`` prefix (``07`` for
    ``07_speedrun/2026...``); None for a name without one (a run outside a series report)."""
    return name[:2] if name[:2].isdigit() else None


def run_name(row: Mapping[str, Any]) -> str:
    """A run's short name in a sentence: its notebook number and model (``07 ex1``), so two runs of one model
    in a report are told apart; the model alone where the row has no numbered run."""
    number = notebook_number(str(row.get("run", "")))
    return f"{number} {row['model']}" if number else str(row["model"])


def run_label(run: Path) -> str:
    """A legend label that names the experiment, what sets the run apart and its budget, e.g.
    ``03 tinyvgg · crop+flip · BatchNorm, dropout 0.3 · 4,500 img × 5 ep`` (a torchrun run adds
    ``2 processes``, a seed other than 0 ``seed 1``)."""
    run = Path(run)
    files = read_run(run)
    cfg, env, train = files.config, files.env, files.train
    notebook = notebook_number(run.parent.name) or run.parent.name
    images = f"{env['train_images']:,} img" if env.get("train_images") else "? img"
    kwargs = cfg.get("model_kwargs") or {}
    extras = [
        "BatchNorm" if kwargs.get("batchnorm") else "",
        f"dropout {kwargs['dropout']:g}" if kwargs.get("dropout") else "",
        f"label smoothing {cfg['label_smoothing']:g}" if cfg.get("label_smoothing") else "",
        f"seed {cfg['seed']}" if cfg.get("seed") else "",  # repeated seeds of one setting, labelled apart
        f"{env['world_size']} processes" + (", synced BN" if cfg.get("sync_bn") else "")
        if env.get("world_size", 1) > 1
        else "",
    ]
    parts = [f"{notebook} {cfg.get('model', '?')}", str(cfg.get("augment", "?")), ", ".join(e for e in extras if e)]
    return " · ".join(p for p in parts if p) + f" · {images} × {train.get('epochs_run', '?')} ep"


def run_labels(run_dirs: Sequence[str | Path]) -> dict[str, str]:
    """:func:`run_label` of each training run folder among ``run_dirs`` (others are left out), keyed as given."""
    return {
        str(d): run_label(Path(d)) for d in dict.fromkeys(map(str, run_dirs)) if (Path(d) / "config.json").is_file()
    }


def load_histories(runs: Sequence[Path]) -> dict[str, dict]:
    """train.json of each run with ``train_images`` (from env.json: the images one epoch shows), keyed by
    :func:`run_label` (the run folder name is added if two labels clash)."""
    out: dict[str, dict] = {}
    for r in map(Path, runs):
        label = run_label(r)
        files = read_run(r)
        history = {**files.train, "train_images": files.env.get("train_images")}
        out[label if label not in out else f"{label} ({r.name})"] = history
    return out


def model_table(runs: Sequence[Path]):
    """Size, cost and results side by side: params, mult-adds, input size, s/epoch, peak memory, val/test top-1."""
    rows = []
    for run in map(Path, runs):
        files = read_run(run)
        cfg, env, train = files.config, files.env, files.train
        size = cfg["resolved"]["image_size"]
        num_classes = len(env["dataset_classes"])
        summary = model_summary(create_model(cfg["model"], num_classes, **cfg["resolved"]["model_kwargs"]), size)
        perf = perf_summary(run)
        rows.append(
            {
                "model": cfg["model"],
                "input_px": size,
                "params": summary["params"],
                "mult_adds": summary["mult_adds"],
                "s_per_epoch": train["train_time"] / max(train["epochs_run"], 1),
                "images_per_s": train["images_per_s"],
                "peak_memory_mb": perf.get("peak_memory_mb"),
                "added_memory_mb": perf.get("added_memory_mb"),
                "val_accuracy": train["best_val_accuracy"],
                "test_accuracy": files.test.get("accuracy"),
                "test_images": files.test.get("n"),
                "train_images": env.get("train_images"),
                "val_images": env.get("val_images"),
                "epochs": train["epochs_run"],
                "run": run.name,
            }
        )
    return pd.DataFrame(rows)


def throughput_table(report_dir: str | Path):
    """Per training run of a report: device, telemetry backends, images/s, data-wait share, median GPU
    busy percentage (where a GPU backend ran) and the :func:`bottleneck` verdict from both."""
    root = Path(report_dir)
    rows = []
    for run in find_runs(root):
        files = read_run(run)
        env, train = files.env, files.train
        perf = perf_summary(run)
        conditions = run_conditions(run)
        rows.append(
            {
                "run": str(run.relative_to(root)),
                "model": files.config["model"],
                "device": env.get("device"),
                "device_name": env.get("device_name"),
                "backends": "+".join(perf.get("backends", [])) or "none",
                "images_per_s": train.get("images_per_s"),
                "slowest_images_per_s": conditions["slowest_images_per_s"],
                "fastest_images_per_s": conditions["fastest_images_per_s"],
                "data_wait_fraction": train.get("data_wait_fraction"),
                "gpu_busy_median": perf.get("gpu_busy_median"),
                "peak_memory_mb": perf.get("peak_memory_mb"),
                "added_memory_mb": perf.get("added_memory_mb"),
                "other_load_percent": perf.get("other_load_percent"),
                "pace_spread": conditions["pace_spread"],
                "clean": conditions["clean"],
                "verdict": bottleneck(
                    train.get("data_wait_fraction"), perf.get("gpu_busy_median"), perf.get("other_load_percent")
                ),
            }
        )
    columns = ["run", "model", "device", "device_name", "backends", "images_per_s", "slowest_images_per_s"]
    columns += ["fastest_images_per_s", "data_wait_fraction", "gpu_busy_median", "other_load_percent"]
    empty = pd.DataFrame(columns=[*columns, "pace_spread", "clean", "verdict"])
    return pd.DataFrame(rows) if rows else empty


def fastest_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The fastest run of a :func:`throughput_table`, with the runner-up where one run of each cannot rank
    them: where the fastest run's slowest steady epoch was no faster than the runner-up's fastest one."""
    ranked = table.sort_values("images_per_s", ascending=False, kind="stable").head(2)  # equals: the first listed
    if len(ranked) == 2:
        first, second = ranked.iloc[0], ranked.iloc[1]
        low, high = first["slowest_images_per_s"], second["fastest_images_per_s"]
        if pd.notna(low) and pd.notna(high) and low <= high:
            return ranked
    return ranked.head(1)


def throughput_headline(table: pd.DataFrame) -> dict[str, Any]:
    """The headline of a :func:`throughput_table` for ``finish()``: device, backends, run count, the largest
    data-wait share and the fastest run (None where the report holds no runs)."""
    if table.empty:
        return {"device": None, "backends": None, "runs": 0, "max_data_wait_fraction": None, "fastest": None}
    fastest = fastest_runs(table)
    named = " and ".join(f"{run_name(row)} {row['images_per_s']:.0f} img/s" for _, row in fastest.iterrows())
    return {
        "device": table["device"].iloc[0],
        "backends": table["backends"].iloc[0],
        "runs": len(table),
        "max_data_wait_fraction": float(table["data_wait_fraction"].max()),
        "fastest": named + (" (within noise)" if len(fastest) == 2 else ""),
    }


def ranking_headline(table: pd.DataFrame) -> dict[str, Any]:
    """The headline of a :func:`compare_runs` table for ``finish()``: run count, the best run by validation."""
    top = table.iloc[0] if len(table) else None
    return {
        "runs": len(table),
        "best_run": None if top is None else top["run"],
        "best_val_accuracy": None if top is None else float(top["val_accuracy"]),
    }


def model_summary(model: nn.Module, image_size: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Parameters, mult-adds and a per-layer table (torchinfo) for one image of ``image_size``."""
    from torchinfo import summary

    stats = summary(
        model,
        input_size=(1, 3, image_size, image_size),
        device=device,
        verbose=0,
        col_names=("output_size", "num_params", "mult_adds"),
    )
    layers = [
        {"layer": name, "params": sum(p.numel() for p in module.parameters(recurse=False))}
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return {
        "params": int(stats.total_params),
        "trainable_params": int(stats.trainable_params),
        "mult_adds": int(stats.total_mult_adds),
        "layers": layers,  # every module that holds parameters itself, in model order
        "table": readable_summary(str(stats)),
    }


def readable_summary(table: str) -> str:
    """torchinfo's table with its mult-adds unit spelled out (it prints ``(Units.MEGABYTES)`` for millions)."""
    return re.sub(
        r"Total mult-adds \((?:Units\.)?(\w+)\)", lambda m: f"Total mult-adds ({MULT_ADD_UNITS.get(m[1], m[1])})", table
    )


# torchinfo's unit names for its mult-adds total, in words
MULT_ADD_UNITS = {
    "MEGABYTES": "millions",
    "GIGABYTES": "billions",
    "TERABYTES": "trillions",
    "M": "millions",
    "G": "billions",
    "T": "trillions",
}
