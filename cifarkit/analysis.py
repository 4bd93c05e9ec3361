"""Analyses the notebooks show: class balance, near-duplicates, confused examples, and comparing run folders."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, Split
from .runs import read_json

# ----------------------------------------------------------------------------- data exploration


def class_counts(ds: Dataset):
    """Images per class and split, as a DataFrame (classes as rows)."""
    import pandas as pd

    cols = {}
    for name in ("train", "test"):
        split = getattr(ds, name)
        if split is not None:
            cols[name] = torch.bincount(split.labels, minlength=ds.num_classes).tolist()
    return pd.DataFrame(cols, index=list(ds.classes))


def samples_per_class(
    split: Split, classes: Sequence[str], per_class: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``per_class`` random images of each class (class-major order) and their titles, for :func:`viz.image_grid`."""
    g = torch.Generator().manual_seed(seed)
    images, titles = [], []
    for c, name in enumerate(classes):
        idx = torch.nonzero(split.labels == c).flatten()
        pick = idx[torch.randperm(len(idx), generator=g)[:per_class]]
        images.append(split.images[pick].numpy())
        titles += [name] * len(pick)
    return np.concatenate(images), titles


def average_hash(images: torch.Tensor, side: int = 8) -> np.ndarray:
    """64-bit perceptual hash per image: grayscale, shrink to ``side`` x ``side``, bit = above the image mean."""
    gray = images.float().mean(dim=1, keepdim=True)
    small = torch.nn.functional.adaptive_avg_pool2d(gray, side).flatten(1)
    bits = (small > small.mean(dim=1, keepdim=True)).numpy()
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def thumbnails(images: torch.Tensor, side: int = 16) -> torch.Tensor:
    """Colour thumbnails (N, 3*side*side), float in 0-255: small enough to compare, robust to re-encoding."""
    return torch.nn.functional.adaptive_avg_pool2d(images.float(), side).flatten(1)


def near_duplicates(
    a: torch.Tensor, b: torch.Tensor, max_bits: int = 8, max_rms: float = 15.0, chunk: int = 512
) -> list[tuple[int, int, float]]:
    """Pairs (index in a, index in b, thumbnail RMS difference) of near-identical images, closest first.

    Two stages: 64-bit average hashes within ``max_bits`` propose candidates cheaply; a 16x16
    colour thumbnail RMS difference <= ``max_rms`` (of 255) confirms them. The hash alone
    matches unrelated images with the same coarse layout (sky over ground), the thumbnail check
    removes those while keeping re-encoded, slightly brightened or shifted copies.
    """
    ha, hb = average_hash(a), average_hash(b)
    ta, tb = thumbnails(a).numpy(), thumbnails(b).numpy()
    pairs: list[tuple[int, int, float]] = []
    for start in range(0, len(hb), chunk):
        dist = np.bitwise_count(ha[:, None] ^ hb[None, start : start + chunk])  # (len(a), chunk)
        ia, ib = np.nonzero(dist <= max_bits)
        ib = ib + start
        for s in range(0, len(ia), 65536):  # bounded memory however many candidates there are
            i, j = ia[s : s + 65536], ib[s : s + 65536]
            rms = np.sqrt(((ta[i] - tb[j]) ** 2).mean(axis=1))
            keep = rms <= max_rms
            pairs += [(int(x), int(y), round(float(r), 2)) for x, y, r in zip(i[keep], j[keep], rms[keep], strict=True)]
    return sorted(pairs, key=lambda p: (p[2], p[1]))


def stats_table(ds: Dataset, published: dict[str, tuple] | None = None):
    """Per-channel mean/std computed from the training images next to the published values."""
    import pandas as pd

    from .data import channel_stats

    split = ds.train if ds.train is not None else ds.test
    mean, std = channel_stats(split.images)
    table = pd.DataFrame({"computed_mean": mean, "computed_std": std}, index=["R", "G", "B"])
    if published:
        table["published_mean"] = published["mean"]
        table["published_std"] = published["std"]
    return table


