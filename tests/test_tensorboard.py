"""TensorBoard: every run writes event files with its curves, telemetry and confusion matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifarkit.config import TrainConfig
from cifarkit.report.figures import run_callbacks
from cifarkit.train import fit

CFG = dict(dataset="synthetic:classes=3,train=20,test=5", batch_size=32, val_fraction=0.2)


def events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_every_run_writes_curves_telemetry_and_confusion_matrix(tmp_path):
    run = fit(
        TrainConfig(**CFG, epochs=2, telemetry=True, telemetry_interval=0.05),
        out=tmp_path,
        log=lambda s: None,
        callbacks=run_callbacks(),
    )
    acc = events(run)
    tags = set(acc.Tags()["scalars"])
    expected = {
        "loss/train",
        "loss/validation",
        "accuracy/train",
        "accuracy/validation",
        "top5_accuracy/validation",
        "learning_rate",
        "speed/images_per_s",
        "speed/data_wait_share",
        "test/accuracy",
    }
    assert expected <= tags
    assert any(t.startswith("telemetry/train/peak_") for t in tags)
    rows = [r for r in (run / "metrics.jsonl").read_text().splitlines() if r]
    import json

    metrics = [json.loads(r) for r in rows]
    assert [e.step for e in acc.Scalars("loss/validation")] == [1, 2]
    assert [e.value for e in acc.Scalars("accuracy/validation")] == pytest.approx([m["val_accuracy"] for m in metrics])
    test_accuracy = json.loads((run / "test.json").read_text())["accuracy"]
    assert acc.Scalars("test/accuracy")[0].value == pytest.approx(test_accuracy)
    assert acc.Tags()["images"] == ["test/confusion_matrix"]


def test_resume_does_not_show_the_rerun_epoch_twice(tmp_path):
    class Cut(Exception):
        pass

    def cut_at_epoch_2(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Cut  # epoch 2 was logged to TensorBoard, but last.pt holds epoch 1

    cfg = TrainConfig(**CFG, epochs=3)
    with pytest.raises(Cut):
        fit(cfg, out=tmp_path, log=cut_at_epoch_2, callbacks=run_callbacks())
    (run,) = tmp_path.iterdir()
    fit(cfg, resume=run / "last.pt", log=lambda s: None, callbacks=run_callbacks())
    assert [e.step for e in events(run).Scalars("loss/validation")] == [1, 2, 3]


def test_unwritable_tensorboard_folder_warns_and_trains(tmp_path):
    cfg = TrainConfig(**CFG, epochs=1)

    import cifarkit.train

    real = cifarkit.train.make_run_dir

    def run_dir_with_a_file_in_the_way(*args, **kwargs):
        run = real(*args, **kwargs)
        (run / "tensorboard").write_text("in the way")
        return run

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cifarkit.train, "make_run_dir", run_dir_with_a_file_in_the_way)
        with pytest.warns(UserWarning, match="TensorBoard events off"):
            run = fit(cfg, out=tmp_path, log=lambda s: None, callbacks=run_callbacks())
    assert (run / "best.pt").is_file() and (run / "test.json").is_file()


WRITE_EPOCHS = """
import sys, warnings
from pathlib import Path
from cifarkit.cli import one_line_warning
from cifarkit.tools.tensorboard import TensorBoardLog
warnings.showwarning = one_line_warning
log = TensorBoardLog(Path(sys.argv[1]))
for epoch in range(1, 2001):
    log.epoch({"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4, "train_accuracy": 0.8, "val_accuracy": 0.7})
log.close()
print("training went on")
"""


def test_a_file_size_limit_in_tensorboards_writer_thread_is_one_warning(tmp_path):
    """Event files are written by TensorBoard's background thread: a real file-size limit (RLIMIT_FSIZE, which
    Python meets as EFBIG, 'File too large') failed there and printed 'Exception in thread ...' with a
    traceback beside, or instead of, the one warning line the README promises."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))  # the event file outgrows it after some epochs

    done = subprocess.run(
        [sys.executable, "-c", WRITE_EPOCHS, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit,
    )
    assert done.returncode == 0 and "training went on" in done.stdout, done.stderr
    assert "Exception in thread" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorBoard events off" in lines[0] and "File too large" in lines[0], done.stderr
    assert max(p.stat().st_size for p in (tmp_path / "tensorboard").iterdir()) <= 8192  # the limit was real


def test_a_full_disk_in_tensorboards_writer_thread_is_one_warning(on_small_disk):
    """A real full disk: a 16 KiB tmpfs fills while TensorBoard's background thread writes its events (the kernel's
    ENOSPC, in that thread, as it happens on a real disk): one warning line, and training goes on."""
    done = on_small_disk(WRITE_EPOCHS, kib=16)
    assert done.returncode == 0 and "training went on" in done.stdout, done.stderr
    assert "Exception in thread" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorBoard events off" in lines[0] and "No space left" in lines[0], done.stderr


def test_a_read_only_tensorboard_folder_is_one_warning_at_its_first_flush(on_small_disk):
    """A real read-only folder: ``tensorboard/`` exists (as after an earlier session) on a disk remounted read-only,
    so the event file fails when the writer first flushes, not when it is created: one warning, training goes on."""
    done = on_small_disk(WRITE_EPOCHS, kib=64, folders=("tensorboard",), read_only=True)
    assert done.returncode == 0 and "training went on" in done.stdout, done.stderr
    assert "Exception in thread" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "TensorBoard events off" in lines[0] and "Read-only file system" in lines[0], done.stderr
