"""TensorBoard event files for every training run (``tensorboard --logdir reports``).

Each run folder gets ``tensorboard/`` with, per epoch: train/validation loss and accuracy,
validation top-5, learning rate, images/s, the data-wait share, and (with ``--telemetry``) the
telemetry peaks of each phase; at the end, the test scores and confusion matrix. Like
telemetry, TensorBoard never stops training: if its files cannot be written, one warning says so.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cifarkit.train import Callback, Run

SCALARS = {  # metrics.jsonl field -> TensorBoard tag
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "train_accuracy": "accuracy/train",
    "val_accuracy": "accuracy/validation",
    "val_top5_accuracy": "top5_accuracy/validation",
    "lr": "learning_rate",
    "images_per_s": "speed/images_per_s",
}


def quiet_writer_threads() -> None:
    """Keep a failing event-writer thread from printing its own traceback ("Exception in thread ..." on a full
    disk, a file-size limit or a read-only folder): the writer raises the same error again on the main thread
    at its next write or flush, where :class:`TensorBoardLog` turns it into its one warning."""
    previous = threading.excepthook
    if getattr(previous, "cifarkit_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ == "_AsyncWriterThread" and isinstance(args.exc_value, Exception):
            return  # surfaced on the main thread by the writer's next call
        previous(args)

    hook.cifarkit_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class TensorBoardLog:
    """Writes one run's events under ``run_dir/tensorboard``; steps are epochs.

    Args:
        run_dir: the run folder.
        resumed_after: on resume, the epoch of the checkpoint; events of later epochs from before the
            crash are purged (TensorBoard's ``purge_step``), so no epoch is shown twice.
    """

    def __init__(self, run_dir: Path, resumed_after: int | None = None) -> None:
        self.writer = None
        quiet_writer_threads()
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resumed_after is None else resumed_after + 1
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge)
        except Exception as exc:  # not installed, or the folder cannot be written
            self._off(exc)

    def _off(self, exc: BaseException) -> None:
        self.writer = None
        warnings.warn(f"TensorBoard events off for this run ({exc.__class__.__name__}: {exc})", stacklevel=3)

    def epoch(self, row: dict[str, Any], telemetry: dict[str, dict[str, Any]] | None = None) -> None:
        """One epoch's metrics row (as in metrics.jsonl) and each phase's telemetry summary."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        try:
            for key, tag in SCALARS.items():
                if row.get(key) is not None:
                    self.writer.add_scalar(tag, row[key], step)
            if row.get("epoch_time_s"):
                self.writer.add_scalar("speed/data_wait_share", row["data_wait_s"] / row["epoch_time_s"], step)
            for phase, summary in (telemetry or {}).items():
                for key, value in summary.items():
                    if key.startswith("peak_") and isinstance(value, (int, float)):
                        self.writer.add_scalar(f"telemetry/{phase}/{key}", value, step)
            self.writer.flush()
        except Exception as exc:
            self._off(exc)

    def test(self, test: dict[str, Any], step: int, confusion_figure: Any = None) -> None:
        """The test split's top-1 and top-5, and ``confusion_figure`` (a matplotlib figure) as an image."""
        if self.writer is None:
            return
        try:
            if confusion_figure is not None:
                self.writer.add_figure("test/confusion_matrix", confusion_figure, step)
            self.writer.add_scalar("test/accuracy", test["accuracy"], step)
            self.writer.add_scalar("test/top5_accuracy", test["top5_accuracy"], step)
            self.writer.flush()
        except Exception as exc:
            self._off(exc)

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception as exc:
                self._off(exc)


class TensorBoard(Callback):
    """The run's TensorBoard events (rank 0): every epoch's metrics row, each phase's telemetry peaks (from
    ``telemetry``, when given) and the test scores, with the confusion matrix drawn by ``draw_confusion``
    (``(matrix, classes) -> Figure``; the report layer passes its own). Faults turn it off with one
    warning; training goes on."""

    def __init__(self, telemetry: Any = None, draw_confusion: Callable[..., Any] | None = None) -> None:
        self.telemetry = telemetry
        self.draw_confusion = draw_confusion
        self.log: TensorBoardLog | None = None

    def run_start(self, run: Run) -> None:
        if run.dist.is_main:
            self.log = TensorBoardLog(run.run_dir, resumed_after=run.resumed_after)

    def epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.epoch(row, self.telemetry.summaries if self.telemetry is not None else None)

    def run_end(self, run: Run, test: dict[str, Any] | None) -> None:
        if self.log is not None:
            if test is not None:
                figure = None
                if self.draw_confusion is not None and "confusion_matrix" in test:
                    figure = self.draw_confusion(test["confusion_matrix"], run.dataset.classes)
                self.log.test(test, run.best_epoch or 0, figure)
            self.log.close()
