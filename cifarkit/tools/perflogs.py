"""Telemetry analysis: read the profiler's JSONL logs, summarise them per run, name the bottleneck."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cifarkit.errors import DataError
from cifarkit.runs import read_jsonl, read_metrics, read_run
from cifarkit.tools.telemetry import METRICS, machine_percent

# share of a training step spent waiting for the next batch above which the input pipeline is the bottleneck
INPUT_BOUND_SHARE = 0.2
# other processes using more than this share of the machine's CPU (in percent) while a run trained make its
# timings a measurement of the machine's load as much as of the run
OTHER_LOAD_PERCENT = 25.0
# epochs more than 30% apart in images/s: something competed for the machine (or it throttled)
PACE_SPREAD = 0.3
# consecutive telemetry samples (0.5 s apart) a competitor must last to count: a blip is one sample
SUSTAINED_SAMPLES = 3


def run_id(path: Path) -> str:
    """A readable id for a log: ``<run folder>/<file stem>`` (``perf/`` folders are skipped)."""
    parent = path.parent.parent if path.parent.name == "perf" else path.parent
    return f"{parent.name}/{path.stem}"


def load_perf_logs(paths: Sequence[str | os.PathLike]):
    """Samples of one or many logs as a DataFrame with ``run`` and ``t_s`` (seconds since the run's first sample).

    Folders are searched for ``*.jsonl``. Summary and error lines are left out (see :func:`load_events`).
    """
    import pandas as pd  # pandas costs a third of a second to import; only here

    frames = []
    for path in expand_logs(paths):
        samples = [r for r in read_jsonl(path) if r.get("phase") == "sample"]
        if samples:
            df = pd.DataFrame(samples)
            run_dir = path.parent.parent if path.parent.name == "perf" else path.parent
            df["run"] = run_id(path)
            df["folder"] = run_id(path).rsplit("/", 1)[0]
            df["run_dir"] = str(run_dir)
            df["experiment"] = run_dir.parent.name  # e.g. 03_augmentation in a series report
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "folder", "run_dir", "experiment", "t_s", "ts", "epoch", *METRICS])
    df = pd.concat(frames, ignore_index=True)
    for column in ("ts", "epoch", *METRICS):  # a hand-edited or foreign log may hold text where numbers belong
        if column in df:
            df[column] = pd.to_numeric(df[column], errors="coerce")
    if "ts" not in df:
        df["ts"] = float("nan")
    unusable = int(df["ts"].isna().sum())
    if unusable:
        warnings.warn(f"skipped {unusable} sample line(s) without a numeric ts (timestamp)", stacklevel=2)
        df = df[df["ts"].notna()].copy()
        if df.empty:
            return pd.DataFrame(columns=["run", "folder", "run_dir", "experiment", "t_s", "ts", "epoch", *METRICS])
    # one time origin per run folder, so its train and val logs share an axis
    df["t_s"] = df["ts"] - df.groupby("folder")["ts"].transform("min")
    return df.sort_values(["run", "ts"], ignore_index=True)


def load_events(paths: Sequence[str | os.PathLike], phase: str = "summary"):
    """The ``summary`` (or ``error``) lines of the logs, one row each, with ``run``."""
    import pandas as pd  # pandas costs a third of a second to import; only here

    rows = [{"run": run_id(p), **r} for p in expand_logs(paths) for r in read_jsonl(p) if r.get("phase") == phase]
    return pd.DataFrame(rows)


def expand_logs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their ``*.jsonl`` files (recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.jsonl")))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"perf log {p} not found; pass JSONL files or folders holding them")
    return out


def present_metrics(df) -> list[str]:
    """Metrics with at least one value in ``df``, in schema order."""
    return [m for m in METRICS if m in df.columns and df[m].notna().any()]


def summary_table(df):
    """Median and max of every present metric, one row per log that holds samples, with their count; a log
    without any (a phase shorter than the sampling interval) has no row rather than a row of NaN."""
    import pandas as pd  # pandas costs a third of a second to import; only here

    metrics = present_metrics(df)
    if not metrics:
        return pd.DataFrame()
    sampled = df[df[metrics].notna().any(axis=1)]
    table = sampled.groupby("run")[metrics].agg(["median", "max"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    table.insert(0, "samples", sampled.groupby("run").size())
    return table.round(2)


def perf_summary(run: Path, split: str = "train") -> dict[str, Any]:
    """Peaks over a run's profiler summaries (memory) and its backends."""
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
    # what training added: the allocator's own peak on a GPU; on a CPU the peak RSS above the RSS when training
    # started (the first sample), since RSS also counts the interpreter, libraries and data held before it
    start = next((r["rss_mb"] for r in lines if r.get("phase") == "sample" and r.get("rss_mb") is not None), None)
    if "peak_torch_max_mem_alloc_mb" in out:
        out["added_memory_mb"] = out["peak_torch_max_mem_alloc_mb"]
    elif start is not None and "peak_rss_mb" in out:
        out["start_rss_mb"] = start
        out["added_memory_mb"] = max(out["peak_rss_mb"] - start, 0.0)
    busy = [
        r["gpu_busy_percent"]
        for r in lines
        if r.get("phase") == "sample" and isinstance(r.get("gpu_busy_percent"), (int, float))
    ]
    out["gpu_busy_median"] = float(np.median(busy)) if busy else None
    out["other_load_percent"] = other_load_percent(lines, read_run(run).env.get("cpu_count"))
    out["errors"] = sorted({f"{r['backend']}: {r['error']}" for r in lines if r.get("phase") == "error"})
    return out


def other_loads(lines: Sequence[dict[str, Any]], cores: int | None) -> list[float]:
    """Per telemetry sample, the share of the whole machine's CPU (percent) that other processes used: the
    machine-wide CPU minus this process's (which counts one core as 100). Empty without a core count."""
    if not cores:
        return []
    return [
        r["system_cpu_percent"] - r["cpu_percent"] / cores
        for r in lines
        if r.get("phase") == "sample" and isinstance(r.get("system_cpu_percent"), (int, float))
        and isinstance(r.get("cpu_percent"), (int, float))
    ]  # fmt: skip


def other_load_percent(lines: Sequence[dict[str, Any]], cores: int | None) -> float | None:
    """The highest load other processes held for at least :data:`SUSTAINED_SAMPLES` samples in a row (the
    largest minimum over any such window; percent of the machine's CPU): a competitor counts however briefly
    it ran, a one-sample blip does not. The 90th percentile it replaces missed a competitor that took half
    the machine for under a tenth of a run, so 01 and 05 disagreed about one run."""
    other = other_loads(lines, cores)
    if not other:
        return None
    w = min(SUSTAINED_SAMPLES, len(other))
    return machine_percent(max(min(other[i : i + w]) for i in range(len(other) - w + 1)))


def run_conditions(run: Path) -> dict[str, Any]:
    """The one verdict on how clean a run's timing is, which every notebook that speaks of the run quotes:
    the images/s range of its steady epochs (the first, which pays the warm-up, left out when there are three
    or more), their spread, the other processes' sustained peak load (:func:`other_load_percent`) and the share
    of telemetry samples above :data:`OTHER_LOAD_PERCENT`, and ``clean``: neither the spread beyond
    :data:`PACE_SPREAD` nor the load beyond :data:`OTHER_LOAD_PERCENT`."""
    files = read_run(run)
    rates = [float(r["images_per_s"]) for r in read_metrics(run) if r.get("images_per_s")]
    steady = rates[1:] if len(rates) >= 3 else rates
    path = Path(run) / "perf" / "train_epoch.jsonl"
    lines = read_jsonl(path) if path.is_file() else []
    other = other_loads(lines, files.env.get("cpu_count"))
    load = other_load_percent(lines, files.env.get("cpu_count"))
    spread = max(steady) / min(steady) - 1 if steady else None
    return {
        "slowest_images_per_s": min(steady) if steady else None,
        "fastest_images_per_s": max(steady) if steady else None,
        "steady_epochs": len(steady),
        "pace_spread": spread,
        "other_load_percent": load,
        "other_load_share": sum(o > OTHER_LOAD_PERCENT for o in other) / len(other) if other else None,
        "clean": bool(steady) and spread <= PACE_SPREAD and not (load is not None and load > OTHER_LOAD_PERCENT),
    }


def bottleneck(
    data_wait_fraction: float | None, gpu_busy_median: float | None = None, other_load: float | None = None
) -> str:
    """A one-sentence verdict on what limited training speed (``other_load``: see :func:`other_load_percent`)."""
    if data_wait_fraction is None:
        return "no step timing recorded"
    if other_load is not None and other_load > OTHER_LOAD_PERCENT:
        return f"shared machine: other processes used about {other_load:.0f}% of its CPU, so they set the pace too"
    if data_wait_fraction > INPUT_BOUND_SHARE:
        return f"input-bound: {data_wait_fraction:.0%} of step time went to waiting for data"
    if gpu_busy_median is not None and gpu_busy_median < 60:
        return f"GPU under-used (median {gpu_busy_median:.0f}% busy) although data waits were only {data_wait_fraction:.0%}: launch or sync overhead"
    return f"compute-bound: only {data_wait_fraction:.0%} of step time waited for data; the model's own work dominated"