def published_stats(ds: Dataset) -> dict[str, tuple] | None:
    """The published CIFAR statistics that apply to ``ds`` (CIFAR-10 also for folder copies of it)."""
    from .data import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD

    if ds.name.startswith("cifar100"):
        return {"mean": CIFAR100_MEAN, "std": CIFAR100_STD}
    if ds.name == "cifar10" or tuple(ds.classes) == CIFAR10_CLASSES:
        return {"mean": CIFAR10_MEAN, "std": CIFAR10_STD}
    return None


# ----------------------------------------------------------------------------- one run


@torch.no_grad()
def test_predictions(run_dir: str | Path, ds: Dataset, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of a run's best.pt on ``ds``'s test split."""
    from .predict import Predictor

    p = Predictor.from_checkpoint(Path(run_dir) / "best.pt", device)
    logits, labels = p.logits(p.check_dataset(ds).split("test"))
    return labels.numpy(), logits.argmax(1).numpy()


def confused_examples(
    labels: np.ndarray, preds: np.ndarray, true: int, predicted: int, n: int = 8, seed: int = 0
) -> np.ndarray:
    """Indices of up to ``n`` test images of class ``true`` predicted as ``predicted``, a seeded random
    choice (not the first ``n`` in file order)."""
    found = np.flatnonzero((labels == true) & (preds == predicted))
    return np.sort(np.random.default_rng(seed).permutation(found)[:n])


def overfitting_point(train: dict) -> dict[str, Any]:
    """When validation loss bottomed out versus when validation accuracy peaked."""
    val_loss = train["val_losses"]
    return {
        "min_val_loss_epoch": train.get("min_val_loss_epoch"),  # train.json already holds it
        "best_val_accuracy_epoch": train.get("best_epoch"),
        "epochs_run": len(val_loss),
        "final_train_minus_val_accuracy": (train["train_accuracies"][-1] - train["val_accuracies"][-1])
        if val_loss
        else None,
    }


# ----------------------------------------------------------------------------- many runs


def find_runs(root: str | Path) -> list[Path]:
    """Every training run folder (holding train.json and config.json) under ``root``."""
    return sorted(p.parent for p in Path(root).rglob("train.json") if (p.parent / "config.json").is_file())


def run_row(run: Path, root: Path | None = None) -> dict[str, Any]:
    """One comparison row: config essentials, best epoch, val/test top-1/top-5, time and throughput."""
    cfg, train = read_json(run / "config.json"), read_json(run / "train.json")
    test = read_json(run / "test.json") if (run / "test.json").is_file() else {}
    env = read_json(run / "env.json") if (run / "env.json").is_file() else {}
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
        "val_top1": train.get("best_val_accuracy"),
        "val_top5": train.get("best_val_top5"),
        "test_top1": test.get("accuracy"),
        "test_top5": test.get("top5_accuracy"),
        "train_time_s": train.get("train_time"),
        "images_per_s": train.get("images_per_s"),
        "data_wait_fraction": train.get("data_wait_fraction"),
    }


def compare_runs(root: str | Path):
    """All runs under ``root`` as a DataFrame ranked by best validation top-1 (test never ranks)."""
    import pandas as pd

    root = Path(root)
    rows = [run_row(r, root) for r in find_runs(root)]
    if not rows:
        return pd.DataFrame(columns=["run", "model", "val_top1", "test_top1"])
    return pd.DataFrame(rows).sort_values("val_top1", ascending=False, ignore_index=True)


def ablation_table(runs: dict[str, Path]):
    """The ablation's steps (in the order they were added) as rows of :func:`run_row`, indexed by step name."""
    import pandas as pd

    return pd.DataFrame([{"step": name, **run_row(Path(run))} for name, run in runs.items()]).set_index("step")


def run_label(run: Path) -> str:
    """A legend label that names the experiment and its budget, e.g. ``01 ex1 · crop+flip · 45,000 img × 12 ep``."""
    run = Path(run)
    cfg = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    env = read_json(run / "env.json") if (run / "env.json").is_file() else {}
    train = read_json(run / "train.json") if (run / "train.json").is_file() else {}
    notebook = run.parent.name[:2] if run.parent.name[:2].isdigit() else run.parent.name
    images = f"{env['train_images']:,} img" if env.get("train_images") else "? img"
    return (
        f"{notebook} {cfg.get('model', '?')} · {cfg.get('augment', '?')} · {images} × {train.get('epochs_run', '?')} ep"
    )


def load_histories(runs: Sequence[Path]) -> dict[str, dict]:
    """train.json of each run, keyed by :func:`run_label` (the run folder name is added if two labels clash)."""
    out: dict[str, dict] = {}
    for r in map(Path, runs):
        label = run_label(r)
        out[label if label not in out else f"{label} ({r.name})"] = read_json(r / "train.json")
    return out


def pair_images(a: torch.Tensor, b: torch.Tensor, pairs: Sequence[tuple[int, int, float]], names=("train", "test")):
    """Interleaved images and titles of (index in a, index in b, distance) pairs, for a grid of pairs."""
    images, titles = [], []
    for i, j, d in pairs:
        images += [a[i].numpy(), b[j].numpy()]
        titles += [f"{names[0]} #{i}", f"{names[1]} #{j}\nRMS {d:g}/255"]
    return (np.stack(images) if images else np.zeros((0, 3, 32, 32), np.uint8)), titles


def confused_grid(ds: Dataset, labels: np.ndarray, preds: np.ndarray, pairs: Sequence[dict], n: int = 6):
    """Example test images for each most-confused pair (rows), titled ``true -> predicted``."""
    index = {c: i for i, c in enumerate(ds.classes)}
    images, titles = [], []
    for pair in pairs:
        idx = confused_examples(labels, preds, index[pair["true"]], index[pair["predicted"]], n)
        images += [ds.test.images[i].numpy() for i in idx]
        titles += [f"{pair['true']}→{pair['predicted']}"] * len(idx)
    return (np.stack(images) if images else np.zeros((0, 3, 32, 32), np.uint8)), titles


# the augmentation ablation of the course runs: each step adds to the one before
ABLATION_STEPS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("no augmentation", {"augment": "none", "model_kwargs": {}}),
    ("crop+flip", {"augment": "crop+flip", "model_kwargs": {}}),
    ("+BatchNorm", {"augment": "crop+flip", "model_kwargs": {"batchnorm": True}}),
    ("+dropout", {"augment": "crop+flip", "model_kwargs": {"batchnorm": True, "dropout": 0.3}}),
    ("+cutout", {"augment": "crop+flip+cutout", "model_kwargs": {"batchnorm": True, "dropout": 0.3}}),
    (
        "+label smoothing",
        {"augment": "crop+flip+cutout", "model_kwargs": {"batchnorm": True, "dropout": 0.3}, "label_smoothing": 0.1},
    ),
)


