"""Data-parallel training under ``torchrun``: who this process is, its share of the data, and the few
collectives ``fit`` needs.

``torchrun --nproc_per_node N -m cifarkit train ...`` starts N copies of ``train``; each reads its rank
from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), joins the process group (NCCL on CUDA/ROCm GPUs, gloo on CPUs), trains on its own
shard of the training images with its own augmentation draws, and PyTorch's
:class:`~torch.nn.parallel.DistributedDataParallel` averages the gradients. Rank 0 alone validates,
writes the run folder and decides when to stop; the others follow its decisions. Without those
variables everything here is a no-op and ``fit`` trains in one process as before.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cifarkit.data import Split
from cifarkit.device import resolve_device
from cifarkit.errors import ConfigError, RankLost, first_line
from cifarkit.train import EpochStats, SingleProcess

# what torchrun sets for every process it starts (and what `--nnodes` launches share)
RENDEZVOUS_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = (
    "launch with torchrun (e.g. torchrun --standalone --nproc_per_node 2 -m cifarkit train ...), which sets them"
)


@dataclass(frozen=True)
class Dist(SingleProcess):
    """This process's place in a data-parallel run (the collectives of :class:`cifarkit.train.SingleProcess`
    across torchrun's processes); ``Dist()`` is the ordinary single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    device: torch.device | None = None  # the device this rank trains on (None: the config's own choice)

    def describe(self) -> dict[str, Any]:
        """What config.json and env.json record about the launch."""
        return {"world_size": self.world_size, "backend": self.backend}

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a path, an epoch's row, a decision)."""
        if not self.enabled:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the ranks of a few numbers (loss sums, counts)."""
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def max(self, value: float) -> float:
        """The largest ``value`` over the ranks (the slowest rank's epoch time)."""
        return self._all_reduce([value], dist.ReduceOp.MAX)[0]

    def _all_reduce(self, values: list[float], op: Any) -> list[float]:
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t, op=op)
        return t.tolist()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, split: Split) -> Split:
        """This rank's share of ``split`` (see :func:`shard`)."""
        return shard(split, self.rank, self.world_size)

    def batch_size(self, global_batch: int) -> int:
        """This rank's batch (see :func:`per_rank_batch`)."""
        return per_rank_batch(global_batch, self.world_size)

    def reduce_epoch(self, stats: EpochStats) -> EpochStats:
        """One epoch's statistics over every rank: loss and accuracy over all their images, the slowest
        rank's time (the step waits for it), so ``images_per_s`` is the whole group's throughput."""
        if not self.enabled:
            return stats
        loss_sum, correct, images = self.sum([stats.loss * stats.images, stats.accuracy * stats.images, stats.images])
        n = max(images, 1)
        return EpochStats(loss_sum / n, correct / n, int(images), self.max(stats.seconds), self.max(stats.data_seconds))

    def prepare_model(self, model: nn.Module, on: bool) -> nn.Module:
        """``model`` with every BatchNorm synchronised over the ranks (statistics of the global batch) when
        ``on`` and distributed; unchanged otherwise. SyncBatchNorm needs GPUs: on CPU processes it is refused."""
        if not (on and self.enabled):
            return model
        if self.backend != "nccl":
            raise ConfigError(
                "--sync-bn needs GPUs (NCCL): PyTorch's SyncBatchNorm does not run on CPU processes; "
                "drop --sync-bn (each process then normalises over its own share of the batch)"
            )
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module for training steps: DistributedDataParallel around ``model`` (every rank starts from
        rank 0's parameters; gradients are averaged in backward), or ``model`` itself when alone. ``model``
        is left as it is, so validation and checkpoints use it without any collective."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def launch_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int, int, int] | None:
    """(rank, world_size, local_rank, local_world_size) from torchrun's variables, None when not launched
    by torchrun (or launched with one process); one-line errors when they are incomplete or malformed."""
    env = os.environ if environ is None else environ
    present = [v for v in RENDEZVOUS_VARS if env.get(v)]
    if not present:
        return None
    missing = [v for v in RENDEZVOUS_VARS if not env.get(v)]
    if missing:
        raise ConfigError(
            f"{', '.join(present)} set but {', '.join(missing)} not: a distributed run needs all of "
            f"{', '.join(RENDEZVOUS_VARS)}; {LAUNCH_HINT}"
        )
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    try:
        rank, world, local_rank, local_world = (int(env.get(n, env["WORLD_SIZE"])) for n in names)
    except ValueError:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers; {LAUNCH_HINT}") from None
    if not (world >= 1 and 0 <= rank < world and 0 <= local_rank < local_world):
        raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world} (LOCAL_RANK={local_rank}); {LAUNCH_HINT}")
    port = env["MASTER_PORT"]
    if not (port.isdigit() and 0 < int(port) < 65536):  # 99999 ended in a traceback from the store
        raise ConfigError(
            f"MASTER_PORT={port!r} is not a port: use a number from 1 to 65535, e.g. 29500; {LAUNCH_HINT}"
        )
    return (rank, world, local_rank, local_world) if world > 1 else None


