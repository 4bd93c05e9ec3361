"""Faults and hostile input: every case answers in one line with the right exit status, and leaves nothing
half-written (issue 12's campaign, one test per case, so it cannot regress)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cifarkit.errors import EXIT_FAILED, EXIT_USAGE

from .conftest import CLI_ON_A_SMALL_DISK, write_image_folder

SMALL = ("--dataset", "synthetic:classes=3,train=20,test=5", "--batch-size", "32", "--val-fraction", "0.2")


def one_line(code: int, err: str, expected_code: int, *needles: str) -> None:
    """The command failed with ``expected_code`` and said so in exactly one line, without a traceback."""
    assert code == expected_code, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err


def no_temporaries(folder: Path) -> None:
    """Atomic writes leave no temporary or empty files behind."""
    leftovers = [
        p for p in folder.rglob("*") if p.is_file() and (p.name.endswith((".tmp", ".part")) or p.stat().st_size == 0)
    ]
    assert leftovers == []


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: any output path under it cannot be created (like a read-only mount, even for root)."""
    f = tmp_path / "a_file"
    f.write_text("not a folder")
    return f


@pytest.fixture
def perf_log(tmp_path: Path) -> Path:
    """A small valid telemetry log."""
    log = tmp_path / "run" / "perf" / "train_epoch.jsonl"
    log.parent.mkdir(parents=True)
    rows = [
        {"phase": "sample", "ts": 100.0 + i, "epoch": 1, "backend": "cpu", "cpu_percent": 50.0 + i, "rss_mb": 900 + i}
        for i in range(5)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return log


# ----------------------------------------------------------------------------- 1. unwritable or full output


@pytest.mark.parametrize("verb", ["train", "series", "speedrun"])
def test_out_under_a_regular_file_is_one_line_before_any_work(cli, a_file, verb, data_dir):
    args = {
        "train": ("train", *SMALL, "--epochs", "1"),
        "series": ("series", "--dataset", "synthetic", "--profile", "smoke"),
        "speedrun": ("speedrun", "--dataset", "synthetic", "--recipe", "tiny"),
    }[verb]
    code, out, err = cli(*args, "--out", a_file / "runs")
    one_line(code, err, EXIT_USAGE, "--out folder", str(a_file / "runs"), "regular file")
    assert out == ""  # refused before the first epoch / notebook
    code, _, err = cli(*args, "--out", a_file)
    one_line(code, err, EXIT_USAGE, "is a file, not a folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc, where nothing can be created")
def test_out_where_no_folder_can_be_made(cli):
    code, _, err = cli("train", *SMALL, "--epochs", "1", "--out", "/proc/cifarkit-x")
    one_line(code, err, EXIT_USAGE, "cannot create --out folder /proc/cifarkit-x")


def test_plot_perf_and_montage_refuse_an_output_under_a_file(cli, a_file, perf_log, tmp_path):
    one_line(*cli("plot-perf", perf_log, "--out", a_file / "figs")[::2], EXIT_USAGE, "regular file")
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    from PIL import Image

    Image.new("RGB", (20, 10), "red").save(pngs / "a.png")
    one_line(*cli("montage", pngs, "--out", a_file / "m.png")[::2], EXIT_USAGE, "is a file, not a folder")
    one_line(*cli("montage", pngs, "--out", pngs)[::2], EXIT_USAGE, "is a folder")


TRAIN_ON_A_SMALL_DISK = """
import json, subprocess, sys
from pathlib import Path
from cifarkit.runs import load_checkpoint
disk = Path(sys.argv[1])
args = [sys.executable, "-m", "cifarkit", "train", *json.loads(sys.argv[2]), "--epochs", "3", "--out", str(disk / "runs")]
done = subprocess.run(args, capture_output=True, text=True, timeout=600)
(run,) = (disk / "runs").iterdir()
leftovers = [p.name for p in run.rglob("*") if p.is_file() and (p.name.endswith((".tmp", ".part")) or p.stat().st_size == 0)]
epoch = load_checkpoint(run / "last.pt", "last.pt")["epoch"]
print(json.dumps({"code": done.returncode, "err": done.stderr, "leftovers": leftovers, "last_epoch": epoch}))
"""


def test_full_disk_during_training_keeps_the_previous_checkpoint_and_no_temporary(cli, tmp_path, on_small_disk):
    """A real full disk (a tmpfs sized to hold epoch 1's checkpoints and not epoch 2's, in a private mount
    namespace, so it runs without root where the kernel allows): torch's zip writer fails with "unexpected pos" as
    it does on a full disk, the command says "disk full" in one line, and last.pt of epoch 1 is intact, with no
    temporary file left."""
    code, out, err = cli("train", *SMALL, "--epochs", "1", "--out", tmp_path / "sizes")
    assert code == 0, err
    (sizes,) = (tmp_path / "sizes").iterdir()
    best, last = (sizes / "best.pt").stat().st_size, (sizes / "last.pt").stat().st_size
    kib = (best + last + 96 * 1024 + best + last // 2) // 1024  # epoch 2's last.pt cannot fit
    done = on_small_disk(TRAIN_ON_A_SMALL_DISK, kib=kib, args=(json.dumps(SMALL),))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one_line(result["code"], result["err"], EXIT_FAILED, "disk full while writing", ".pt")
    assert result["leftovers"] == []
    assert result["last_epoch"] == 1  # the epoch-2 write failed; epoch 1 is intact


@pytest.mark.parametrize("verb", ["plot-perf", "montage"])
def test_full_disk_leaves_no_empty_or_partial_figure(verb, perf_log, tmp_path, on_small_disk):
    """A real full disk (a 16 KiB tmpfs in a private mount namespace, smaller than the first figure): the command
    says in one line which PNG the disk could not take, and leaves no empty, partial or temporary file."""
    import numpy as np
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)  # PNG cannot shrink it
    Image.fromarray(noise).save(pngs / "a.png")
    args = {
        "plot-perf": ["plot-perf", str(perf_log), "--out", "{disk}/figs"],
        "montage": ["montage", str(pngs), "--out", "{disk}/m/montage.png"],
    }[verb]
    done = on_small_disk(CLI_ON_A_SMALL_DISK, kib=16, args=(json.dumps(args), "{}"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one_line(result["code"], result["err"], EXIT_FAILED, "disk full while writing", ".png;")
    assert result["files"] == {}


def test_a_disk_out_of_inodes_names_the_file_asked_for_not_its_temporary(perf_log, on_small_disk):
    """A real disk with bytes free but no inode left for a new file (a tmpfs holding at most its root and the
    output folder): every write goes through a hidden temporary file beside the target, and the one line names
    the target the user asked for, not that temporary."""
    args = ["plot-perf", str(perf_log), "--out", "{disk}/figs"]
    done = on_small_disk(CLI_ON_A_SMALL_DISK, kib=4096, inodes=2, args=(json.dumps(args), "{}"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one_line(result["code"], result["err"], EXIT_FAILED, "disk full while writing", ".png;")
    assert ".tmp" not in result["err"] and "/figs/" in result["err"], result["err"]
    assert result["files"] == {}


def test_the_longest_name_a_folder_takes_is_written_whole(tmp_path):
    """A target whose name is as long as the filesystem allows (255 bytes, here in two-byte letters) is written:
    its temporary file's name stays within the same limit, so atomic writes never refuse a name the disk takes."""
    from cifarkit.runs import write_json

    name = "é" * 125 + ".json"  # 255 bytes
    try:
        (tmp_path / name).write_text("{}")
    except OSError as exc:  # a filesystem whose own limit is lower (eCryptfs: 143) has no such name to keep
        pytest.skip(f"this filesystem refuses a 255-byte name itself ({exc.strerror})")
    write_json(tmp_path / name, {"a": 1})
    assert json.loads((tmp_path / name).read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left beside it


# ----------------------------------------------------------------------------- 2. unwritable dataset cache


def test_unwritable_cache_trains_without_it(cli, tmp_path, a_file):
    folder = write_image_folder(tmp_path / "imgs", train=10, test=2)
    code, out, err = cli(
        "train",
        "--dataset",
        f"folder:{folder}",
        "--data-dir",
        a_file / "data",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--val-fraction",
        "0.2",
        "--out",
        tmp_path / "runs",
    )
    assert code == 0, err
    assert "Traceback" not in err and "decoded on every run" in err
    assert len(err.strip().splitlines()) == 1  # one warning line


def test_offline_download_into_an_unwritable_data_dir_is_one_line(cli, a_file, tmp_path):
    code, _, err = cli("train", "--dataset", "cifar10", "--data-dir", a_file / "data", "--out", tmp_path)
    one_line(code, err, EXIT_USAGE, "not a writable folder", "cifar-10-python.tar.gz")


# ----------------------------------------------------------------------------- 3. too few images


def test_one_image_per_class_is_refused_before_training(cli, tmp_path):
    code, out, err = cli("train", "--dataset", "synthetic:classes=3,train=1,test=1", "--out", tmp_path)
    one_line(code, err, EXIT_USAGE, "validation split", "at least 2")
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- 4. resume


@pytest.fixture(scope="module")
def two_epoch_runs(tmp_path_factory) -> dict[str, Path]:
    """Finished 2-epoch runs: one with a one-cycle schedule, one without, both with telemetry."""
    from cifarkit.cli import main

    out = tmp_path_factory.mktemp("resume")
    runs = {}
    for scheduler in ("onecycle", "none"):
        assert (
            main(
                [
                    "train",
                    *SMALL,
                    "--epochs",
                    "2",
                    "--scheduler",
                    scheduler,
                    "--telemetry",
                    "--telemetry-interval",
                    "0.05",
                    "--out",
                    str(out / scheduler),
                ]
            )
            == 0
        )
        (runs[scheduler],) = (out / scheduler).iterdir()
    return runs


def test_more_epochs_on_a_scheduled_run_is_refused_without_touching_it(cli, two_epoch_runs):
    run = two_epoch_runs["onecycle"]
    before = (run / "config.json").read_bytes()
    code, _, err = cli("train", "--resume", run / "last.pt", "--epochs", "4")
    one_line(code, err, EXIT_USAGE, "from 2 to 4", "onecycle", "fixed")
    assert (run / "config.json").read_bytes() == before


def test_resuming_a_finished_run_is_refused_without_touching_it(cli, two_epoch_runs):
    run = two_epoch_runs["none"]
    before = (run / "config.json").read_bytes()
    for epochs in ("1", "2"):
        code, _, err = cli("train", "--resume", run / "last.pt", "--epochs", epochs)
        one_line(code, err, EXIT_USAGE, "already trained 2 epoch(s)", "--epochs above")
    one_line(*cli("train", "--resume", run / "last.pt")[::2], EXIT_USAGE, "already trained 2")
    assert (run / "config.json").read_bytes() == before


def test_resume_from_a_missing_file_asks_for_last_pt(cli, tmp_path):
    one_line(*cli("train", "--resume", tmp_path / "nope" / "last.pt")[::2], EXIT_USAGE, "pass the last.pt")


def test_extending_an_unscheduled_run_works(cli, two_epoch_runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(two_epoch_runs["none"], run)
    code, out, err = cli("train", "--resume", run / "last.pt", "--epochs", "3")
    assert code == 0, err
    assert json.loads((run / "train.json").read_text())["epochs_run"] == 3
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


# ----------------------------------------------------------------------------- 5. telemetry


def test_infinite_profile_interval_is_refused_at_parse_time(cli):
    one_line(*cli("train", "--telemetry", "--telemetry-interval", "inf")[::2], EXIT_USAGE, "finite")
    one_line(*cli("train", "--telemetry-interval", "0")[::2], EXIT_USAGE, "> 0")
    one_line(*cli("train", "--profile")[::2], EXIT_USAGE, "--profile is now --telemetry")


def test_a_file_where_perf_belongs_turns_telemetry_off_not_training(cli, two_epoch_runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(two_epoch_runs["none"], run)
    shutil.rmtree(run / "perf")
    (run / "perf").write_text("in the way")
    code, out, err = cli("train", "--resume", run / "last.pt", "--epochs", "3")
    assert code == 0 and "Traceback" not in err, err
    assert "telemetry off" in err and len(err.strip().splitlines()) == 1
    assert json.loads((run / "train.json").read_text())["epochs_run"] == 3


def test_resume_does_not_duplicate_telemetry_of_the_rerun_epoch(tmp_path):
    from cifarkit.config import TrainConfig
    from cifarkit.report.figures import run_callbacks
    from cifarkit.tools.perflogs import read_jsonl
    from cifarkit.train import fit

    class Cut(Exception):
        pass

    def cut_after_epoch_2_is_profiled(line: str) -> None:
        if line.startswith("epoch   2/"):
            raise Cut  # epoch 2's telemetry is written, its checkpoint is not: last.pt holds epoch 1

    cfg = TrainConfig(
        dataset="synthetic:classes=3,train=20,test=5",
        epochs=2,
        batch_size=32,
        val_fraction=0.2,
        telemetry=True,
        telemetry_interval=0.05,
    )
    with pytest.raises(Cut):
        fit(cfg, out=tmp_path, log=cut_after_epoch_2_is_profiled, callbacks=run_callbacks())
    (run,) = tmp_path.iterdir()
    fit(cfg, resume=run / "last.pt", log=lambda s: None, callbacks=run_callbacks())
    for log in ("train_epoch.jsonl", "val_epoch.jsonl"):
        summaries = [r["epoch"] for r in read_jsonl(run / "perf" / log) if r["phase"] == "summary"]
        assert summaries == [1, 2], log


# ----------------------------------------------------------------------------- 6. divergence


def test_absurd_learning_rates_are_refused_at_parse_time(cli):
    for lr in ("inf", "nan", "-1", "0"):
        one_line(*cli("train", "--lr", lr)[::2], EXIT_USAGE, "--lr")


def test_divergence_exits_non_zero_and_keeps_the_last_good_checkpoint(cli, tmp_path):
    """A learning rate that really drives the network to overflow (SGD at 1,000 with a one-cycle warm-up: the
    first epoch trains at a 25th of it, the next ones blow up). The mean training loss can stay finite while the
    weights and batch-norm statistics overflow, so every epoch's weights are checked too: the run stops at the
    first non-finite epoch, and the checkpoints it keeps hold finite weights from before it."""
    import re

    import torch

    from cifarkit.runs import load_checkpoint

    args = ("--optimizer", "sgd", "--lr", "1000", "--scheduler", "onecycle", "--epochs", "10")
    code, out, err = cli("train", *SMALL, *args, "--out", tmp_path)
    one_line(code, err, EXIT_FAILED, "diverged in epoch", "best.pt and last.pt", "lower --lr")
    diverged = int(re.search(r"diverged in epoch (\d+)", err).group(1))
    assert 1 < diverged < 10
    (run,) = tmp_path.iterdir()
    for name in ("best.pt", "last.pt"):
        kept = load_checkpoint(run / name)  # it refuses non-finite weights, so loading is the check
        assert kept["epoch"] < diverged
        assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())
    assert json.loads((run / "test.json").read_text())["checkpoint"] == "best.pt"
    assert json.loads((run / "train.json").read_text())["epochs_run"] == diverged


# ----------------------------------------------------------------------------- 7. class names


@pytest.fixture(scope="module")
def named_folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A run trained on airplane/cat/ship, that folder, and a folder of dog/frog/horse with the same images."""
    from cifarkit.cli import main

    root = tmp_path_factory.mktemp("names")
    trained = write_image_folder(root / "acs", train=10, test=4)
    other = root / "dfh"
    shutil.copytree(trained, other)
    for split in ("train", "test"):
        for old, new in zip(sorted((trained / split).iterdir()), ("airplane", "cat", "ship"), strict=True):
            old.rename(trained / split / new)
        for old, new in zip(sorted((other / split).iterdir()), ("dog", "frog", "horse"), strict=True):
            old.rename(other / split / new)
    out = root / "runs"
    assert (
        main(
            [
                "train",
                "--dataset",
                f"folder:{trained}",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--val-fraction",
                "0.2",
                "--data-dir",
                str(root / "data"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    (run,) = out.iterdir()
    return run, trained, other


def test_evaluate_refuses_a_dataset_with_other_class_names(cli, named_folders):
    run, _, other = named_folders
    for tta in ("none", "flip", "all"):
        code, out, err = cli("evaluate", run / "best.pt", "--dataset", f"folder:{other}", "--tta", tta)
        one_line(code, err, EXIT_USAGE, "airplane, cat, ship", "dog, frog, horse")
        assert out == ""


def test_tta_table_and_test_probabilities_refuse_other_class_names(named_folders):
    from cifarkit.data import load_dataset
    from cifarkit.errors import CheckpointError
    from cifarkit.report.analysis import test_probabilities, tta_table

    run, _, other = named_folders
    ds = load_dataset(f"folder:{other}")
    with pytest.raises(CheckpointError, match="dog, frog, horse"):
        tta_table(run, ds, device="cpu")
    with pytest.raises(CheckpointError, match="dog, frog, horse"):
        test_probabilities(run, ds, device="cpu")


def test_the_same_classes_in_another_order_are_mapped(named_folders):
    from cifarkit.data import load_dataset
    from cifarkit.report.analysis import test_probabilities

    run, trained, _ = named_folders
    ds = load_dataset(f"folder:{trained}")
    reordered = ds.with_class_order(tuple(reversed(ds.classes)))
    assert reordered.classes == ("ship", "cat", "airplane")
    assert torch.equal(reordered.test.labels, 2 - ds.test.labels)
    labels, probabilities = test_probabilities(run, ds, device="cpu")
    labels_r, probabilities_r = test_probabilities(run, reordered, device="cpu")
    assert (labels == labels_r).all() and (probabilities.argmax(1) == probabilities_r.argmax(1)).all()


# ----------------------------------------------------------------------------- 8. malformed logs and images


def test_plot_perf_skips_text_where_numbers_belong(cli, perf_log, tmp_path):
    with open(perf_log, "a") as f:
        f.write(json.dumps({"phase": "sample", "ts": "notanumber", "cpu_percent": 3}) + "\n")
        f.write(json.dumps({"phase": "sample", "ts": 200.0, "rss_mb": "big", "cpu_percent": 4}) + "\n")
        f.write("{garbage\n")
    code, out, err = cli("plot-perf", perf_log, "--out", tmp_path / "figs")
    assert code == 0 and "Traceback" not in err, err
    assert all(line.startswith("warning:") for line in err.strip().splitlines())
    assert "malformed" in err and "numeric ts" in err
    assert (tmp_path / "figs" / "cpu_percent.png").stat().st_size > 0


def test_plot_perf_on_a_binary_file_or_a_log_without_metrics_is_one_line(cli, tmp_path):
    binary = tmp_path / "bin.jsonl"
    binary.write_bytes(bytes(range(256)) * 4)
    one_line(*cli("plot-perf", binary, "--out", tmp_path / "a")[::2], EXIT_USAGE, "no sample lines")
    bare = tmp_path / "bare.jsonl"
    bare.write_text(json.dumps({"phase": "sample", "ts": 1.0, "backend": ""}) + "\n")
    one_line(*cli("plot-perf", bare, "--out", tmp_path / "b")[::2], EXIT_USAGE, "no metric values")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("content", [b"this is not a png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"])
def test_montage_names_an_unreadable_image(cli, tmp_path, content):
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.new("RGB", (20, 10), "red").save(pngs / "a.png")
    (pngs / "b.png").write_bytes(content)
    code, _, err = cli("montage", pngs, "--out", tmp_path / "m.png")
    one_line(code, err, EXIT_USAGE, "cannot read image", "b.png")
    assert not (tmp_path / "m.png").exists()


def test_montage_on_a_truncated_png(cli, tmp_path):
    from PIL import Image

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    Image.effect_noise((64, 64), 50).save(pngs / "a.png")
    data = (pngs / "a.png").read_bytes()
    (pngs / "a.png").write_bytes(data[: len(data) // 2])
    one_line(*cli("montage", pngs, "--out", tmp_path / "m.png")[::2], EXIT_USAGE, "cannot read image")


# ----------------------------------------------------------------------------- 9./10. series resume and Ctrl-C


def fake_report(root: Path, dataset: str = "synthetic") -> Path:
    """A report folder whose notebook 00 finished, as run_series leaves it."""
    report = root / "report"
    (report / "notebooks").mkdir(parents=True)
    state = {
        "parameters": {"dataset": dataset, "profile": "smoke", "seed": 0},
        "notebooks": {"00_data_exploration": {"status": "ok", "seconds": 1.0}},
    }
    (report / "series.json").write_text(json.dumps(state))
    return report


def test_series_resume_uses_the_reports_dataset(cli, tmp_path, data_dir):
    report = fake_report(tmp_path)
    code, out, err = cli("series", "--resume", report, "--only", "00")
    assert code == 0 and "Traceback" not in err, err  # cifar10 (not downloadable here) was never touched
    assert json.loads((report / "series.json").read_text())["parameters"]["dataset"] == "synthetic"
    one_line(
        *cli("series", "--resume", report, "--only", "00", "--dataset", "cifar10")[::2],
        EXIT_USAGE,
        "started on --dataset synthetic",
    )


CTRL_C_SERIES = """
import sys
from pathlib import Path

from cifarkit import cli
from cifarkit.report import series

series.notebooks_dir = lambda: Path(sys.argv[1])  # two tiny notebooks instead of the course's
sys.exit(cli.main(sys.argv[2:]))
"""


def test_ctrl_c_records_the_interrupted_notebook_and_writes_the_index(tmp_path, data_dir):
    """Ctrl-C as a terminal sends it: SIGINT to the foreground process group while a notebook's cell runs (this
    test faked it before, raising KeyboardInterrupt from a stand-in for papermill). The series says so in one
    line, exits 130, records the notebook as interrupted and the one before it as done, writes the index and
    leaves no kernel behind."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from .test_series import make_notebook

    books, started = tmp_path / "notebooks", tmp_path / "started"
    books.mkdir()
    make_notebook(books / "00_quick.ipynb", "print('fine')")
    make_notebook(books / "01_slow.ipynb", f"open({str(started)!r}, 'w').close()\nimport time\ntime.sleep(300)")
    script = tmp_path / "series.py"
    script.write_text(CTRL_C_SERIES)
    cmd = [sys.executable, str(script), str(books), "series", "--dataset", "synthetic", "--profile", "smoke"]
    # a terminal's foreground job takes SIGINT; a background job of a non-interactive shell (a CI script run
    # with &) inherits it ignored, so the child gets the terminal's disposition back
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "CIFARKIT_DATA": str(data_dir)}, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), proc.communicate(timeout=60)
        children = psutil.Process(proc.pid).children(recursive=True)  # the kernel among them
        assert children, "the notebook ran in no child process"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed check must not leave the series and its kernel running
            for leftover in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                leftover.kill()
    one_line(proc.returncode, err, 130, "interrupted")
    report = Path(out.strip().splitlines()[-1].split("--resume ", 1)[1])
    state = json.loads((report / "series.json").read_text())
    assert state["notebooks"]["00_quick"]["status"] == "ok"
    assert state["notebooks"]["01_slow"]["status"] == "interrupted"
    assert "01_slow | interrupted" in (report / "index.md").read_text()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"{[p.cmdline()[:3] for p in alive]} outlived the series"  # the kernel shuts down with it


SERIES_ON_A_SMALL_DISK = """
import json, subprocess, sys
from pathlib import Path
disk = Path(sys.argv[1])
cmd = [sys.executable, "-m", "cifarkit", "series", "--profile", "smoke", "--dataset", "synthetic", "--only", "00"]
done = subprocess.run([*cmd, "--out", str(disk)], capture_output=True, text=True, timeout=600)
(report,) = disk.glob("*-series")
state = json.loads((report / "series.json").read_text())
temporaries = [str(p) for p in report.rglob("*") if ".tmp" in p.name]
print(json.dumps({"code": done.returncode, "err": done.stderr, "state": state["notebooks"], "tmp": temporaries}))
"""


@pytest.mark.slow
def test_a_disk_that_fills_inside_a_notebook_is_one_line_and_keeps_series_json(on_small_disk):
    """A real full disk: the series writes its report to a 300 KiB tmpfs, and notebook 00 fills it with its figures,
    so the kernel's ENOSPC arrives as a papermill cell error (not an OSError of the runner's own). The series says
    "disk full" in one line on stderr with how to resume, exits 1, and series.json records the failed cell."""
    done = on_small_disk(SERIES_ON_A_SMALL_DISK, kib=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one_line(result["code"], result["err"], EXIT_FAILED, "disk full while 00_data_exploration.ipynb ran", "--resume")
    entry = result["state"]["00_data_exploration"]
    assert entry["status"] == "failed" and "No space left on device" in entry["error"]
    assert result["tmp"] == []


def test_a_file_size_limit_while_saving_is_named_as_such(tmp_path):
    """A real RLIMIT_FSIZE (ulimit -f) stops the checkpoint write: torch reports it only as "unexpected pos",
    and cifarkit called it an input/output error. Now the line names the file-size limit."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, 100 * 1024))  # an EX-1 checkpoint is bigger

    cmd = [
        sys.executable,
        "-m",
        "cifarkit",
        "train",
        *SMALL,
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    one_line(done.returncode, done.stderr, EXIT_FAILED, "file too large", "file-size limit", ".pt")
    assert "Input/output error" not in done.stderr
    (run,) = tmp_path.iterdir()
    no_temporaries(run)


def test_ctrl_c_while_the_options_are_built_is_one_line(cli, monkeypatch):
    """A real SIGINT delivered while the command line builds its parser (the first tenth of a second of every
    command) is one line and exit 130, as later in the command; it was a KeyboardInterrupt traceback."""
    import os
    import signal
    import time

    import cifarkit.cli

    build = cifarkit.cli.build_parser

    def interrupted_while_building():
        parser = build()
        os.kill(os.getpid(), signal.SIGINT)  # Python's own handler raises KeyboardInterrupt at the next bytecode
        time.sleep(5)
        return parser

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's (a CI job may ignore it)
    monkeypatch.setattr(cifarkit.cli, "build_parser", interrupted_while_building)
    try:
        code, _, err = cli("info")
    except KeyboardInterrupt:  # escaped the command line: fail this test, not the whole session
        pytest.fail("Ctrl-C while the parser was built escaped cifarkit.cli.main as a KeyboardInterrupt")
    finally:
        signal.signal(signal.SIGINT, previous)
    one_line(code, err, 130, "interrupted")
