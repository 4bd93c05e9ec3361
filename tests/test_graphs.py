"""The training step as a CUDA graph (cifarkit.device.StepGraph), checked on the CPU: when it is on, and that
a replayed step trains exactly as the eager one does. A CPU has no CUDA graphs, so here the "graph" is the step
run again on the graph's own input tensors, its outputs overwritten in place: what a replay does to memory.
tests/test_gpu.py replays real CUDA graphs."""

from __future__ import annotations

import pytest
import torch

from cifarkit.config import TrainConfig
from cifarkit.device import StepGraph, resolve_cuda_graphs
from cifarkit.errors import ConfigError
from cifarkit.loader import DeviceLoader
from cifarkit.runs import read_json
from cifarkit.train import fit, forward_backward, prepare, train_one_epoch

FAST = dict(model="ex1", dataset="synthetic", batch_size=32, lr=3e-3, val_fraction=0.2, device="cpu")


class ReplayedOnCpu(StepGraph):
    """A StepGraph whose recording is the step itself, run on ``self.x, self.y`` at each replay with its results
    copied into the same output tensors: inputs not copied in, or outputs read after the next replay, show."""

    def __init__(self, step, warmup: int = 3, fail: str | None = None) -> None:
        super().__init__(step, warmup)
        self.records, self.replays, self.fail = 0, 0, fail

    def record(self):
        self.records += 1
        if self.fail:
            raise RuntimeError(self.fail)
        self.out = ()

        def replay() -> None:
            new = self.step(self.x, self.y)
            if not self.out:
                self.out = tuple(t.detach().clone() for t in new)
            for mine, fresh in zip(self.out, new, strict=True):
                mine.copy_(fresh)
            self.replays += 1

        return replay


def one_epoch(graph_class=None, amp: str = "off", **graph_kwargs):
    """A fresh EX-1 (same seed, same data order) trained for one epoch in precision ``amp``, with ``graph_class``
    replaying its step. Both paths get the run's resolved precision: the eager step's own default is fp32."""
    run = prepare(TrainConfig(**FAST, amp=amp, scheduler="onecycle", augment="crop+flip+cutout"))
    graph = None
    if graph_class is not None:
        graph = graph_class(
            lambda x, y: forward_backward(run.model, x, y, run.criterion, run.device, run.amp, cache=False),
            **graph_kwargs,
        )
    stats = train_one_epoch(
        run.model, run.train_loader, run.optimizer, run.criterion, run.device, run.scheduler, amp=run.amp, graph=graph
    )
    return run, stats, graph


def assert_same_training(a, b):
    (run_a, stats_a, _), (run_b, stats_b, _) = a, b
    assert (stats_a.loss, stats_a.accuracy, stats_a.images) == (stats_b.loss, stats_b.accuracy, stats_b.images)
    state_a, state_b = run_a.model.state_dict(), run_b.model.state_dict()
    for name in state_a:  # weights and batch-norm statistics, bit for bit
        assert torch.equal(state_a[name], state_b[name]), name


@pytest.mark.parametrize("amp", ["off", "bf16"])  # bf16 autocast is native on AVX512-BF16/AMX, emulated elsewhere
def test_a_replayed_step_trains_bit_for_bit_like_the_eager_one(amp):
    eager = one_epoch(amp=amp)
    graphed = one_epoch(ReplayedOnCpu, amp=amp)
    assert graphed[0].amp == amp
    steps = len(graphed[0].train_loader)
    assert steps > 5
    graph = graphed[2]
    assert (graph.records, graph.replays) == (1, steps - 3)  # three eager warm-up steps, one capture, the rest replayed
    assert_same_training(eager, graphed)


def test_a_failed_capture_warns_once_and_trains_on_eagerly():
    eager = one_epoch()
    with pytest.warns(UserWarning, match="CUDA graph capture failed .operation not permitted"):
        failed = one_epoch(ReplayedOnCpu, fail="operation not permitted when stream is capturing\nmore detail")
    graph = failed[2]
    assert graph.records == 1 and graph.replays == 0 and graph.failed.startswith("operation not permitted")
    assert_same_training(eager, failed)


def test_a_batch_of_another_shape_runs_eagerly():
    run = prepare(TrainConfig(**FAST))
    graph = ReplayedOnCpu(lambda x, y: forward_backward(run.model, x, y, run.criterion, run.device), warmup=1)
    size = next(b for b in (7, 9, 11) if len(run.val) % b)
    batches = list(DeviceLoader(run.val, size, run.normalizer))  # the validation split: a short last batch
    assert batches[-1][1].shape[0] < size
    for x, y in batches[:3]:
        graph(x, y)
    assert (graph.records, graph.replays) == (1, 2)
    x, y = batches[-1]
    loss, logits = graph(x, y)
    assert logits.shape[0] == y.shape[0] and graph.replays == 2 and torch.isfinite(loss)


@pytest.mark.parametrize(
    "value,device,amp,conflicts,expected",
    [
        (None, "cuda", "off", {}, True),
        (None, "cuda", "off", {"--compile": True}, False),
        (None, "cuda", "bf16", {"--compile": False}, True),
        (None, "cuda", "fp16", {}, False),
        (None, "cpu", "off", {}, False),
        (None, "mps", "off", {}, False),
        (False, "cuda", "off", {}, False),
        (True, "cuda", "bf16", {}, True),
    ],
)
def test_when_cuda_graphs_are_on(value, device, amp, conflicts, expected):
    assert resolve_cuda_graphs(value, torch.device(device), amp, conflicts) is expected


@pytest.mark.parametrize(
    "device,amp,conflicts,needles",
    [("cpu", "off", {}, ("a cpu device",)), ("cuda", "fp16", {"torchrun": True}, ("fp16", "torchrun"))],
)
def test_cuda_graphs_on_where_they_cannot_work_is_one_line(device, amp, conflicts, needles):
    with pytest.raises(ConfigError, match="--cuda-graphs on needs a CUDA/ROCm device") as e:
        resolve_cuda_graphs(True, torch.device(device), amp, conflicts)
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value)


def test_a_cpu_run_records_that_it_trained_without_graphs(tmp_path):
    run = fit(TrainConfig(**FAST, epochs=1), out=tmp_path, log=lambda s: None)
    assert read_json(run / "config.json")["resolved"]["cuda_graphs"] is False


def test_cli_refuses_cuda_graphs_on_a_cpu_before_any_folder(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "synthetic", "--device", "cpu", "--cuda-graphs", "on", "--out", tmp_path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "--cuda-graphs on needs a CUDA/ROCm device" in err and not list(tmp_path.iterdir())
