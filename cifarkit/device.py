"""Device choice (auto: cuda, then mps, then cpu), CPU threads, seeding, environment facts, and what only a GPU
needs: timing without a host sync per interval, and a training step replayed as a CUDA graph."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from cifarkit.config import DEVICE_HELP
from cifarkit.errors import ConfigError, first_line


def mps_available() -> bool:
    """True when Apple's Metal backend is usable."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda[:N]`` / ``mps`` into a usable device, or fail clearly.

    ROCm builds of PyTorch expose AMD GPUs as ``cuda``, so one name covers both vendors.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; choose {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} requested but no CUDA/ROCm GPU is visible; use --device auto or cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} does not exist; {torch.cuda.device_count()} GPU(s) visible")
    elif device.type == "mps":
        if not mps_available():
            raise ConfigError("device mps requested but Apple MPS is not available; use --device auto or cpu")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device {name!r}; choose {DEVICE_HELP}")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bf16 (AVX512-BF16 or AMX), where bf16 autocast is a real speed-up."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """Turn ``auto`` into a concrete mode: bf16 on CPUs with native bf16, else off.

    Only there does bf16 autocast pay without asking: elsewhere on a CPU it is emulated and slower than fp32.
    GPUs keep fp32 unless asked (``fp16`` or ``bf16``), so results stay comparable across machines.
    """
    if amp != "auto":
        if amp == "fp16" and device.type == "cpu":
            raise ConfigError("amp=fp16 needs a GPU; on CPU use bf16 (if the CPU supports it), auto or off")
        return amp
    return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "off"


PRECISION_NAMES = {"off": "fp32", "bf16": "bf16", "fp16": "fp16"}  # a resolved amp mode, as sentences name it


def precision_name(amp: str, device: torch.device | None = None) -> str:
    """The precision an ``amp`` mode computes in, as the text names it: ``fp32``, ``bf16`` or ``fp16``
    (``auto`` is resolved for ``device`` first)."""
    if amp == "auto":
        amp = resolve_amp(amp, device or torch.device("cpu"))
    return PRECISION_NAMES[amp]


def resolve_channels_last(value: bool | None, device: torch.device) -> bool:
    """``None`` means auto: channels_last on CUDA/ROCm (tensor-core friendly), NCHW on CPU and MPS.

    Measured here on CPU for EX-1: channels_last was no faster in fp32 and slower under bf16.
    """
    return device.type == "cuda" if value is None else bool(value)


def resolve_cuda_graphs(
    value: bool | None, device: torch.device, amp: str, conflicts: dict[str, bool] | None = None
) -> bool:
    """Whether a run replays its training step as a CUDA graph (:class:`StepGraph`). ``None`` means auto: on
    for CUDA/ROCm unless fp16 (its grad scaler reads the host) or one of ``conflicts`` (name: whether it holds,
    e.g. ``{"--compile": True}``) is in the way; ``True`` where it cannot work is a one-line error."""
    why = [name for name, holds in {"fp16": amp == "fp16", **(conflicts or {})}.items() if holds]
    if device.type != "cuda":
        why.insert(0, f"a {device.type} device")
    if value is None:
        return not why
    if value and why:
        raise ConfigError(f"--cuda-graphs on needs a CUDA/ROCm device and none of: {', '.join(why)}; use auto or off")
    return bool(value)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one; torch's own count
    can undercount in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def configure_threads(processes: int = 1) -> int:
    """Use every core this process may run on (torch's default can undercount in containers), its
    share when ``processes`` train side by side on this machine (torchrun's ranks), or
    ``$CIFARKIT_THREADS`` of them (a sweep splits the cores between its processes)."""
    given = os.environ.get("CIFARKIT_THREADS", "")
    num_threads = int(given) if given.isdigit() else usable_cores() // max(1, processes)
    torch.set_num_threads(max(1, num_threads))
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(on: bool) -> None:
    """Make GPU training repeatable (``on``) or let cuDNN pick the fastest, possibly nondeterministic, kernels.

    CPU training here is deterministic either way. On CUDA, cuBLAS needs a fixed workspace (the
    variable must be set before its first use) and cuDNN must skip autotuning. Operations with no
    deterministic CUDA kernel warn instead of failing (``warn_only``), so a user's own model still
    trains; cifarkit's models avoid them (global pooling is a mean, not ``AdaptiveAvgPool2d``).
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on
    torch.use_deterministic_algorithms(on, warn_only=True)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest on GPUs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def accelerator_name(device: torch.device) -> str:
    """A human name for the device: GPU model, 'Apple MPS' or the CPU."""
    if device.type == "cuda":
        vendor = "ROCm" if getattr(torch.version, "hip", None) else "CUDA"
        return f"{torch.cuda.get_device_name(device)} ({vendor})"
    if device.type == "mps":
        return "Apple MPS"
    return cpu_model()


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo, or nothing where the system has none (macOS, Windows)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name where the OS tells it, else the architecture. On x86 Linux the CPU
    family and model numbers follow the name: a virtual machine's name ("AMD EPYC") alone does not
    tell a 2017 core from a 2023 one, and they train at very different speeds.

    Args:
        cpuinfo: the text of /proc/cpuinfo (read from the system when None).
    """
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:  # the first processor's lines
            fields[key.strip()] = value.strip()
    if "model name" not in fields:
        return platform.processor() or platform.machine()
    detail = [f"family {fields['cpu family']} model {fields['model']}"] if "cpu family" in fields else []
    return f"{fields['model name']} ({', '.join([*detail, f'{os.cpu_count()} cores'])})"


