"""Data-parallel training under torchrun: launch checks, shards, and real 2-process gloo runs on the CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from cifarkit.data import make_synthetic
from cifarkit.errors import ConfigError, rank_tag
from cifarkit.resume import check_resume
from cifarkit.runs import load_checkpoint, read_json
from cifarkit.tools.distributed import Dist, launch_from_env, per_rank_batch, shard

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
FULL_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
# 50 classes of learnable synthetic images: hard enough that accuracy is not 1.0 after the run
EQUIVALENCE = [
    "--dataset", "synthetic:classes=50,size=16,train=40,test=10", "--model", "ex1", "--epochs", "6",
    "--batch-size", "64", "--scheduler", "onecycle", "--lr", "0.003", "--device", "cpu", "--seed", "0",
]  # fmt: skip
# Same global batch and seed, but 2 processes draw other batches (each its own shard and order), other
# augmentation and batch-norm statistics over 32 images instead of 64: the runs differ by noise, not bias.
# Measured: 0.965 (1 process) vs 0.970 (2) for seed 0, 0.995 vs 0.990 for seed 1; seeds alone moved it 0.03.
TOLERANCE = 0.05


def cifarkit_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in FULL_ENV and k != "LOCAL_WORLD_SIZE"}
    return {**env, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def train(argv: list[str], out: Path, processes: int = 1, **kwargs) -> subprocess.CompletedProcess:
    launcher = TORCHRUN if processes == 2 else [sys.executable]
    cmd = [*launcher, "-m", "cifarkit", "train", *argv, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, env=cifarkit_env(), timeout=300, **kwargs)


def only_run(out: Path) -> Path:
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- launch and shards


def test_without_torchrun_variables_it_is_one_process():
    assert launch_from_env({}) is None
    assert launch_from_env({**FULL_ENV, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}) is None
    assert launch_from_env({**FULL_ENV, "LOCAL_WORLD_SIZE": "2"}) == (1, 2, 1, 2)
    assert Dist().is_main and not Dist().enabled and Dist().broadcast("x") == "x" and Dist().gather(1) == [1]


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not"),
        ({**FULL_ENV, "MASTER_PORT": ""}, "MASTER_PORT not"),
        ({**FULL_ENV, "RANK": "one"}, "must be integers"),
        ({**FULL_ENV, "RANK": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
        ({**FULL_ENV, "MASTER_PORT": "99999"}, "MASTER_PORT='99999' is not a port"),  # was a traceback
        ({**FULL_ENV, "MASTER_PORT": "http"}, "MASTER_PORT='http' is not a port"),
    ],
)
def test_incomplete_rendezvous_variables_are_named(env, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        launch_from_env(env)
    assert "torchrun" in str(err.value) and "\n" not in str(err.value)


def test_rank_tag_names_the_rank_only_when_there_are_several():
    assert rank_tag({"RANK": "1", "WORLD_SIZE": "2"}) == " (rank 1 of 2)"
    assert rank_tag({"RANK": "0", "WORLD_SIZE": "1"}) == "" and rank_tag({}) == ""


def test_shards_are_equal_disjoint_and_hold_every_class():
    split = make_synthetic(num_classes=5, size=8, train_per_class=7, test_per_class=1).train  # 35 images
    ids = torch.arange(len(split))
    split.labels = split.labels * 1000 + ids  # make each image recognisable by its label
    shards = [shard(split, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [11, 11, 11]  # 35 // 3 each; 2 left out so every rank steps alike
    seen = torch.cat([s.labels % 1000 for s in shards])
    assert len(set(seen.tolist())) == 33 and set(seen.tolist()) <= set(range(33))
    assert all(len(set((s.labels // 1000).tolist())) == 5 for s in shards)
    assert shard(split, 0, 1) is split


def test_the_global_batch_splits_evenly_or_is_refused():
    assert per_rank_batch(128, 2) == 64 and per_rank_batch(7, 1) == 7
    with pytest.raises(ConfigError, match="--batch-size 130 is the global batch.*multiple of 4"):
        per_rank_batch(130, 4)


def test_sync_bn_is_refused_on_cpu_processes_and_ignored_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert Dist().prepare_model(model, True) is model
    with pytest.raises(ConfigError, match="--sync-bn needs GPUs"):
        Dist(rank=0, world_size=2, backend="gloo").prepare_model(model, True)


@pytest.mark.parametrize("saved,now,needle", [(2, 1, "torchrun --nproc_per_node 2"), (1, 2, "one process")])
def test_resume_with_another_world_size_is_refused(saved, now, needle):
    state = {"config": {"epochs": 3, "scheduler": "none", "patience": 0}, "epoch": 1}
    state["training"] = {"world_size": saved, "stale": 0}
    with pytest.raises(ConfigError, match=f"trained by {saved} process.*this launch has {now}.*{needle}"):
        check_resume(state, 3, "run/last.pt", world_size=now)
    check_resume(state, 3, "run/last.pt", world_size=saved)  # the same world size resumes


# ----------------------------------------------------------------------------- real runs (gloo, 2 CPU processes)


def test_two_processes_match_one_and_only_rank_0_writes(tmp_path):
    one = train(EQUIVALENCE, tmp_path / "one")
    two = train([*EQUIVALENCE, "--telemetry", "--telemetry-interval", "0.1"], tmp_path / "two", processes=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    run1, run2 = only_run(tmp_path / "one"), only_run(tmp_path / "two")
    lines = two.stdout.strip().splitlines()  # rank 0 alone prints: each epoch once, then the folder
    assert [line[:11] for line in lines[:-1]] == [f"epoch   {e}/6" for e in range(1, 7)] and lines[-1] == str(run2)
    rows1, rows2 = metrics(run1), metrics(run2)
    assert [r["epoch"] for r in rows2] == [1, 2, 3, 4, 5, 6]  # one line per epoch, not one per rank
    assert abs(rows1[-1]["val_accuracy"] - rows2[-1]["val_accuracy"]) <= TOLERANCE
    assert rows2[-1]["val_accuracy"] > 0.5 and rows2[-1]["train_loss"] < rows2[0]["train_loss"]
    config = read_json(run2 / "config.json")
    assert config["batch_size"] == 64 and config["resolved"]["world_size"] == 2
    assert config["resolved"]["backend"] == "gloo"
    env = read_json(run2 / "env.json")
    assert env["train_images"] == 1800 and env["world_size"] == 2  # 2,000 - 10% validation, both shards
    assert (run2 / "perf" / "train_epoch.jsonl").is_file() and (run2 / "perf" / "val_epoch.jsonl").is_file()
    assert (run2 / "perf" / "rank1" / "train_epoch.jsonl").is_file()  # every rank's telemetry, its own file
    assert not (run2 / "perf" / "rank1" / "val_epoch.jsonl").exists()  # only rank 0 validates
    last = load_checkpoint(run2 / "last.pt", wanted="last.pt")["training"]
    assert last["world_size"] == 2 and len(last["ranks"]) == 2
    assert not torch.equal(last["ranks"][0]["loader"]["generator"], last["ranks"][1]["loader"]["generator"])
    assert read_json(run2 / "test.json")["accuracy"] > 0.5


def test_resume_under_torchrun_continues_with_each_ranks_own_stream(tmp_path):
    argv = ["--dataset", "synthetic:classes=4,size=16,train=32,test=8", "--model", "ex1", "--epochs", "2"]
    argv += ["--batch-size", "16", "--device", "cpu"]
    first = train(argv, tmp_path, processes=2)
    assert first.returncode == 0, first.stderr
    run = only_run(tmp_path)
    more = train(["--resume", str(run / "last.pt"), "--epochs", "3"], tmp_path, processes=2)
    assert more.returncode == 0, more.stderr
    assert [r["epoch"] for r in metrics(run)] == [1, 2, 3]
    assert load_checkpoint(run / "last.pt", wanted="last.pt")["epoch"] == 3
    alone = train(["--resume", str(run / "last.pt"), "--epochs", "4"], tmp_path)
    assert alone.returncode == 2 and "Traceback" not in alone.stderr
    assert alone.stderr.count("\n") == 1 and "trained by 2 process(es) and this launch has 1" in alone.stderr


def test_a_resumed_launch_joins_on_the_runs_own_device(tmp_path, monkeypatch):
    # On a GPU machine `--resume` alone (device auto) made both ranks of a CPU run pick the one GPU;
    # the launch must use the device the run was trained on, as fit does for the rest of its config.
    from cifarkit.cli import main
    from cifarkit.tools import distributed

    argv = ["train", "--dataset", "synthetic:classes=4,size=16,train=32,test=8", "--model", "ex1"]
    assert main([*argv, "--epochs", "2", "--device", "cpu", "--out", str(tmp_path)]) == 0
    last = only_run(tmp_path) / "last.pt"
    joined = []

    class Joined(Exception):
        pass

    def session(device_name: str = "auto"):
        joined.append(device_name)
        raise Joined

    monkeypatch.setattr(distributed, "session", session)
    with pytest.raises(Joined):
        main(["train", "--resume", str(last)])
    assert joined == ["cpu"]


def test_two_nodes_meet_through_c10d_rendezvous(tmp_path):
    # two torchrun agents, as on two machines (here both on localhost), one process each
    # the port stays held (bound, never listening, SO_REUSEADDR) until both agents have finished: the rendezvous
    # store may bind it beside this socket, and no other process can take it in between
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    agent = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    agent += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test"]
    argv = ["--dataset", "synthetic:classes=4,size=16,train=32,test=8", "--model", "ex1", "--epochs", "1"]
    argv += ["--batch-size", "16", "--device", "cpu", "--out", str(tmp_path)]
    nodes = [
        subprocess.Popen(
            [*agent, "--node-rank", str(i), "-m", "cifarkit", "train", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cifarkit_env(),
        )
        for i in range(2)
    ]
    try:
        outputs = [node.communicate(timeout=180) for node in nodes]
    finally:
        held.close()
    assert [node.returncode for node in nodes] == [0, 0], outputs
    run = only_run(tmp_path)
    assert read_json(run / "config.json")["resolved"]["world_size"] == 2 and [r["epoch"] for r in metrics(run)] == [1]
    assert sum(out.strip().endswith(str(run)) for out, _ in outputs) == 1  # only the rank-0 node prints


def test_missing_rendezvous_variables_fail_in_one_line(tmp_path):
    cmd = [sys.executable, "-m", "cifarkit", "train", "--dataset", "synthetic", "--out", str(tmp_path)]
    env = {**cifarkit_env(), "WORLD_SIZE": "2"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "WORLD_SIZE set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not" in result.stderr
    assert not any(tmp_path.iterdir())  # nothing started


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds rank 1 through /proc (Linux)")
def test_a_dead_rank_stops_the_others_and_leaves_whole_checkpoints(tmp_path):
    argv = ["--dataset", "synthetic:classes=4,size=32,train=400,test=8", "--model", "ex1", "--epochs", "200"]
    argv += ["--batch-size", "32", "--device", "cpu"]
    cmd = [*TORCHRUN, "-m", "cifarkit", "train", *argv, "--out", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cifarkit_env())
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(tmp_path.glob("*/last.pt")):
            time.sleep(0.5)
        assert list(tmp_path.glob("*/last.pt")), "the run never finished an epoch"
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    rank0 = [line for line in err.splitlines() if line.startswith("cifarkit train (rank 0 of 2)")]
    assert len(rank0) == 1, err
    assert "lost contact with the other processes" in rank0[0] or "the launcher ended this process" in rank0[0]
    assert "[rank0]: Traceback" not in err
    run = only_run(tmp_path)
    assert load_checkpoint(run / "best.pt")["epoch"] >= 1  # whole files only: written atomically
    assert load_checkpoint(run / "last.pt", wanted="last.pt")["epoch"] >= 1
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".")]


def rank_pid(launcher: int, rank: int) -> int:
    """The pid of the torchrun worker with RANK=``rank`` under ``launcher``."""
    for pid in Path("/proc").iterdir():
        if not pid.name.isdigit():
            continue
        try:
            environ = (pid / "environ").read_bytes().split(b"\0")
            parent = int((pid / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == launcher and f"RANK={rank}".encode() in environ:
            return int(pid.name)
    raise AssertionError(f"no worker with RANK={rank} under pid {launcher}")
