"""Run folders, atomic JSON/JSONL writes and the self-contained checkpoint format."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.config import IMAGE_SIDES, TrainConfig
from cifarkit.errors import CheckpointError, CifarkitError, ConfigError, DataError, OutputError, first_line

CHECKPOINT_FORMAT = "cifarkit-checkpoint-v1"


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
    stem = path.name.encode()[:200].decode(errors="ignore")  # a name the disk takes gets a temporary it takes too
    tmp = path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise named(exc, path, tmp) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def named(exc: OSError, path: Path, tmp: Path | None = None) -> OSError:
    """``exc`` naming ``path`` where it names no file (a failed write or flush names none, so a full disk would say
    "a file") or the hidden temporary file ``tmp`` written for ``path``, which the user never asked for."""
    if exc.filename and str(exc.filename) != str(tmp):
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def remove_temporaries(folder: str | os.PathLike, older_than: float = 0.0) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` leaves when its process is killed mid-write (``kill -9``
    gives it no chance to clean up): the ones in ``folder`` last written more than ``older_than`` seconds ago.
    Call it where no live writer can be using them (a locked run folder), or with an age no write lasts."""
    now, gone = time.time(), []
    for tmp in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.is_file() and now - tmp.stat().st_mtime >= older_than:
                tmp.unlink()
                gone.append(tmp)
    return gone


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