def check_address(addr: str, port: int, rank: int) -> None:
    """A one-line :class:`RankLost` at once when ``MASTER_ADDR`` does not resolve, on every rank: rank 0 used to
    wait the whole rendezvous timeout for a store it could never serve, then print pages of c10d's logs."""
    try:
        socket.getaddrinfo(addr, port)
    except (socket.gaierror, UnicodeError):
        raise RankLost(f"rank {rank}: MASTER_ADDR={addr} does not resolve to an address; check MASTER_ADDR") from None


RENDEZVOUS_TIMEOUT_VAR = "CIFARKIT_RENDEZVOUS_TIMEOUT"


def rendezvous_timeout(env: Mapping[str, str]) -> float:
    """Seconds a rank waits for the others to join (``CIFARKIT_RENDEZVOUS_TIMEOUT``, default 300)."""
    text = env.get(RENDEZVOUS_TIMEOUT_VAR, "300")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 86400:
        raise ConfigError(f"{RENDEZVOUS_TIMEOUT_VAR}={text!r} is invalid: use a number of seconds, e.g. 300")
    return seconds


def wait_for_rank0(addr: str, port: int, seconds: float, rank: int) -> None:
    """Return once rank 0's rendezvous port at ``addr:port`` accepts connections; a one-line
    :class:`RankLost` when the address does not resolve or nothing answers within ``seconds``."""
    check_address(addr, port, rank)
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((addr, port), timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RankLost(
                    f"rank {rank}: nothing answered at MASTER_ADDR={addr} MASTER_PORT={port} within {seconds:g} s; "
                    f"check MASTER_ADDR and MASTER_PORT and that rank 0 started ({RENDEZVOUS_TIMEOUT_VAR} sets the wait)"
                ) from None
            time.sleep(0.5)


def setup(device_name: str = "auto", environ: Mapping[str, str] | None = None) -> Dist:
    """Join the process group torchrun prepared (NCCL for GPUs, gloo for CPUs) and pick this rank's device.

    Without torchrun's variables this returns ``Dist()`` and touches nothing.
    """
    env = os.environ if environ is None else environ
    launch = launch_from_env(env)
    if launch is None:
        return Dist()
    rank, world, local_rank, local_world = launch
    device = resolve_device(device_name)
    if device.type == "mps":
        raise ConfigError(
            "distributed training runs on CUDA/ROCm GPUs (NCCL) or CPUs (gloo), not MPS; pass --device cpu"
        )
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if device.index is not None:
            raise ConfigError(
                f"--device {device} pins one GPU; under torchrun pass --device cuda and each rank takes its own"
            )
        if local_rank >= count:
            raise ConfigError(
                f"{local_world} processes on this machine but {count} GPU(s) visible; "
                f"use --nproc_per_node {count} (one process per GPU)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        wait = rendezvous_timeout(env)
        check_address(env["MASTER_ADDR"], int(env["MASTER_PORT"]), rank)
        if rank != 0:  # in Python first: torch's own retries end in pages of C++ log lines
            wait_for_rank0(env["MASTER_ADDR"], int(env["MASTER_PORT"]), wait, rank)
        try:  # the store first, with its own timeout: a rank whose peers never come must not wait forever
            store = dist.TCPStore(
                env["MASTER_ADDR"], int(env["MASTER_PORT"]), world, rank == 0, timedelta(seconds=wait)
            )
            dist.init_process_group(backend, store=store, rank=rank, world_size=world)
        except (RuntimeError, ValueError, OSError) as exc:
            raise RankLost(
                f"rank {rank} could not join the process group at MASTER_ADDR={env['MASTER_ADDR']} "
                f"MASTER_PORT={env['MASTER_PORT']} within {wait:g} s ({first_line(exc, limit=120)}); check "
                f"MASTER_ADDR and MASTER_PORT and that rank 0 and every node started ({RENDEZVOUS_TIMEOUT_VAR} sets the wait)"
            ) from None
    return Dist(rank, world, local_rank, local_world, backend, device)


def teardown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(device_name: str = "auto") -> Iterator[Dist]:
    """``with session(args.device) as d:`` joins the group (when under torchrun) and always leaves it.

    Inside, a peer that vanishes during a collective (those of :class:`Dist` and DDP's gradient exchange)
    and torchrun's SIGTERM (sent to the survivors when one rank fails) both end this rank with one
    :class:`RankLost` line; checkpoints are written atomically, so what stays on disk is the last
    completed epoch's.
    """
    d = setup(device_name)
    previous = signal.getsignal(signal.SIGTERM)
    if d.enabled:
        signal.signal(signal.SIGTERM, _stopped_by_launcher)
    try:
        with lost_rank_errors(d):
            yield d
    finally:
        if d.enabled:
            signal.signal(signal.SIGTERM, previous)
        teardown()


def _stopped_by_launcher(signum: int, frame: Any) -> None:
    raise RankLost(
        "stopped: the launcher ended this process (another rank failed; see its error); "
        "best.pt and last.pt hold the last completed epoch"
    )


# how the backends' errors read when a peer is gone (gloo raises a plain RuntimeError from backward)
PEER_LOST_MARKERS = ("gloo", "nccl", "connection reset by peer", "connection closed by peer", "broken pipe")


@contextlib.contextmanager
def lost_rank_errors(d: Dist) -> Iterator[None]:
    """Turn the backend's error when a peer vanished mid-collective into one :class:`RankLost` line."""
    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        text = str(exc)
        if not d.enabled or not (isinstance(exc, dist.DistError) or any(m in text.lower() for m in PEER_LOST_MARKERS)):
            raise
        reason = re.sub(r"^\[[^\]]*\]\s*", "", text.splitlines()[0]).split(". ")[0] if text else type(exc).__name__
        raise RankLost(
            f"lost contact with the other processes ({reason[:160]}); another "
            "rank failed or was stopped (see its error); best.pt and last.pt hold the last completed epoch"
        ) from None


def shard(split: Split, rank: int, world_size: int) -> Split:
    """Rank ``rank``'s share of ``split``: every ``world_size``-th image from position ``rank``, all shares
    the same length (the last ``len % world_size`` images are left out) so that every rank takes the same
    number of steps. A class-sorted split still gives each rank every class."""
    if world_size == 1:
        return split
    per_rank = len(split) // world_size
    index = torch.arange(rank, per_rank * world_size, world_size)
    return split.subset(index)


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """The batch each rank draws so that the ranks together take ``batch_size`` (the global batch) per step."""
    if batch_size % world_size:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch and must split evenly over {world_size} processes; "
            f"use a multiple of {world_size}"
        )
    return batch_size // world_size
