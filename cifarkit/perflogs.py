"""Reading profiler JSONL logs into pandas and summarising them per run."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from .profiler import METRICS


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every JSON object line of ``path``; malformed lines (and bytes that are not text) are skipped with
    one warning naming them."""
    records, bad = [], []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s): {bad[:10]}", stacklevel=2)
    return records


def run_id(path: Path) -> str:
    """A readable id for a log: ``<run folder>/<file stem>`` (``perf/`` folders are skipped)."""
    parent = path.parent.parent if path.parent.name == "perf" else path.parent
    return f"{parent.name}/{path.stem}"


def load_perf_logs(paths: Sequence[str | os.PathLike]):
    """Samples of one or many logs as a DataFrame with ``run`` and ``t_s`` (seconds since the run's first sample).

    Folders are searched for ``*.jsonl``. Summary and error lines are left out (see :func:`load_events`).
    """
    import pandas as pd

    frames = []
    for path in expand_logs(paths):
        samples = [r for r in read_jsonl(path) if r.get("phase") == "sample"]
        if samples:
            df = pd.DataFrame(samples)
            df["run"] = run_id(path)
            df["folder"] = run_id(path).rsplit("/", 1)[0]
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=["run", "folder", "t_s", "ts", "epoch", *METRICS])
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
            return pd.DataFrame(columns=["run", "folder", "t_s", "ts", "epoch", *METRICS])
    # one time origin per run folder, so its train and val logs share an axis
    df["t_s"] = df["ts"] - df.groupby("folder")["ts"].transform("min")
    return df.sort_values(["run", "ts"], ignore_index=True)


def load_events(paths: Sequence[str | os.PathLike], phase: str = "summary"):
    """The ``summary`` (or ``error``) lines of the logs, one row each, with ``run``."""
    import pandas as pd

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
            from .errors import DataError

            raise DataError(f"perf log {p} not found; pass JSONL files or folders holding them")
    return out


def present_metrics(df) -> list[str]:
    """Metrics with at least one value in ``df``, in schema order."""
    return [m for m in METRICS if m in df.columns and df[m].notna().any()]


def summary_table(df):
    """Median and max of every present metric, one row per run."""
    metrics = present_metrics(df)
    if not metrics:
        import pandas as pd

        return pd.DataFrame()
    table = df.groupby("run")[metrics].agg(["median", "max"])
    table.columns = [f"{m}_{stat}" for m, stat in table.columns]
    return table.round(2)