def jsonl_line(record: dict) -> str:
    """One JSONL line: ``record`` as JSON (NaN/inf as null), newline-terminated."""
    return json.dumps(_clean(record), default=str) + "\n"


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as one line (flushed, so a crash loses at most that line)."""
    path = Path(path)
    ensure_dir(path.parent)
    try:
        with open(path, "a") as f:
            f.write(jsonl_line(record))
            f.flush()
    except OSError as exc:
        raise named(exc, path) from None


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
            except (ValueError, RecursionError):  # not JSON, or nested too deep to be a record
                bad.append(number)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s): {bad[:10]}", stacklevel=2)
    return records


def read_json(path: str | os.PathLike) -> Any:
    """Read one JSON file; a file that is not JSON (empty, cut short, not text, nested beyond reason) is a
    one-line :class:`~cifarkit.errors.DataError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, RecursionError) as exc:
        reason = first_line(exc, limit=80) if isinstance(exc, ValueError) else "nested too deep"
        raise DataError(f"{path} is not valid JSON ({reason}); restore it, or delete the folder it describes") from None


def read_run_file(path: str | os.PathLike) -> dict[str, Any]:
    """A run folder's JSON file as a dict, or ``{}`` when it is missing, and ``{}`` with one warning when it
    is broken: one damaged run never stops a comparison, a legend or the index of a report."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except (DataError, OSError) as exc:
        warnings.warn(f"{path} skipped: {exc}", stacklevel=2)
        return {}
    if not isinstance(data, dict):
        warnings.warn(f"{path} skipped: it holds a {type(data).__name__}, not a JSON object", stacklevel=2)
        return {}
    return data


# ----------------------------------------------------------------------------- a training run's files

RUN_FILES = ("config", "env", "train", "test")  # a run folder's JSON files, as RunFiles names them


@dataclass(frozen=True)
class RunFiles:
    """A run folder's JSON files as read back (each ``{}`` when missing or broken, see :func:`read_run_file`):
    ``config`` (the settings, ``resolved`` under it), ``env`` (machine and data sizes), ``train``
    (:func:`train_json`) and ``test`` (:func:`test_json`)."""

    path: Path
    config: dict[str, Any]
    env: dict[str, Any]
    train: dict[str, Any]
    test: dict[str, Any]


def write_run_file(run_dir: str | os.PathLike, name: str, data: dict[str, Any]) -> Path:
    """Write the run file ``name`` (one of :data:`RUN_FILES`) atomically: the one place that names them."""
    if name not in RUN_FILES:
        raise ValueError(f"{name!r} is not a run file; choose {', '.join(RUN_FILES)}")
    return write_json(Path(run_dir) / f"{name}.json", data)


def read_run(run_dir: str | os.PathLike) -> RunFiles:
    """Every JSON file of the run folder ``run_dir``: the one place that reads them."""
    run_dir = Path(run_dir)
    return RunFiles(run_dir, *(read_run_file(run_dir / f"{name}.json") for name in RUN_FILES))


class RunLock:
    """An OS lock on a run folder itself (no lock file is left behind), released by :meth:`close` or when the
    process ends, however it ends. Taking it removes the temporary files a killed writer left in the folder."""

    def __init__(self, run_dir: Path) -> None:
        self.fd: int | None = None
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            return
        fd = os.open(run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(
                f"{run_dir} is being trained by another process; wait for it to end or stop it first"
            ) from None
        self.fd = fd
        remove_temporaries(run_dir)  # with the folder locked, a temporary file in it is a dead writer's (kill -9)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    """metrics.jsonl holding exactly ``rows`` (a resumed run drops the epochs after its checkpoint)."""
    write_text(run_dir / "metrics.jsonl", "".join(map(jsonl_line, rows)))


LEGACY_METRICS = {"val_top5": "val_top5_accuracy"}  # metrics rows of earlier versions, in checkpoints too


def current_names(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row under this version's names (a run started by an earlier version resumes with its rows)."""
    return {LEGACY_METRICS.get(k, k): v for k, v in row.items()}


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (one per epoch; none when it is missing), read by :func:`read_jsonl`."""
    path = Path(run_dir) / "metrics.jsonl"
    return [current_names(r) for r in read_jsonl(path)] if path.is_file() else []


def epoch_row(epoch: int, stats: Any, val: dict, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """One line of metrics.jsonl: a training epoch's ``stats`` (:class:`cifarkit.train.EpochStats`), its
    validation and the learning rate it ended at."""
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "train_accuracy": stats.accuracy,
        "val_loss": val["losses"],
        "val_accuracy": val["accuracy"],
        "val_top5_accuracy": val["top5_accuracy"],
        "lr": optimizer.param_groups[0]["lr"],
        "images_per_s": stats.images_per_s,
        "data_wait_s": stats.data_seconds,
        "epoch_time_s": stats.seconds,
        "val_time_s": val["testing time"],
    }


def format_epoch(r: dict, epochs: int) -> str:
    """The one log line printed per epoch, under metrics.jsonl's names."""
    return (
        f"epoch {r['epoch']:>3}/{epochs} train_loss {r['train_loss']:.4f} train_accuracy {r['train_accuracy']:.4f} "
        f"val_loss {r['val_loss']:.4f} val_accuracy {r['val_accuracy']:.4f} val_top5_accuracy {r['val_top5_accuracy']:.4f} "
        f"lr {r['lr']:.2e} {r['images_per_s']:.0f} img/s data_wait {r['data_wait_s']:.2f}s {r['epoch_time_s']:.1f}s"
    )


def train_json(rows: list[dict], monitor: str, best_epoch: int | None) -> dict[str, Any]:
    """train.json from the metrics rows: the course's per-epoch lists plus best epoch, timing and throughput."""
    best = next((r for r in rows if r["epoch"] == best_epoch), None)
    val_loss = [r["val_loss"] for r in rows]
    seconds = sum(r["epoch_time_s"] for r in rows)
    return {
        "train_losses": [r["train_loss"] for r in rows],
        "val_losses": val_loss,
        "train_accuracies": [r["train_accuracy"] for r in rows],
        "val_accuracies": [r["val_accuracy"] for r in rows],
        "val_top5_accuracies": [r["val_top5_accuracy"] for r in rows],
        "learning_rates": [r["lr"] for r in rows],
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_val_top5_accuracy": best["val_top5_accuracy"] if best else None,
        "best_epoch": best_epoch,
        "monitor": monitor,
        "min_val_loss_epoch": rows[val_loss.index(min(val_loss))]["epoch"] if rows else None,
        "epochs_run": len(rows),
        "train_time": seconds,
        "images_per_s": sum(r["images_per_s"] for r in rows) / len(rows) if rows else None,
        "data_wait_fraction": sum(r["data_wait_s"] for r in rows) / max(seconds, 1e-9),
        "complete": False,  # until the run's end has made its reports (mark_complete)
    }


def test_json(result: dict[str, Any]) -> dict[str, Any]:
    """test.json from an :func:`cifarkit.evaluate.evaluate` result, which already uses the course's names
    (``accuracy``, ``top5_accuracy``, ``losses``, ``testing time``, ``precision_score``, ...): its JSON
    numbers, without the per-image ``correct`` tensor."""
    return {k: v for k, v in result.items() if k != "correct"}


def mark_complete(run_dir: Path, tested: bool) -> None:
    """Record in train.json (``complete``, and ``tested``: whether it wrote a test.json) that everything a run
    makes at its end was made: test.json, the callbacks' figures and events. Written last, so a run killed
    anywhere before it is finished on resume."""
    summary = read_run_file(Path(run_dir) / "train.json")
    if summary:
        write_run_file(run_dir, "train", {**summary, "complete": True, "tested": tested})


def run_complete(run_dir: Path) -> bool:
    """Whether a run made everything its end makes (:func:`mark_complete`) and its test.json is still there
    when it wrote one; a run from before that mark counts when its train.json and test.json are there."""
    train = read_run_file(Path(run_dir) / "train.json")
    tested = (Path(run_dir) / "test.json").is_file()
    if "complete" in train:
        return bool(train["complete"]) and (tested or not train.get("tested", True))
    return bool(train) and tested


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
    """``torch.save`` a dict atomically (see :func:`atomic_write`): checkpoints, variants, dataset caches.

    torch reports a failed write (a full disk, a file-size limit) as a RuntimeError from its zip writer; it is
    raised here as the OSError it is (:func:`write_failure_errno`), so every command reports it in one line
    like any other write error."""

    def save(tmp: Path) -> None:
        try:
            torch.save(blob, tmp)
        except RuntimeError as exc:  # a full disk reads "unexpected pos" or, at the end, "iostream error"
            if not any(word in str(exc).lower() for word in ("inline_container", "write", "iostream")):
                raise
            code = write_failure_errno(tmp)
            raise OSError(code, os.strerror(code), str(path)) from None

    return atomic_write(path, save)


def write_failure_errno(tmp: Path) -> int:
    """Which error a write that torch reports only as "unexpected pos" met: the process's file-size limit
    (EFBIG, "File too large") when the file reached ``RLIMIT_FSIZE``, a full disk (ENOSPC) when its filesystem
    has under 64 MiB free, else an input/output error (EIO)."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        limited = limit != resource.RLIM_INFINITY
    except (ImportError, OSError, ValueError):  # Windows has no resource limits
        limit, limited = 0, False
    size = tmp.stat().st_size if tmp.exists() else 0
    if limited and size >= limit - 2**16:
        return errno.EFBIG
    return errno.ENOSPC if shutil.disk_usage(tmp.parent).free < 64 * 2**20 else errno.EIO


def load_checkpoint(path: str | os.PathLike, wanted: str = "best.pt") -> dict[str, Any]:
    """Load and validate a cifarkit checkpoint (``weights_only=True``: no code is executed).

    ``wanted`` names the run file the caller needs (``last.pt`` to resume), for the error messages.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found; pass the {wanted} of a run folder")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable cifarkit checkpoint ({exc.__class__.__name__}); pass the {wanted} of a run folder"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a cifarkit checkpoint; pass the {wanted} of a run folder")
    check_meta(blob, path)
    if not isinstance(blob.get("state_dict"), dict) or not all(isinstance(k, str) for k in blob["state_dict"]):
        raise CheckpointError(f"{path}: its state_dict is not a mapping of weight names; is it the right file?")
    check_weights(blob["state_dict"], path, f"pass the {wanted} of another run", error=CheckpointError)
    return blob


def check_weights(
    state: Any,
    path: str | os.PathLike,
    fix: str,
    expected: Mapping[str, torch.Tensor] | None = None,
    ignore: str = "",
    error: type[CifarkitError] = DataError,
) -> dict[str, torch.Tensor]:
    """What every reader of weights checks before a network takes them: a mapping of names to tensors, finite where
    they are floating point, and, given ``expected``, the same names (but those starting with ``ignore``), shapes and
    kinds of dtype (floating point, integer). A file that loads but holds anything else is one line naming ``path``
    and the first thing wrong, ending in ``fix``."""

    def wrong(what: str) -> CifarkitError:
        return error(f"{path} {what}; {fix}")

    if not isinstance(state, Mapping):
        raise wrong(f"holds a {type(state).__name__}, not a mapping of named weights")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise wrong(f"holds {type(value).__name__} {str(name)[:60]!r}, not a named tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise wrong(f"holds non-finite values (NaN or inf) in {name}")
    if expected is None:
        return dict(state)
    want = {k: v for k, v in expected.items() if not (ignore and k.startswith(ignore))}
    have = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    missing, extra = [k for k in want if k not in have], [k for k in have if k not in want]
    if missing or extra:
        names = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the network does not have"
        raise wrong(f"{names} ({len(missing)} missing, {len(extra)} unexpected of {len(want)} names)")
    for name, place in want.items():
        got = have[name]
        if tuple(got.shape) != tuple(place.shape):
            raise wrong(f"gives {name} the shape {tuple(got.shape)}, where the network has {tuple(place.shape)}")
        if got.is_floating_point() != place.is_floating_point():
            raise wrong(f"gives {name} the dtype {got.dtype}, where the network has {place.dtype}")
    return dict(state)


MAX_CLASSES = 100_000  # far above any classification head cifarkit trains; a larger count is a corrupt file
SIMPLE = (str, int, float, bool, type(None))


def plain(value: Any) -> bool:
    """A model option a checkpoint may carry: a simple value or a short list of them (e.g. widths)."""
    return isinstance(value, SIMPLE) or (
        isinstance(value, list) and len(value) <= 64 and all(isinstance(x, SIMPLE) for x in value)
    )


def check_meta(meta: Any, path: str | os.PathLike) -> None:
    """Check a checkpoint's (or an ONNX export's) description field by field before any model is built from
    it: one line naming the first field that is missing, of the wrong type or out of range."""

    def bad(field: str, want: str) -> CheckpointError:
        got = repr(meta.get(field) if isinstance(meta, dict) else meta)[:60]
        return CheckpointError(f"{path}: field {field!r} is {got}, expected {want}; is it the right file?")

    def whole(field: str, low: float, high: float, want: str, default: Any = None) -> int:
        value = meta.get(field, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(field, want)
        return value

    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: its description is a {type(meta).__name__}, not a mapping; is it the right file?"
        )
    if not isinstance(meta.get("model_name"), str):
        raise bad("model_name", "a registered model name")
    kwargs = meta.get("model_kwargs", {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) and plain(v) for k, v in kwargs.items()):
        raise bad("model_kwargs", "a mapping of option names to plain values")
    n = whole("num_classes", 1, MAX_CLASSES, f"an integer from 1 to {MAX_CLASSES:,}")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) != n or not all(isinstance(c, str) for c in classes):
        raise bad("classes", f"a list of {n} class names (num_classes)")
    for field in ("mean", "std"):
        values = meta.get(field)
        if not (
            isinstance(values, list)
            and len(values) == 3
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
            and (field == "mean" or all(v > 0 for v in values))
        ):
            raise bad(field, "three finite numbers, one per colour channel" + (" (> 0)" if field == "std" else ""))
    for field in ("image_size", "data_image_size"):
        whole(field, *IMAGE_SIDES, "an image side from {} to {} pixels".format(*IMAGE_SIDES), default=32)
    if meta.get("variant", "fp32") not in ("fp32", "pruned", "int8", "onnx"):
        raise bad("variant", "fp32, pruned, int8 or onnx")
    whole("epoch", 0, math.inf, "the number of epochs the weights were trained", default=0)
    try:
        TrainConfig.from_dict(meta.get("config", {}))
    except ConfigError as exc:
        raise CheckpointError(
            f"{path}: its config is not a training configuration ({exc}); is it the right file?"
        ) from None
