"""The resume state of a training run, written and read in this one module: :func:`save_training_state` writes
last.pt (the weights plus everything an exact resume needs), :func:`resume_state` and :func:`check_resume` read
and check it before anything is built, and :func:`restore` puts it back into a prepared run."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cifarkit.errors import CheckpointError, CifarkitError, ConfigError, first_line, short_list
from cifarkit.runs import check_weights, current_names, load_checkpoint, run_complete, save_checkpoint, write_metrics

LAST = "last.pt"  # the file that holds the resume state, in every run folder


def resume_config(path: str | os.PathLike) -> dict[str, Any]:
    """The settings a last.pt was trained with (its device and length decide how a resume starts)."""
    return load_checkpoint(path, wanted=LAST)["config"]


def device_rng_state(device: torch.device) -> torch.Tensor | None:
    """The accelerator's own random stream (dropout on CUDA/ROCm and MPS draws from it, not the CPU's)."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_device_rng_state(device: torch.device, state: torch.Tensor | None) -> None:
    """Put back what :func:`device_rng_state` saved (nothing on the CPU, or from a last.pt that has none)."""
    if state is None:
        return
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


def save_training_state(run: Any, epoch: int) -> None:
    """last.pt: the weights plus everything an exact resume needs (optimizer, schedule, each rank's data
    order and random stream, the rows so far and the best-so-far bookkeeping)."""
    ranks = run.dist.gather(
        {
            "loader": run.train_loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "device_rng": device_rng_state(run.device),
        }
    )
    training = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(),  # empty unless fp16
        **ranks[0],
        "world_size": run.dist.world_size,
        **({"ranks": ranks} if run.dist.enabled else {}),
        "rows": run.rows,
        "best_value": run.best_value,
        "best_epoch": run.best_epoch,
        "stale": run.stale,
    }
    if run.dist.is_main:
        save_checkpoint(run.run_dir / LAST, run.model, run.meta(epoch), training)


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Read a last.pt's training state inside this block: a piece that is missing or of the wrong kind (a
    hand-edited or foreign file) is one line naming the file, not a traceback from deep inside torch."""
    try:
        yield
    except CifarkitError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        reason = first_line(exc, named=True)
        raise CheckpointError(
            f"{path}: its training state is damaged or not cifarkit's ({reason}); resume from another last.pt "
            "or start a new run"
        ) from None


def resume_state(path: str | os.PathLike, epochs: int, world_size: int) -> dict[str, Any]:
    """The last.pt at ``path``, checked (:func:`check_resume`) before anything is built or written."""
    state = load_checkpoint(path, wanted=LAST)
    if "training" not in state:
        raise CheckpointError(f"{path} holds weights only; resume from the run's last.pt")
    with reading(path):
        state["finish_only"] = check_resume(state, epochs, path, world_size)
        state["training"]["rows"] = [current_names(r) for r in state["training"]["rows"]]  # an earlier version's
    return state


def check_resume(state: dict[str, Any], epochs: int, path: str | os.PathLike, world_size: int = 1) -> bool:
    """Refuse, in one line and before anything is written, a resume that cannot continue the run as asked;
    return True when the run has trained to its end and only its reports are missing (it is then finished).

    The rule: a run whose learning rate follows a schedule (``onecycle``, ``cosine``) keeps the number
    of epochs it started with, because the whole schedule was laid out for that length at step 0;
    a run without a schedule may be extended. A finished (or early-stopped) run has nothing to resume,
    unless it was stopped between its last checkpoint and the end of its reports (train.json, test.json,
    the figures: :func:`run_complete`): those are made.
    """
    saved = state["config"]
    done = int(state["epoch"])
    trained_by = int(state["training"].get("world_size", 1))
    if trained_by != world_size:
        how = (
            f"{trained_by} processes in all (torchrun --nproc_per_node {trained_by} -m cifarkit train --resume {path}, "
            "or as many over several --nnodes)"
            if trained_by > 1
            else f"one process (python -m cifarkit train --resume {path})"
        )
        raise ConfigError(
            f"{path} was trained by {trained_by} process(es) and this launch has {world_size}; last.pt holds each "
            f"process's own data order and augmentation stream, so resume it with {how}"
        )
    if epochs != saved["epochs"] and saved["scheduler"] != "none":
        raise ConfigError(
            f"cannot change epochs from {saved['epochs']} to {epochs} when resuming: the {saved['scheduler']} "
            "learning-rate schedule was fixed for the run's length at its start; resume without --epochs, "
            "or start a new run with the length you want"
        )
    t = state["training"]
    stopped = saved["patience"] > 0 and t["stale"] >= saved["patience"]
    if stopped or epochs <= done:
        folder = Path(path).parent
        if not run_complete(folder):
            return True  # trained, but killed before its reports or figures: finish it
    if stopped:
        raise ConfigError(f"{path}: the run stopped early at epoch {done}; there is nothing to resume")
    if epochs <= done:
        raise ConfigError(
            f"{path} has already trained {done} epoch(s); nothing to resume for {epochs} epochs "
            + ("(pass --epochs above it to train longer)" if saved["scheduler"] == "none" else "(the run is finished)")
        )
    return False


def restore(run: Any, state: dict[str, Any], path: Path) -> None:
    """Put a checkpoint's training state back into ``run`` (a :class:`cifarkit.train.Run`): weights, optimizer, schedule, this rank's data
    order and random stream, the rows so far; metrics.jsonl is rewritten to end at the checkpoint's epoch."""
    t = state["training"]
    if list(state["classes"]) != list(run.dataset.classes):
        raise CheckpointError(
            f"{path} was trained on the classes {short_list(state['classes'])} but {run.cfg.dataset} has "
            f"{short_list(run.dataset.classes)}; resume on the dataset the run started with"
        )
    check_weights(
        state["state_dict"], path, "resume from another last.pt", run.model.state_dict(), error=CheckpointError
    )
    with reading(path):
        mine = t["ranks"][run.dist.rank] if run.dist.enabled else t
        run.model.load_state_dict(state["state_dict"])
        run.optimizer.load_state_dict(t["optimizer"])
        if run.scheduler is not None and t.get("scheduler"):
            run.scheduler.load_state_dict(t["scheduler"])
        run.scaler.load_state_dict(t["scaler"] or {})  # a switched-off scaler ignores it
        run.train_loader.load_state_dict(mine["loader"])
        torch.set_rng_state(mine["torch_rng"])
        set_device_rng_state(run.device, mine.get("device_rng"))
        run.rows, run.best_value, run.best_epoch = list(t["rows"]), t["best_value"], t["best_epoch"]
        run.stale = int(t["stale"])
    # a run that trained to its end (or stopped early) and lost only its reports skips the loop
    run.start_epoch = run.cfg.epochs + 1 if state["finish_only"] else int(state["epoch"]) + 1
    run.run_dir = path.resolve().parent
    if run.dist.is_main:
        write_metrics(run.run_dir, run.rows)  # it may hold epochs after the checkpoint