# x86 instruction sets that change what a CPU computes fast, from /proc/cpuinfo's flags, lowest first (VNNI: int8
# products summed without saturating, which decides how deploy-bench's int8 variant runs)
INSTRUCTION_SETS = (
    ("avx2", "AVX2"),
    ("avx_vnni", "AVX-VNNI"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_bf16", "AMX"),
)


def cpu_instruction_set(cpuinfo: str | None = None) -> str:
    """The vector instruction sets of this CPU that decide its speed and precision here, e.g. ``"AVX2,
    AVX-512, AVX512-BF16"``: bf16 autocast is native only with AVX512-BF16 or AMX. Other machines (Apple
    silicon, ARM) give their architecture.

    Args:
        cpuinfo: the text of /proc/cpuinfo (read from the system when None).
    """
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    line = next((v for k, _, v in (x.partition(":") for x in cpuinfo.splitlines()) if k.strip() == "flags"), "")
    flags = set(line.split())
    found = [name for flag, name in INSTRUCTION_SETS if flag in flags]
    return ", ".join(found) if found else platform.machine() or "unknown"


def git_commit() -> str | None:
    """The checkout's commit (with '+dirty' if it has changes), or None outside git."""

    def git(*args: str) -> str:
        root = Path(__file__).resolve().parent.parent
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True).stdout

    try:
        commit, dirty = git("rev-parse", "HEAD").strip(), git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def env_info(device: torch.device | None = None) -> dict:
    """Versions, device and accelerators: what env.json records and ``info`` prints."""
    device = device or resolve_device("auto")
    cuda_ok = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": package_version("torchvision"),
        "numpy": np.__version__,
        "cifarkit": package_version("cifarkit"),
        "device": str(device),
        "device_name": accelerator_name(device),
        "cuda_available": cuda_ok,
        "torch_cuda": torch.version.cuda,
        "torch_hip": getattr(torch.version, "hip", None),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda_ok else [],
        "mps_available": mps_available(),
        "cpu_count": os.cpu_count(),
        "cpu_instruction_set": cpu_instruction_set(),
        "torch_cpu_kernels": torch.backends.cpu.get_cpu_capability(),  # ATEN_CPU_CAPABILITY can hold them lower
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


class IntervalTimer:
    """Sums the time of many short intervals (e.g. producing each batch) without a host sync per interval.

    On CPU, wall-clock time is the truth. On CUDA/ROCm the host only queues kernels, so wall-clock
    time around ``next(loader)`` measures launching, and a later call that waits for the GPU takes the
    blame instead; CUDA events recorded on the stream measure when the GPU itself ran from ``start`` to
    ``stop``. They are read once, in :meth:`seconds` (one synchronisation, at the end of an epoch).
    MPS has no such events here, so there each interval is synchronised (honest, a little slower).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._wall = 0.0
        self._t0: float | None = None
        self._start_event: torch.cuda.Event | None = None

    def start(self) -> None:
        if self.device.type == "cuda":
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record()
            return
        if self.device.type == "mps":
            synchronize(self.device)
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """End the interval; returns its wall-clock seconds (0.0 on CUDA, where it is known only later)."""
        if self.device.type == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start_event, end))
            return 0.0
        if self.device.type == "mps":
            synchronize(self.device)
        elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
        self._wall += elapsed
        return elapsed

    def __enter__(self) -> IntervalTimer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def seconds(self) -> float:
        """Total seconds of all intervals so far (on CUDA: waits for the recorded events)."""
        if self._events:
            self._events[-1][1].synchronize()
            self._wall += sum(a.elapsed_time(b) for a, b in self._events) / 1000.0
            self._events.clear()
        return self._wall


Step = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


class StepGraph:
    """A training step's forward and backward, recorded once as a CUDA graph and replayed for every batch.

    On a GPU a small network waits on Python, not arithmetic: each of a step's few hundred kernels costs
    microseconds to launch. A CUDA graph records the launches once, and one ``replay()`` sends them all.
    A replay reads and writes the same memory every time, so:

    - each batch is first copied into the graph's own input tensors (``x``, ``y``);
    - ``step`` must accumulate into gradients that already exist (the caller zeroes them in place, never
      setting them to None), so they stay the tensors the optimizer reads;
    - what ``step`` returns is overwritten by the next replay: read it before the next call.

    The first ``warmup`` calls run eagerly on a side stream (cuDNN and cuBLAS choose and load their kernels
    there, as PyTorch's CUDA-graph notes ask); a batch of another shape runs eagerly; a capture that fails
    says why once and leaves every later step eager.
    """

    def __init__(self, step: Step, warmup: int = 3) -> None:
        self.step = step
        self.warmup = warmup
        self.calls = 0
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.out: tuple[torch.Tensor, ...] = ()
        self.replay: Callable[[], object] | None = None
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        if self.failed is not None:
            return self.step(x, y)
        if self.calls <= self.warmup:
            return self.eager(x, y)
        if self.replay is None:
            self.x, self.y = x.clone(), y.clone()
            try:
                self.replay = self.record()
            except RuntimeError as e:  # e.g. a model that reads a value back to the host mid-step
                self.failed = first_line(e)
                warnings.warn(f"CUDA graph capture failed ({self.failed}); training on without it", stacklevel=2)
                return self.step(x, y)
        if x.shape != self.x.shape or y.shape != self.y.shape:
            return self.step(x, y)
        self.x.copy_(x)
        self.y.copy_(y)
        self.replay()
        return self.out

    def eager(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``step`` as it is, on a side stream while warming up (CUDA only)."""
        if x.device.type != "cuda":
            return self.step(x, y)
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            out = self.step(x, y)
        torch.cuda.current_stream(x.device).wait_stream(side)
        return out

    def record(self) -> Callable[[], object]:
        """Capture ``step`` on ``x``, ``y`` (nothing runs yet) and return what replays it."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: the telemetry thread may read allocator and NVML figures while this thread records
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.out = self.step(self.x, self.y)
        return graph.replay
