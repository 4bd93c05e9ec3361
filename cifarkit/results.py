"""A finished run's reports: train.json from the epoch rows, figures, and best.pt on the test split
(test.json). Training (``engine.fit``) calls it at the end; notebooks call :func:`evaluate_run` on
a chosen run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import TrainConfig
from .data import Dataset
from .evaluation import test_json
from .predict import Predictor
from .runs import write_json
from .viz import write_run_figures, write_test_figures

if TYPE_CHECKING:
    from .engine import Prepared
    from .tblog import TensorBoardLog


def history_summary(rows: list[dict], cfg: TrainConfig, best_epoch: int | None) -> dict[str, Any]:
    """train.json: the course's per-epoch lists plus best epoch, timing and throughput."""
    best = next((r for r in rows if r["epoch"] == best_epoch), None)
    val_loss = [r["val_loss"] for r in rows]
    return {
        "train_losses": [r["train_loss"] for r in rows],
        "val_losses": val_loss,
        "train_accuracies": [r["train_accuracy"] for r in rows],
        "val_accuracies": [r["val_accuracy"] for r in rows],
        "val_top5_accuracies": [r["val_top5"] for r in rows],
        "learning_rates": [r["lr"] for r in rows],
        "best_val_accuracy": best["val_accuracy"] if best else None,
        "best_val_top5": best["val_top5"] if best else None,
        "best_epoch": best_epoch,
        "monitor": cfg.monitor,
        "min_val_loss_epoch": rows[int(np.argmin(val_loss))]["epoch"] if rows else None,
        "epochs_run": len(rows),
        "train_time": sum(r["epoch_time_s"] for r in rows),
        "images_per_s": float(np.mean([r["images_per_s"] for r in rows])) if rows else None,
        "data_wait_fraction": (sum(r["data_wait_s"] for r in rows) / max(sum(r["epoch_time_s"] for r in rows), 1e-9)),
    }


def finish_run(
    run_dir: Path,
    p: Prepared,
    rows: list[dict],
    best_epoch: int | None,
    test: bool = True,
    tb: TensorBoardLog | None = None,
) -> None:
    """Write train.json, draw the figures and (if ``test``) evaluate best.pt on the test split; close ``tb``
    with the test confusion matrix."""
    history = history_summary(rows, p.cfg, best_epoch)
    write_json(run_dir / "train.json", history)
    write_run_figures(run_dir, history)
    # a folder with only train/ has nothing to test on; a run stopped before its first best epoch has no best.pt
    if test and p.dataset.test is not None and (run_dir / "best.pt").is_file():
        result = evaluate_run(run_dir, p.dataset, p.device)
        if tb is not None:
            tb.confusion(result, p.dataset.classes, best_epoch or 0)
    if tb is not None:
        tb.close()


def evaluate_run(run_dir: str | Path, dataset: Dataset, device: torch.device | str = "auto") -> dict[str, Any]:
    """Evaluate a run's best.pt on ``dataset``'s test split; write test.json and its figures; return test.json."""
    run_dir = Path(run_dir)
    predictor = Predictor.from_checkpoint(run_dir / "best.pt", device)
    dataset = predictor.check_dataset(dataset)
    result = test_json(predictor.evaluate(dataset.split("test")))
    result = {"split": "test", "checkpoint": "best.pt", **result}
    write_json(run_dir / "test.json", result)
    write_test_figures(run_dir, result, dataset.classes)
    return result
