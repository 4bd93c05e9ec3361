"""The second hostile-input campaign (issue 22): files load as data only, no folder can hang a reader or
count an image twice, and every such case answers in one line."""

from __future__ import annotations

import json
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from cifarkit.data import list_image_folder

from .conftest import CLI_ON_A_SMALL_DISK, write_image_folder
from .test_faults import SMALL, no_temporaries, one_line


@contextmanager
def within(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""

    def stop(signum, frame):
        raise AssertionError(f"still running after {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_named_png_is_not_an_image(tmp_path, cli):
    root = write_image_folder(tmp_path / "imgs", num_classes=2, train=4, test=2)
    os.mkfifo(root / "train" / "class_0" / "zz_fifo.png")
    with within(30):
        classes, items = list_image_folder(root / "train")
        assert len(items) == 8 and all(p.is_file() for p, _ in items)
        os.mkfifo(tmp_path / "imgs" / "a_fifo.png")
        for i, (p, _) in enumerate(items[:2]):
            (tmp_path / "imgs" / f"{i}.png").write_bytes(p.read_bytes())
        code, out, err = cli("montage", tmp_path / "imgs", "--out", tmp_path / "m.png")
    assert code == 0 and (tmp_path / "m.png").is_file(), err


def test_a_link_loop_in_an_image_folder_is_refused_in_one_line(tmp_path, cli):
    root = write_image_folder(tmp_path / "imgs", num_classes=2, train=6, test=2)
    (root / "train" / "class_0" / "again").symlink_to("..")
    with within(30):
        code, _, err = cli("train", "--dataset", f"folder:{root}", "--epochs", "1", "--out", tmp_path / "runs")
    one_line(code, err, 2, "links back to a folder that contains it", "remove the link")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_linked_folder_of_images_is_read_once(tmp_path):
    root = write_image_folder(tmp_path / "imgs", num_classes=2, train=6, test=2)
    elsewhere = tmp_path / "more"
    (root / "train" / "class_1").rename(elsewhere)
    (root / "train" / "class_1").symlink_to(elsewhere)  # a class folder that is a link: followed
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "x.png").write_bytes(next(elsewhere.glob("*.png")).read_bytes())
    (elsewhere / "a").symlink_to(extra)
    (elsewhere / "b").symlink_to(extra)  # the same folder twice
    classes, items = list_image_folder(root / "train")
    paths = [p.resolve() for p, label in items if label == 1]
    assert classes == ["class_0", "class_1"] and len(paths) == len(set(paths)) == 7


@pytest.mark.parametrize(
    "addr,needle",
    [("127.0.0.1", "nothing answered at MASTER_ADDR=127.0.0.1"), ("no-such-host.invalid", "does not resolve")],
)
def test_a_rank_without_its_rank_0_stops_in_one_line(tmp_path, addr, needle):
    """RANK=1 with no rank 0 (or an address that does not resolve) waits CIFARKIT_RENDEZVOUS_TIMEOUT, not forever."""
    import socket
    import subprocess
    import sys

    held = socket.socket()  # bound, never listening, open until the rank has given up: nothing can answer there
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    env = {
        **os.environ,
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": addr,
        "MASTER_PORT": str(port),
        "CIFARKIT_RENDEZVOUS_TIMEOUT": "2",
    }
    cmd = [sys.executable, "-m", "cifarkit", "train", *SMALL, "--device", "cpu", "--out", str(tmp_path / "runs")]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    finally:
        held.close()
    one_line(done.returncode, done.stderr, 1, needle, "rank 1")


def test_rank_0_with_an_address_that_does_not_resolve_stops_at_once_in_one_line(tmp_path):
    """Rank 0 never checked MASTER_ADDR: it waited the whole rendezvous timeout, then printed 48 lines of c10d's
    warnings and C++ stacks before its own. Now every rank checks it first (the timeout here is 120 s: the
    old code would end on its 'could not join' line, long after)."""
    import subprocess
    import sys

    env = {
        **os.environ,
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "no-such-host.invalid",
        "MASTER_PORT": "29511",
        "CIFARKIT_RENDEZVOUS_TIMEOUT": "120",
    }
    cmd = [sys.executable, "-m", "cifarkit", "train", *SMALL, "--device", "cpu", "--out", str(tmp_path / "runs")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    one_line(done.returncode, done.stderr, 1, "MASTER_ADDR=no-such-host.invalid does not resolve", "rank 0")


def test_two_trainers_never_write_one_run_folder(tmp_path, cli):
    import fcntl

    code, out, err = cli("train", *SMALL, "--epochs", "2", "--scheduler", "none", "--out", tmp_path / "runs")
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    before = (run / "metrics.jsonl").read_text()
    held = os.open(run, os.O_RDONLY)  # another trainer holds the folder
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = cli("train", "--resume", run / "last.pt", "--epochs", "3")
        one_line(code, err, 2, "is being trained by another process", "wait for it to end")
    finally:
        os.close(held)
    assert (run / "metrics.jsonl").read_text() == before  # nothing rewritten
    code, _, err = cli("train", "--resume", run / "last.pt", "--epochs", "3")  # free again: it resumes
    assert code == 0, err


def test_killing_a_sweep_stops_its_trainers(tmp_path):
    """kill -9 of the sweep process leaves no `train` child writing on (Linux: the kernel's parent-death signal)."""
    import json
    import subprocess
    import sys
    import time

    import psutil

    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux's")
    spec = {"base": {"dataset": "synthetic:classes=3,train=400,test=20", "epochs": 50, "batch-size": 8}, "runs": [{}]}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    sweep = subprocess.Popen(
        [sys.executable, "-m", "cifarkit", "sweep", str(tmp_path / "s.json"), "--out", str(tmp_path / "o")]
    )
    try:
        deadline = time.monotonic() + 60
        children = []
        while not children and time.monotonic() < deadline:
            children = [c for c in psutil.Process(sweep.pid).children() if "train" in c.cmdline()]
            time.sleep(0.2)
        assert children, "the sweep started no trainer"
        sweep.kill()
        sweep.wait()
        gone, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, [c.cmdline() for c in alive]
    finally:
        sweep.kill()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from PIL import Image

    from cifarkit.config import TrainConfig
    from cifarkit.train import fit

    cfg = TrainConfig(model="ex1", dataset="synthetic:classes=3,train=20,test=5", epochs=1, batch_size=16)
    run = fit(cfg, out=tmp_path_factory.mktemp("runs"), log=lambda s: None)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(run / "image.png")
    return run


def edited(blob: dict, change) -> dict:
    blob = dict(blob)
    change(blob)
    return blob


TAMPERED = {
    "model_name missing": (lambda b: b.pop("model_name"), "field 'model_name'"),
    "model_kwargs a list": (lambda b: b.update(model_kwargs=[1, 2]), "field 'model_kwargs'"),
    "fewer class names": (lambda b: b.update(classes=b["classes"][:2]), "field 'classes'"),
    "num_classes 1e9": (lambda b: b.update(num_classes=10**9), "field 'num_classes'"),
    "one-element mean": (lambda b: b.update(mean=[0.5]), "field 'mean'"),
    "a billion-wide head": (
        lambda b: b.update(num_classes=90_000, classes=[str(i) for i in range(90_000)]),
        "where the network has (90000, ",
    ),
    "pruned but full": (lambda b: b.update(variant="pruned", sparsity=0.3), "holds the full network's weights"),
    "pruned, foreign names": (
        lambda b: b.update(variant="pruned", state_dict={f"x.{k}": v for k, v in b["state_dict"].items()}),
        "weight shapes describe neither model ex1",
    ),
    # a pruned network is built at its file's weight shapes: a layer a billion wide with no inputs is a 200 KB
    # file whose bias alone asked for 3.7 GiB
    "pruned, a layer a billion wide": (
        lambda b: pruned_layer(b, "features.0.weight", torch_empty(10**9, 0, 5, 5)),
        "weight shapes describe neither model ex1",
    ),
    "pruned, a layer wider than the network's": (
        lambda b: pruned_layer(b, "features.3.weight", b["state_dict"]["features.3.weight"].repeat(2, 1, 1, 1)),
        "weight shapes describe neither model ex1",
    ),
    # load_state_dict's first line is a header that names nothing: the line names the tensor
    "pruned, a bias of another width": (
        lambda b: pruned_layer(b, "features.0.weight", b["state_dict"]["features.0.weight"][:-1]),
        "size mismatch for features.0.bias",
    ),
    "marked as ONNX": (lambda b: b.update(variant="onnx"), "checkpoint variant 'onnx' is not one this cifarkit knows"),
    "unknown option": (lambda b: b.update(model_kwargs={"colour": 3}), "cannot be built"),
    "epoch as text": (lambda b: b.update(epoch="x"), "field 'epoch'"),
    "config a list": (lambda b: b.update(config=[1]), "its config is not a training configuration"),
    "config out of range": (lambda b: b.update(config={**b["config"], "lr": -1}), "--lr: -1 must be"),
    "layers that do not chain": (
        lambda b: b.update(
            variant="pruned",
            state_dict={
                k: (v[:-1] if k.startswith("features.0.") and v.ndim >= 1 else v) for k, v in b["state_dict"].items()
            },
        ),
        "does not run",
    ),
}


def torch_empty(*sides: int):
    import torch

    return torch.empty(*sides)


def pruned_layer(blob: dict, name: str, weight) -> None:
    blob.update(variant="pruned", sparsity=0.5, state_dict={**blob["state_dict"], name: weight})


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_checkpoint_is_refused_in_one_line_before_a_model_is_built(trained, tmp_path, cli, case):
    """Each refusal is one line that names the file, whichever check finds the fault."""
    import torch

    change, needle = TAMPERED[case]
    blob = torch.load(trained / "best.pt", weights_only=True)
    torch.save(edited(blob, change), tmp_path / "best.pt")
    code, _, err = cli("evaluate", tmp_path / "best.pt", "--dataset", "synthetic:classes=3,train=20,test=5")
    one_line(code, err, 2, needle, str(tmp_path / "best.pt"))
    code, _, err = cli("predict", trained / "image.png", "--checkpoint", tmp_path / "best.pt")
    one_line(code, err, 2, needle, str(tmp_path / "best.pt"))


@pytest.fixture(scope="module")
def int8_file(trained) -> Path:
    """An int8 variant of ``trained``'s best.pt, built as deploy-bench builds one."""
    import torch

    from cifarkit.runs import load_checkpoint
    from cifarkit.tools.compress import int8_blob, quantize_int8
    from cifarkit.variants import model_from_blob

    blob = load_checkpoint(trained / "best.pt")
    fp32 = model_from_blob(blob)
    torch.save(int8_blob(blob, quantize_int8(fp32, [torch.randn(8, 3, 32, 32)]), fp32), trained / "int8.pt")
    return trained / "int8.pt"


def first_layer(blob: dict, sides: object) -> None:
    blob["fp32_shapes"][next(iter(blob["fp32_shapes"]))] = sides


def swap_a_range(blob: dict) -> None:
    state = blob["state_dict"]
    low = next(k for k in state if k.endswith("min_val"))
    high = low.removesuffix("min_val") + "max_val"
    state[low], state[high] = state[high], state[low]


TAMPERED_INT8 = {
    # torchao's own check of an observer's range is an assert: a traceback (and nothing under python -O)
    "a range upside down": (swap_a_range, "min_val is above its max_val"),
    # the int8 graph is built at these shapes before a weight loads: a billion-wide layer was ~100 GB of memory
    "a layer a billion wide": (lambda b: first_layer(b, [10**9, 3, 3, 3]), "fp32_shapes describe neither model ex1"),
    "a layer of no channels": (lambda b: first_layer(b, [0, 3, 3, 3]), "fp32_shapes describe neither"),
    "a side as text": (lambda b: first_layer(b, ["8", 3, 3, 3]), "fp32_shapes describe neither"),
    "shapes as a list": (lambda b: b.update(fp32_shapes=[[8, 3, 3, 3]]), "fp32_shapes describe neither"),
    "a layer missing": (lambda b: b["fp32_shapes"].popitem(), "fp32_shapes describe neither"),
}


@pytest.mark.parametrize("case", list(TAMPERED_INT8))
def test_a_tampered_int8_file_is_refused_in_one_line_before_its_graph_is_built(int8_file, trained, tmp_path, cli, case):
    import torch

    change, needle = TAMPERED_INT8[case]
    blob = torch.load(int8_file, weights_only=True)
    change(blob)
    torch.save(blob, tmp_path / "int8.pt")
    code, _, err = cli("predict", trained / "image.png", "--checkpoint", tmp_path / "int8.pt")
    one_line(code, err, 2, needle, "build the variant again with deploy-bench", str(tmp_path / "int8.pt"))


def test_an_untampered_int8_file_answers(int8_file, trained, cli):
    code, out, err = cli("predict", trained / "image.png", "--checkpoint", int8_file)
    assert code == 0 and out.count(": ") == 1, err


def test_predict_prints_a_file_name_with_a_newline_safely(trained, tmp_path, cli):
    forged = tmp_path / "cat.png\nairplane.png: ship 1.000"
    forged.write_bytes((trained / "image.png").read_bytes())
    code, out, err = cli("predict", forged, "--checkpoint", trained / "best.pt")
    assert code == 0, err
    (line,) = out.strip().splitlines()  # one answer line, the newline shown escaped
    assert "\\n" in line and line.count(": ") == 2


@pytest.mark.parametrize("verb", ["train", "speedrun"])
def test_torchs_own_full_disk_error_is_one_line_with_nothing_half_written(verb, on_small_disk):
    """torch.save reports a full disk as a RuntimeError from its zip writer, not an OSError. A real one: the run
    folder on a 32 KiB tmpfs (in a private mount namespace) takes the JSON files but not the first best.pt."""
    args = ("--recipe", "tiny") if verb == "speedrun" else ("--epochs", "1")
    argv = [verb, "--dataset", "synthetic:classes=3,train=60,test=10", *args, "--device", "cpu", "--out", "{disk}/runs"]
    done = on_small_disk(CLI_ON_A_SMALL_DISK, kib=32, args=(json.dumps(argv), "{}"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    one_line(result["code"], result["err"], 1, "disk full while writing", "best.pt;")
    assert [f for f in result["files"] if f.endswith(".tmp") or "/.best" in f] == [], result["files"]


@pytest.mark.parametrize("content", ["", "{not json", '{"notebooks": {}}', "[1, 2]", "[" * 100_000])
def test_series_resume_on_a_broken_series_json_is_one_line(tmp_path, cli, content):
    report = tmp_path / "report"
    report.mkdir()
    (report / "series.json").write_text(content)
    code, _, err = cli("series", "--resume", report, "--dataset", "synthetic")
    one_line(code, err, 2, "series.json")


def test_an_empty_only_list_is_refused(cli):
    code, _, err = cli("series", "--only", ",", "--dataset", "synthetic", "--profile", "smoke")
    one_line(code, err, 2, "names no notebook")


def test_deeply_nested_json_is_one_line_or_a_skipped_line(tmp_path, cli):
    (tmp_path / "sweep.json").write_text("[" * 100_000)
    code, _, err = cli("sweep", tmp_path / "sweep.json")
    one_line(code, err, 2, "is not JSON", "nested too deep")
    log = tmp_path / "perf" / "train_epoch.jsonl"
    log.parent.mkdir()
    good = '{"phase": "sample", "ts": 1.0, "epoch": 1, "backend": "cpu", "cpu_percent": 50.0}\n'
    log.write_text(good + "[" * 100_000 + "\n" + good.replace("1.0", "2.0"))
    code, out, err = cli("plot-perf", log, "--out", tmp_path / "plots")
    assert code == 0 and "Traceback" not in err and "skipped 1 malformed line" in err, err


def test_a_broken_run_file_does_not_stop_a_comparison_or_plot(tmp_path, cli, trained):
    import shutil

    from cifarkit.report.comparison import compare_runs

    for name in ("a", "b"):
        shutil.copytree(trained, tmp_path / "runs" / name)
    (tmp_path / "runs" / "b" / "config.json").write_text("{broken")
    with pytest.warns(UserWarning, match="config.json skipped"):
        table = compare_runs(tmp_path / "runs")
    assert len(table) == 1


def test_deploy_bench_refuses_two_sparsities_that_name_one_file(cli, trained):
    code, _, err = cli("deploy-bench", trained / "best.pt", "--sparsity", "0.3", "0.3001")
    one_line(code, err, 2, "names one variant twice")


def test_images_of_one_colour_train_without_a_traceback(tmp_path, cli):
    from PIL import Image

    for split, n in (("train", 12), ("test", 4)):
        for c in ("a", "b"):
            (tmp_path / "flat" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / "flat" / split / c / f"{i}.png")
    dataset = f"folder:{tmp_path / 'flat'}"
    code, out, err = cli(
        "speedrun", "--dataset", dataset, "--recipe", "tiny", "--device", "cpu", "--out", tmp_path / "r"
    )
    assert code == 0 and "Traceback" not in err, err


def test_a_very_tall_png_makes_a_bounded_montage(tmp_path, cli):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (1, 100_000), "red").save(tmp_path / "imgs" / "tall.png")
    Image.new("RGB", (64, 48), "blue").save(tmp_path / "imgs" / "small.png")
    code, _, err = cli("montage", tmp_path / "imgs", "--out", tmp_path / "m.png")
    assert code == 0, err
    with Image.open(tmp_path / "m.png") as sheet:
        assert sheet.width <= 3 * 480 and sheet.height <= 4 * 480


@pytest.mark.parametrize("variant", ["int8", "pruned"])
def test_deploy_bench_refuses_a_variant_in_one_line(trained, tmp_path, cli, variant):
    import torch

    blob = torch.load(trained / "best.pt", weights_only=True)
    torch.save({**blob, "variant": variant}, tmp_path / f"{variant}.pt")
    code, _, err = cli("deploy-bench", tmp_path / f"{variant}.pt", "--device", "cpu")
    one_line(code, err, 2, f"is the {variant} variant", "pass the run's best.pt")


def test_a_class_folder_whose_name_is_not_utf8_is_one_line(tmp_path, cli):
    from PIL import Image

    for split in (b"train", b"test"):
        for name in (b"caf\xe9", b"dog"):
            folder = os.path.join(os.fsencode(tmp_path / "imgs"), split, name)
            os.makedirs(folder)
            for i in range(4):
                Image.new("RGB", (32, 32), (40 * i, 90, 20)).save(os.path.join(folder, b"%d.png" % i))
    code, _, err = cli("train", "--dataset", f"folder:{tmp_path / 'imgs'}", "--epochs", "1", "--out", tmp_path / "r")
    one_line(code, err, 2, "has a name that is not UTF-8 text", "caf\\xe9")


@pytest.mark.parametrize(
    "args,needle",
    [
        (("train", "--dataset", "synthetic:size=100000"), "size 8-512"),  # was a 40 TB allocation's traceback
        (("train", "--dataset", "synthetic:classes=1000,train=10000"), "GB of memory"),
        (("train", "--dataset", "synthetic", "--epochs", "100000000000"), ">= 1 and <= 10,000"),  # trained for ever
        (("train", "--dataset", "synthetic", "--image-size", "5000"), "<= 4,096"),  # a checkpoint none could load
        (("input-bench", "--dataset", "synthetic:train=5,test=1", "--batch-size", "1000"), "at most 50"),  # spun
    ],
)
def test_sizes_that_cannot_run_are_refused_in_one_line(cli, tmp_path, args, needle):
    code, _, err = cli(*args, *(("--out", tmp_path) if args[0] == "train" else ()))
    one_line(code, err, 2, needle)


def test_a_dataset_folder_that_is_a_file_says_so(cli, tmp_path):
    (tmp_path / "data.json").write_text("{}")
    code, _, err = cli("train", "--dataset", f"folder:{tmp_path / 'data.json'}", "--out", tmp_path)
    one_line(code, err, 2, "is a file, not a folder")


KILL_AT = """
import os, signal, sys
from cifarkit import runs, train
from cifarkit.report import figures
from cifarkit.cli import main

moment, calls = sys.argv[1], []

def die():
    os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9: no handler, no cleanup runs

if moment == "mid-save":  # half-way through writing epoch 2's last.pt: a partial temporary file stays
    real_save = runs.torch.save
    def save(obj, path, *a, **k):
        calls.append(path)
        if ".last.pt." in str(path) and sum(".last.pt." in str(p) for p in calls) == 2:
            with open(path, "wb") as f:
                f.write(b"PK\\x03\\x04" + bytes(4096))
            die()
        return real_save(obj, path, *a, **k)
    runs.torch.save = save
elif moment == "after-epoch":  # epoch 2's metrics line is written, its checkpoint is not
    real_append = train.append_jsonl
    def append(path, row):
        real_append(path, row)
        if str(path).endswith("metrics.jsonl") and row.get("epoch") == 2:
            die()
    train.append_jsonl = append
else:  # "before-figures": after test.json, before the test figures
    figures.write_test_figures = lambda *a, **k: die()
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("moment", ["mid-save", "after-epoch", "before-figures"])
def test_a_run_killed_at_any_moment_is_finished_by_resume(tmp_path, cli, moment):
    """A real SIGKILL of a single `train`, at three moments: in the middle of writing last.pt, between an
    epoch's metrics and its checkpoint, and after test.json but before the figures (a resume then refused:
    "has already trained 2 epoch(s)", so the figures could never be made). Each time `--resume` finishes the
    run, with every epoch, figure and report, and no temporary file left behind."""
    import subprocess
    import sys

    out = tmp_path / "runs"
    args = ["train", *SMALL, "--epochs", "3", "--scheduler", "none", "--device", "cpu", "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", KILL_AT, moment, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (run,) = [p.parent for p in out.glob("*/config.json")]
    if moment == "mid-save":
        assert list(run.glob(".last.pt.*.tmp"))  # what the kill left: a partial temporary checkpoint
    if moment == "before-figures":
        assert (run / "test.json").is_file() and not (run / "figures" / "confusion_matrix.png").exists()
        assert json.loads((run / "train.json").read_text())["complete"] is False
    code, _, err = cli("train", "--resume", run / "last.pt")
    assert code == 0, err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (run / "figures" / "confusion_matrix.png").is_file() and (
        run / "figures" / "per_class_accuracy.png"
    ).is_file()
    assert json.loads((run / "train.json").read_text())["complete"] is True and (run / "test.json").is_file()
    assert not [p.name for p in run.rglob("*.tmp")]  # nothing half-written left behind
    code, _, err = cli("train", "--resume", run / "last.pt")  # now whole: nothing to resume
    one_line(code, err, 2, "nothing to resume")


# ----------------------------------------------------------------------------- the third campaign (issue 42's turn)

DAMAGED_TRAINING = {
    "rows missing": (lambda b: b["training"].pop("rows"), "training state is damaged", "KeyError: 'rows'"),
    "optimizer of another network": (
        lambda b: b["training"].update(optimizer={"state": {}, "param_groups": []}),
        "training state is damaged",
        "parameter groups",
    ),
    "random stream not bytes": (lambda b: b["training"].update(torch_rng=[1, 2]), "training state is damaged"),
    "loader state as text": (lambda b: b["training"].update(loader="x"), "training state is damaged"),
    "stale as text": (lambda b: b["training"].update(stale="x"), "training state is damaged"),
    "a weight missing": (lambda b: b["state_dict"].pop("classifier.weight"), "lacks classifier.weight"),
}


@pytest.mark.parametrize("case", list(DAMAGED_TRAINING))
def test_a_damaged_resume_state_is_one_line_and_loses_nothing(trained, tmp_path, cli, case):
    """A last.pt that loads but whose training state lacks a piece, or holds the wrong kind of value (hand-edited,
    or written by something else), is refused in one line naming the file, and the run folder is left as it was."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    change, *needles = DAMAGED_TRAINING[case]
    blob = torch.load(run / "last.pt", weights_only=True)
    change(blob)
    torch.save(blob, run / "last.pt")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, _, err = cli("train", "--resume", run / "last.pt", "--epochs", "2")
    one_line(code, err, 2, str(run / "last.pt"), *needles)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


OUT_OF_MEMORY = """
import resource, sys
from cifarkit.cli import main
from cifarkit import train, resume  # what the verb imports, loaded before the limit like a running process's
from cifarkit.report import figures
from cifarkit.tools import distributed
# this process may use 2 GiB more than it holds now: an allocation beyond that fails in the allocator, as it does
# on a machine without the memory (ulimit -v does the same to a shell's commands)
with open("/proc/self/status") as f:
    held = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (held + 2 * 2**30, held + 2 * 2**30))
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="limits the address space through Linux's /proc")
def test_running_out_of_memory_is_one_line_and_writes_no_run(tmp_path):
    """A run too big for the memory there is (ex1 at 4096 pixels: a 1.2 GB classifier and gigabytes of activations
    per batch) stops in one line that says what to lower, with exit 1, and leaves nothing half-written."""
    import subprocess
    import sys

    args = ["train", *SMALL, "--image-size", "4096", "--epochs", "1", "--out", str(tmp_path / "runs")]
    done = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, *args], capture_output=True, text=True, timeout=300)
    one_line(done.returncode, done.stderr, 1, "cifarkit train: error: out of memory (it tried to allocate", "GiB)")
    assert "lower --batch-size" in done.stderr
    no_temporaries(tmp_path / "runs")


def test_an_unknown_option_is_named_by_its_verb(cli):
    code, _, err = cli("info", "--json", "--colour")
    one_line(code, err, 2, "cifarkit info: error: unrecognized arguments: --colour")


@pytest.fixture(scope="module")
def predictor(trained):
    from cifarkit.predict import Predictor

    return Predictor.from_checkpoint(trained / "best.pt", "cpu")


def hostile_images(tmp_path: Path) -> dict:
    """What a learner may hand the prediction API instead of an image, and what each must be told."""
    import numpy as np
    import torch
    from PIL import Image

    return {
        "a float image in 0-1": (np.random.default_rng(0).random((32, 32, 3)), "(x * 255).round().astype('uint8')"),
        "a float tensor": (torch.rand(3, 32, 32), "dtype float32"),
        "values past 255": (np.full((32, 32, 3), 300), "whole numbers 0-255"),
        "an empty array": (np.zeros((0, 0, 3), np.uint8), "shape (0, 0, 3)"),
        "five axes": (np.zeros((1, 1, 32, 32, 3), np.uint8), "shape (1, 1, 32, 32, 3)"),
        "None": (None, "dtype object"),
        "bytes": (b"\x89PNG", "is not an image"),
        "a ragged list": ([[1, 2], [3]], "is not an image"),
        "an image of no pixels": (Image.new("RGB", (0, 0)), "0x0 pixels"),
        "a folder": (tmp_path, "is a folder; pass its image files"),
        "a device file": ("/dev/null", "/dev/null is not a regular file"),
        "a missing file": (tmp_path / "nope.png", "file not found"),
    }


def test_what_is_not_an_image_is_one_error_and_never_stops_the_rest(predictor, tmp_path):
    """Each thing that is not an image gets its own one-line error, saying what to give; the real images around
    it are still scored. (A float image in 0-1 used to be cast to uint8, all black, and get a confident answer.)"""
    import numpy as np

    from cifarkit.predict import predict_images

    good = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for name, (bad, needle) in hostile_images(tmp_path).items():
        results = predict_images(predictor, [good, bad, good])
        assert [("topk" in r, "error" in r) for r in results] == [(True, False), (False, True), (True, False)], name
        assert needle in results[1]["error"] and "\n" not in results[1]["error"], (name, results[1]["error"])


def test_array_images_in_every_accepted_layout_agree(predictor):
    """HWC, CHW, one channel, whole numbers in a wider type and a list of lists are the same image."""
    import numpy as np
    import torch

    from cifarkit.predict import predict_images

    gray = np.random.default_rng(2).integers(0, 256, (32, 32), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    layouts = [gray, gray[..., None], gray[None], rgb, rgb.transpose(2, 0, 1), rgb.astype(np.int64), gray.tolist()]
    layouts.append(torch.from_numpy(rgb.transpose(2, 0, 1).copy()))
    results = predict_images(predictor, layouts)
    assert all("topk" in r for r in results), results
    assert len({str(r["topk"]) for r in results}) == 1


def test_the_prediction_api_refuses_bad_arguments_in_one_line(predictor, trained):
    import numpy as np

    from cifarkit.errors import ConfigError
    from cifarkit.predict import predict, predict_images

    image = trained / "image.png"
    assert [r["path"] for r in predict_images(predictor, image)] == [str(image)]  # one path is a list of one
    assert list(predict(predictor, str(image), topk=2)["rank"]) == [1, 2]
    for kwargs, needle in [
        ({"topk": 0}, "topk: 0 must be an integer >= 1"),
        ({"topk": "3"}, "topk: '3' is str; give a number"),
        ({"batch_size": 0}, "batch_size: 0 must be an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(needle)):
            predict_images(predictor, [image], **kwargs)
    with pytest.raises(ConfigError, match="one 3-d array; pass a list of images"):
        predict_images(predictor, np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize(
    "exc,named,said",
    [
        (ValueError(), False, "ValueError"),  # no message: `str(exc).splitlines()[0]` raised IndexError here
        (RuntimeError("\nthe real reason"), False, "the real reason"),  # a message that opens with a blank line
        (RuntimeError("Error(s) in loading state_dict for Ex1:\n\tsize mismatch for fc"), True, "RuntimeError: size"),
        (KeyError("model_name"), True, "KeyError: 'model_name'"),
        (OSError("x" * 500), False, "x" * 160),  # cut, so one line stays one line
    ],
)
def test_an_exception_is_told_in_one_line_whatever_its_message(exc, named, said):
    """Every one-line error that quotes a library's exception quotes it through errors.first_line; the sites
    each cut the first line their own way before, and an empty message raised IndexError inside the handler."""
    from cifarkit.errors import first_line

    told = first_line(exc, named=named)
    assert told.startswith(said) and "\n" not in told and len(told) <= 160


def _helpers():
    """The notebook-facing helpers that take a count or a size, each with a small valid input (a learner changes
    these numbers in the exercises)."""
    import numpy as np
    import torch

    from cifarkit.data import make_synthetic
    from cifarkit.evaluate import most_confused
    from cifarkit.loader import Normalizer
    from cifarkit.models import create_model
    from cifarkit.predict import Predictor
    from cifarkit.report import analysis, duplicates, explore, figures
    from cifarkit.tools.compress import prune_channels

    ds = make_synthetic(num_classes=3, train_per_class=4, test_per_class=2, seed=0)
    images, model = ds.train.images, create_model("ex1", 3)
    cpu = torch.device("cpu")
    norm = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), cpu)
    predictor = Predictor(model.eval(), list(ds.classes), norm, 32, cpu, {"config": {"amp": "off"}}, Path("ex1.pt"))
    labels = ds.test.labels.numpy()
    probs = np.full((len(labels), 3), 0.1)
    probs[:, 1] = 0.8  # every test image called class_1: class_0's are its confused examples
    return {
        "pick": lambda v: ds.train.pick(v),
        "sample": lambda v: ds.train.sample(v),
        "subsample": lambda v: ds.subsample(train=v),
        "hold_out": lambda v: ds.train.hold_out(v, seed=0),
        "samples_per_class": lambda v: explore.samples_per_class(ds.train, ds.classes, v),
        "image_grid": lambda v: figures.image_grid(images.numpy(), cols=v),
        "plot_colour_histograms": lambda v: figures.plot_colour_histograms(images.numpy(), bins=v),
        "near_duplicates": lambda v: duplicates.near_duplicates(images, ds.test.images, max_bits=v),
        "duplicate_report": lambda v: duplicates.duplicate_report({"train": images}, v),
        "most_confused": lambda v: most_confused(np.eye(3, dtype=np.int64) + 1, ds.classes, v),
        "confused_grid": lambda v: analysis.confused_grid(
            ds, labels, probs, [{"true": "class_0", "predicted": "class_1"}], v
        ),
        "prune_channels": lambda v: prune_channels(model, v, images[:2].float(), 3),
        "tta_demos": lambda v: analysis.tta_demos(predictor, ds.test, "flip", n=v),
        "tta_demos(pool)": lambda v: analysis.tta_demos(predictor, ds.test, "flip", pool=v),
    }


@pytest.mark.parametrize(
    "helper,good,said",
    [
        ("pick", 4, "pick(n): -1 must be an integer >= 0"),  # -1 took every image but one
        ("sample", 4, "sample(limit): -1 must be an integer >= 1"),  # said 'val_fraction must be between 0 and 1'
        ("subsample", 4, "sample(limit): -1 must be an integer >= 1"),
        ("hold_out", 0.25, "val_fraction: -1 must be a fraction between 0 and 1"),
        ("samples_per_class", 2, "per_class: -1 must be an integer >= 1"),
        ("image_grid", 4, "cols: -1 must be an integer >= 1"),  # matplotlib's 'figure size must be positive'
        ("plot_colour_histograms", 16, "bins: -1 must be an integer >= 1"),
        ("near_duplicates", 8, "max_bits: -1 must be an integer >= 0 and <= 64"),
        ("duplicate_report", 5, "max_examples: -1 must be an integer >= 0"),
        ("most_confused", 2, "most_confused(n): -1 must be an integer >= 1"),
        ("confused_grid", 2, "confused_grid(n): -1 must be an integer >= 1"),
        ("prune_channels", 0.5, "pruning ratio: -1 must be a fraction between 0 and 1"),  # was a bare ValueError
        ("tta_demos", 2, "tta_demos(n): -1 must be an integer >= 1"),
        ("tta_demos(pool)", 6, "pool: -1 must be an integer >= 1"),
    ],
)
def test_a_helpers_bad_count_is_one_line_in_its_own_words(helper, good, said):
    """A count or size given to a helper the notebooks call is held to a range as a command-line option is: a
    negative, a fraction, text or NaN is one ConfigError naming the argument, never numpy's, matplotlib's or a
    slice's TypeError from deep inside; the good value still works."""
    from cifarkit.errors import ConfigError

    call = _helpers()[helper]
    call(good)
    with pytest.raises(ConfigError, match=re.escape(said)):
        call(-1)
    for bad in ("3", float("nan")):  # None is sample's "all"
        with pytest.raises(ConfigError) as caught:
            call(bad)
        assert str(caught.value).startswith(said.split(" ")[0]) and "\n" not in str(caught.value), caught.value


def test_a_helpers_unknown_name_is_one_line_naming_the_choices():
    """A name given to a helper the notebooks call (a class to keep, a curve to draw, an axis) that it does not
    know is one line naming the choices: only_classes raised tuple.index's ValueError (and a class named twice
    kept half its images under two labels), plot_curves a KeyError, and plot_overlaid drew an empty plot for a
    misspelt curve and fell back to epochs for a misspelt axis, silently."""
    from cifarkit.data import make_synthetic
    from cifarkit.errors import ConfigError, DataError
    from cifarkit.report import figures
    from cifarkit.tools.transfer import only_classes

    ds = make_synthetic(num_classes=4, train_per_class=4, test_per_class=2, seed=0)
    assert only_classes(ds, ["class_2", "class_0"]).classes == ("class_2", "class_0")
    for keep, said in [(["class_0", "zebra"], "has no class 'zebra'"), (["class_1", "class_1"], "names a class twice")]:
        with pytest.raises(DataError, match=re.escape(said) + ".*choose among class_0, class_1"):
            only_classes(ds, keep)
    history = {"val_accuracies": [0.5, 0.6], "val_losses": [1.0, 0.9], "train_images": 100}
    figures.plot_overlaid({"a": history}, x="images")  # the good names still draw
    for call, said in [
        (lambda: figures.plot_curves(history, "acc"), "metric 'acc' is not one of loss, accuracy"),
        (lambda: figures.plot_overlaid({"a": history}, key="val_acc"), "no run records 'val_acc'; the runs' curves"),
        (lambda: figures.plot_overlaid({"a": history}, x="imgs"), "x 'imgs' is not one of epoch, images"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(said)) as caught:
            call()
        assert "\n" not in str(caught.value)
