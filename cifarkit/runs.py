"""Run folders, atomic JSON/JSONL writes and the self-contained checkpoint format."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import uuid
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError, OutputError

CHECKPOINT_FORMAT = "cifarkit-checkpoint-v1"
RUN_FILES = ("config.json", "env.json", "train.json", "test.json", "metrics.jsonl", "best.pt")


def timestamp() -> str:
    """Local time as ``YYYYmmdd-HHMMSS``, the prefix of every run and report folder."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def slug(text: str) -> str:
    """A file-name-safe version of a model or dataset name (``folder:data/x`` -> ``folder-x``)."""
    if text.startswith("folder:"):
        text = "folder-" + Path(text.split(":", 1)[1].rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "run"


def ensure_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) or raise :class:`OutputError` in one line saying why and what to do."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{what} {path} is a file, not a folder; choose another path") from None
    except OSError as exc:
        reason = "part of the path is a regular file" if exc.errno == errno.ENOTDIR else exc.strerror
        raise OutputError(f"cannot create {what} {path} ({reason}); choose a writable path") from None
    if not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} is not writable; choose a writable path")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write ``path`` whole or not at all: ``write(tmp)`` fills a temporary file beside it, which then
    replaces ``path``; on any failure (a full disk, Ctrl-C) the temporary file is removed and an
    existing ``path`` is left as it was."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def make_run_dir(parent: str | os.PathLike, *parts: str) -> Path:
    """Create ``parent/<YYYYmmdd-HHMMSS>-<part>-<part>`` (suffix ``-2``, ``-3`` ... if taken)."""
    parent = ensure_dir(parent)
    base = "-".join([timestamp(), *(slug(p) for p in parts)])
    for n in range(1, 1000):
        path = parent / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OutputError(f"cannot create a run folder under {parent}: 999 folders named {base}; choose another --out")


def _clean(value: Any) -> Any:
    """JSON cannot hold NaN/inf: write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write JSON atomically: a temporary file in the same folder, then rename over the target."""
    return write_text(path, json.dumps(_clean(data), indent=2, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as one line (flushed, so a crash loses at most that line)."""
    path = Path(path)
    ensure_dir(path.parent)
    with open(path, "a") as f:
        f.write(json.dumps(_clean(record), default=str) + "\n")
        f.flush()


def read_json(path: str | os.PathLike) -> Any:
    """Read one JSON file."""
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_meta(
    model_name: str,
    model_kwargs: dict[str, Any],
    dataset: Any,
    dataset_spec: str,
    image_size: int,
    config: dict[str, Any],
    epoch: int,
) -> dict[str, Any]:
    """Everything a checkpoint needs to be used on its own (the ``meta`` of :func:`save_checkpoint`).

    Args:
        model_name: registered model name.
        model_kwargs: its options.
        dataset: the :class:`~cifarkit.data.Dataset` it was trained on (classes, normalisation, size).
        dataset_spec: the spec that loads that dataset again.
        image_size: the model's input side.
        config: the training settings.
        epoch: the epoch the weights come from.
    """
    return {
        "model_name": model_name,
        "model_kwargs": model_kwargs,
        "num_classes": dataset.num_classes,
        "classes": list(dataset.classes),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
        "image_size": image_size,
        "data_image_size": dataset.image_size,
        "dataset": dataset_spec,
        "config": config,
        "epoch": epoch,
    }


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, meta: dict[str, Any], training: dict | None = None
) -> Path:
    """Save weights plus everything needed to use them alone, atomically.

    Args:
        path: target file.
        model: the network (its ``state_dict`` is stored).
        meta: ``model_name``, ``model_kwargs``, ``num_classes``, ``classes``, ``mean``, ``std``,
            ``image_size``, ``config`` and ``epoch``.
        training: optimizer/scheduler/RNG state for resuming (omitted in weights-only files).
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    blob = {"format": CHECKPOINT_FORMAT, **meta, "state_dict": state}
    if training is not None:
        blob["training"] = training
    return save_blob(path, blob)


def save_blob(path: str | os.PathLike, blob: dict[str, Any]) -> Path:
    """``torch.save`` a dict atomically (see :func:`atomic_write`): checkpoints, variants, dataset caches."""
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_checkpoint(path: str | os.PathLike, wanted: str = "best.pt") -> dict[str, Any]:
    """Load and validate a cifarkit checkpoint (``weights_only=True``: no code is executed).

    ``wanted`` names the run file the caller needs (``last.pt`` to resume), for the error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the {wanted} of a run folder")
    try:
        with warnings.catch_warnings():  # int8 weights are rebuilt through torch's deprecated TypedStorage
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable cifarkit checkpoint ({exc.__class__.__name__}); pass the {wanted} of a run folder"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a cifarkit checkpoint; pass the {wanted} of a run folder")
    return blob
