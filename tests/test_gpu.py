"""What only a GPU shows: training, AMP, evaluation, predict, NVML telemetry, exact resume and honest
data-wait timing on CUDA (ROCm builds count as CUDA). Every test here is skipped on a machine without one."""

from __future__ import annotations

import json
import time

import pytest
import torch

from cifarkit.config import TrainConfig
from cifarkit.device import IntervalTimer
from cifarkit.predict import Predictor, predict
from cifarkit.report.figures import run_callbacks
from cifarkit.runs import read_json
from cifarkit.train import fit

from .test_distributed import metrics, only_run, train
from .test_train import assert_resume_matches_uninterrupted

pytestmark = pytest.mark.gpu

FAST = dict(model="ex1", dataset="synthetic", batch_size=64, lr=3e-3, val_fraction=0.2, device="cuda")


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    return fit(
        TrainConfig(**FAST, epochs=3, amp="bf16", telemetry=True, telemetry_interval=0.05),
        out=out,
        log=lambda s: None,
        callbacks=run_callbacks(),
    )


def test_training_and_evaluation_on_cuda_with_bf16(cuda_run):
    cfg = read_json(cuda_run / "config.json")
    assert cfg["resolved"]["device"].startswith("cuda") and cfg["resolved"]["amp"] == "bf16"
    assert cfg["resolved"]["channels_last"] is True and cfg["resolved"]["cuda_graphs"] is True
    train, test = read_json(cuda_run / "train.json"), read_json(cuda_run / "test.json")
    assert train["best_val_accuracy"] > 0.3 and test["accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert 0 <= train["data_wait_fraction"] < 0.9


def test_nvml_fields_in_the_telemetry(cuda_run):
    if getattr(torch.version, "hip", None):  # nvidia-ml-py imports on ROCm too, so importorskip never skipped there
        pytest.skip("NVML telemetry is NVIDIA's; ROCm machines record amdsmi or rocm-smi instead")
    lines = [json.loads(x) for x in (cuda_run / "perf" / "train_epoch.jsonl").read_text().splitlines()]
    samples = [r for r in lines if r["phase"] == "sample"]
    assert samples and "nvml" in samples[-1]["backend"]
    assert any("gpu_busy_percent" in r for r in samples) and any("vram_used_mb" in r for r in samples)
    assert any("torch_mem_alloc_mb" in r for r in samples)


def test_predict_on_cuda_matches_cpu(cuda_run):
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    on_gpu = predict(Predictor.from_checkpoint(cuda_run / "best.pt", "cuda"), list(images), topk=1)
    on_cpu = predict(Predictor.from_checkpoint(cuda_run / "best.pt", "cpu"), list(images), topk=1)
    assert len(on_gpu) == 4 and on_gpu["error"].isna().all()
    assert list(on_gpu["class"]) == list(on_cpu["class"])
    assert on_gpu["prob"].to_numpy() == pytest.approx(on_cpu["prob"].to_numpy(), abs=1e-3)


def test_a_cuda_graph_step_trains_exactly_like_the_eager_one():
    """An epoch of smallcifarnet (batch norm, dropout, one-cycle) with its step replayed as a CUDA graph ends with
    the weights of the eager epoch, bit for bit: what exact resume needs, since a resumed run replays its first
    steps eagerly (the graph's warm-up) where the uninterrupted run replayed them."""
    from cifarkit.train import prepare, train_one_epoch

    def one_epoch(graphs: bool):
        run = prepare(TrainConfig(**{**FAST, "model": "smallcifarnet"}, scheduler="onecycle", cuda_graphs=graphs))
        assert (run.graph is not None) is graphs
        stats = train_one_epoch(
            run.model, run.train_loader, run.optimizer, run.criterion, run.device, run.scheduler, graph=run.graph
        )
        return run, stats

    (eager, eager_stats), (graphed, graphed_stats) = one_epoch(False), one_epoch(True)
    assert graphed.graph.failed is None and graphed.graph.replay is not None
    assert (graphed_stats.loss, graphed_stats.accuracy) == (eager_stats.loss, eager_stats.accuracy)
    mine, theirs = graphed.model.state_dict(), eager.model.state_dict()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), (name, float((mine[name] - theirs[name]).abs().max()))


def test_exact_resume_on_cuda(tmp_path):
    assert_resume_matches_uninterrupted(tmp_path, device="cuda", model="smallcifarnet", model_kwargs={})


def test_fp16_trains_with_a_grad_scaler_whose_state_last_pt_keeps(tmp_path):
    """fp16 autocast needs a GradScaler (small gradients underflow in fp16); its scale is part of the training
    state, so last.pt holds it and a resume continues exactly as an uninterrupted run."""
    from cifarkit.runs import load_checkpoint

    run = fit(TrainConfig(**FAST, epochs=2, amp="fp16"), out=tmp_path / "one", log=lambda s: None)
    resolved = read_json(run / "config.json")["resolved"]
    assert resolved["amp"] == "fp16" and resolved["cuda_graphs"] is False  # the scaler's inf check reads the host
    assert read_json(run / "test.json")["precision"] == "fp16"
    scaler = load_checkpoint(run / "last.pt", "last.pt")["training"]["scaler"]
    assert scaler is not None and scaler["scale"] > 0 and "_growth_tracker" in scaler
    assert_resume_matches_uninterrupted(tmp_path / "resume", device="cuda", amp="fp16")


CUDA_OUT_OF_MEMORY = """
import sys, torch
from cifarkit.cli import main
torch.cuda.set_per_process_memory_fraction(0.01)  # about 1 GB of a big card: what a laptop GPU leaves free
sys.exit(main(sys.argv[1:]))
"""


def test_cuda_out_of_memory_is_one_line(tmp_path):
    """torch's own OutOfMemoryError, raised by its caching allocator at a real limit, is one line saying what to
    lower, with exit 1."""
    import subprocess
    import sys

    from .test_faults import one_line

    data = "synthetic:classes=3,train=600,test=5"
    args = ["train", "--dataset", data, "--model", "ex2", "--image-size", "1024", "--batch-size", "256"]
    args += ["--epochs", "1", "--device", "cuda", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", CUDA_OUT_OF_MEMORY, *args], capture_output=True, text=True, timeout=300
    )
    one_line(done.returncode, done.stderr, 1, "out of memory (it tried to allocate", "lower --batch-size")


def test_interval_timer_counts_gpu_time_not_launch_time():
    a = torch.randn(4096, 4096, device="cuda")
    a @ a  # warm up cuBLAS
    torch.cuda.synchronize()
    timer = IntervalTimer(torch.device("cuda"))
    t0 = time.perf_counter()
    timer.start()
    for _ in range(20):
        a = (a @ a).div_(4096**0.5)
    timer.stop()
    launched = time.perf_counter() - t0
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    measured = timer.seconds()
    assert measured == pytest.approx(wall, rel=0.5) and measured > launched


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data parallelism needs 2 GPUs (one process each)")
def test_two_gpus_with_nccl_and_sync_bn(tmp_path):
    argv = ["--dataset", "synthetic", "--model", "smallcifarnet", "--epochs", "2", "--batch-size", "64"]
    result = train([*argv, "--device", "cuda", "--sync-bn"], tmp_path, processes=2)
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path)
    resolved = read_json(run / "config.json")["resolved"]
    assert resolved["backend"] == "nccl" and resolved["world_size"] == 2 and resolved["device"] == "cuda:0"
    assert [r["epoch"] for r in metrics(run)] == [1, 2] and metrics(run)[-1]["val_accuracy"] > 0.3