def ablation_steps(hidden_units: int) -> list[tuple[str, dict[str, Any]]]:
    """The ablation steps as TrainConfig overrides for tinyvgg with ``hidden_units``."""
    return [
        (name, {**kw, "model_kwargs": {"hidden_units": hidden_units, **kw["model_kwargs"]}})
        for name, kw in ABLATION_STEPS
    ]


def perf_summary(run: Path, split: str = "train") -> dict[str, Any]:
    """Peaks over a run's profiler summaries (memory) and its backends."""
    from .perflogs import read_jsonl

    path = Path(run) / "perf" / f"{split}_epoch.jsonl"
    if not path.is_file():
        return {}
    lines = read_jsonl(path)
    summaries = [r for r in lines if r.get("phase") == "summary"]
    out: dict[str, Any] = {"backends": sorted({b for s in summaries for b in s.get("backends", [])})}
    for key in ("peak_rss_mb", "peak_torch_max_mem_alloc_mb", "peak_vram_used_mb"):
        values = [s[key] for s in summaries if s.get(key) is not None]
        if values:
            out[key] = max(values)
    # torch's allocator peak where a GPU backend ran, else the process RSS
    out["peak_memory_mb"] = out.get("peak_torch_max_mem_alloc_mb", out.get("peak_rss_mb"))
    busy = [
        r["gpu_busy_percent"]
        for r in lines
        if r.get("phase") == "sample" and isinstance(r.get("gpu_busy_percent"), (int, float))
    ]
    out["gpu_busy_median"] = float(np.median(busy)) if busy else None
    out["errors"] = sorted({f"{r['backend']}: {r['error']}" for r in lines if r.get("phase") == "error"})
    return out


def model_table(runs: Sequence[Path]):
    """Size, cost and results side by side: params, mult-adds, input size, s/epoch, peak memory, val/test top-1."""
    import pandas as pd

    from .models import create_model, model_summary

    rows = []
    for run in map(Path, runs):
        cfg, train = read_json(run / "config.json"), read_json(run / "train.json")
        test = read_json(run / "test.json") if (run / "test.json").is_file() else {}
        size = cfg["resolved"]["image_size"]
        env = read_json(run / "env.json")
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
                "val_top1": train["best_val_accuracy"],
                "test_top1": test.get("accuracy"),
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
    import pandas as pd

    root = Path(report_dir)
    rows = []
    for run in find_runs(root):
        env, train = read_json(run / "env.json"), read_json(run / "train.json")
        perf = perf_summary(run)
        rows.append(
            {
                "run": str(run.relative_to(root)),
                "model": read_json(run / "config.json")["model"],
                "device": env.get("device"),
                "device_name": env.get("device_name"),
                "backends": "+".join(perf.get("backends", [])) or "none",
                "images_per_s": train.get("images_per_s"),
                "data_wait_fraction": train.get("data_wait_fraction"),
                "gpu_busy_median": perf.get("gpu_busy_median"),
                "peak_memory_mb": perf.get("peak_memory_mb"),
                "verdict": bottleneck(train.get("data_wait_fraction"), perf.get("gpu_busy_median")),
            }
        )
    return pd.DataFrame(rows)


def bottleneck(data_wait_fraction: float | None, gpu_busy_median: float | None = None) -> str:
    """A one-sentence verdict on what limited training speed."""
    if data_wait_fraction is None:
        return "no step timing recorded"
    if data_wait_fraction > 0.2:
        return f"input-bound: {data_wait_fraction:.0%} of step time went to waiting for data"
    if gpu_busy_median is not None and gpu_busy_median < 60:
        return f"GPU under-used (median {gpu_busy_median:.0f}% busy) although data waits were only {data_wait_fraction:.0%}: launch or sync overhead"
    return f"compute-bound: only {data_wait_fraction:.0%} of step time waited for data; the model's own work dominated"


def validation_split(run: str | Path, ds: Dataset) -> Split:
    """The validation images a run held out of ``ds``'s train split (same fraction and seed as in training)."""
    from .data import stratified_split

    cfg = read_json(Path(run) / "config.json")
    _, val_idx = stratified_split(ds.split("train").labels, cfg["val_fraction"], cfg["seed"])
    return ds.train.subset(val_idx)


def tta_table(run: str | Path, ds: Dataset, device: str = "auto", split: str = "test"):
    """Every TTA mode of a run's best.pt on ``ds``'s ``test`` split (or the run's ``val`` split), as a DataFrame."""
    import pandas as pd

    from .predict import Predictor

    p = Predictor.from_checkpoint(Path(run) / "best.pt", device)
    ds = p.check_dataset(ds)
    images = validation_split(run, ds) if split == "val" else ds.split(split)
    return pd.DataFrame(p.compare_tta(images)).set_index("mode")
