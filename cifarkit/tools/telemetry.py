"""Hardware telemetry while training: a sampler thread writing one JSONL schema for every backend.

Backends (each optional, chosen automatically): NVML for NVIDIA, the ``amdsmi`` library or the
``rocm-smi`` / ``amd-smi`` CLIs for AMD, torch's allocator (CUDA/ROCm/MPS) and psutil for the CPU.
A backend that fails is recorded once as an ``error`` line and dropped; sampling goes on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from cifarkit.device import resolve_device
from cifarkit.errors import CifarkitError
from cifarkit.runs import write_text
from cifarkit.train import Callback, Run, StepHooks

METRICS = (
    "gpu_busy_percent",
    "mem_busy_percent",
    "sclk_mhz",
    "mclk_mhz",
    "temp_c",
    "power_w",
    "vram_used_mb",
    "vram_total_mb",
    "torch_mem_alloc_mb",
    "torch_mem_reserved_mb",
    "torch_max_mem_alloc_mb",
    "cpu_percent",
    "system_cpu_percent",
    "rss_mb",
    "system_mem_used_mb",
)
PEAK_METRICS = ("vram_used_mb", "torch_max_mem_alloc_mb", "torch_mem_reserved_mb", "rss_mb", "system_mem_used_mb")
MB = 1024 * 1024
CLI_TIMEOUT_S = 2.0


def to_number(value: Any) -> float | None:
    """Parse what SMI tools print: 12, "12", "45.0", "(1500Mhz)", "35.0 W", {"value": 35, "unit": "W"}, "N/A"."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    match = re.search(r"-?\d+(?:\.\d+)?", str(value))
    return float(match.group()) if match else None


class Backend:
    """One telemetry source. ``read`` returns metric name -> number (missing metrics are left out)."""

    name = "base"

    def read(self) -> dict[str, float]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CpuBackend(Backend):
    """Process and system CPU %, process RSS and system memory used (psutil), always available."""

    name = "cpu"

    MIN_INTERVAL_S = 0.1  # psutil's percentages over shorter spans are noise (seen: 13000% over 1 ms)

    def __init__(self) -> None:
        import psutil

        self.psutil = psutil
        self.process = psutil.Process()
        self.process.cpu_percent(None)  # the first call only starts the interval
        psutil.cpu_percent(None)
        self.last = time.monotonic()

    def read(self) -> dict[str, float]:
        mem = self.psutil.virtual_memory()
        out = {"rss_mb": self.process.memory_info().rss / MB, "system_mem_used_mb": (mem.total - mem.available) / MB}
        now = time.monotonic()
        if now - self.last >= self.MIN_INTERVAL_S:
            out["cpu_percent"] = self.process.cpu_percent(None)  # 100 = one core busy
            out["system_cpu_percent"] = self.psutil.cpu_percent(None)  # 100 = every core busy
            self.last = now
        return out


class TorchMemoryBackend(Backend):
    """torch's caching allocator: allocated / reserved / peak on CUDA and ROCm, allocated on MPS."""

    name = "torch"

    def __init__(self, device: torch.device) -> None:
        if device.type not in ("cuda", "mps"):
            raise RuntimeError("torch memory statistics need a cuda or mps device")
        self.device = device

    def read(self) -> dict[str, float]:
        if self.device.type == "cuda":
            return {
                "torch_mem_alloc_mb": torch.cuda.memory_allocated(self.device) / MB,
                "torch_mem_reserved_mb": torch.cuda.memory_reserved(self.device) / MB,
                "torch_max_mem_alloc_mb": torch.cuda.max_memory_allocated(self.device) / MB,
            }
        return {
            "torch_mem_alloc_mb": torch.mps.current_allocated_memory() / MB,
            "torch_mem_reserved_mb": torch.mps.driver_allocated_memory() / MB,
        }


class NvmlBackend(Backend):
    """NVIDIA GPUs through NVML (``nvidia-ml-py``, imported as ``pynvml``)."""

    name = "nvml"

    def __init__(self, index: int = 0, module: Any = None) -> None:
        if module is None:
            import pynvml as module  # noqa: N813
        self.nvml = module
        self.nvml.nvmlInit()
        self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)

    def read(self) -> dict[str, float]:
        n, h = self.nvml, self.handle
        util = n.nvmlDeviceGetUtilizationRates(h)
        mem = n.nvmlDeviceGetMemoryInfo(h)
        return {
            "gpu_busy_percent": float(util.gpu),
            "mem_busy_percent": float(util.memory),
            "sclk_mhz": float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)),
            "mclk_mhz": float(n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_MEM)),
            "temp_c": float(n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)),
            "power_w": n.nvmlDeviceGetPowerUsage(h) / 1000.0,  # NVML reports milliwatts
            "vram_used_mb": mem.used / MB,
            "vram_total_mb": mem.total / MB,
        }

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nvml.nvmlShutdown()


class AmdSmiLibBackend(Backend):
    """AMD GPUs through the ``amdsmi`` Python library (ships with ROCm; the PyPI copy raises without it)."""

    name = "amdsmi"

    def __init__(self, index: int = 0, module: Any = None) -> None:
        if module is None:
            import amdsmi as module
        self.lib = module
        self.lib.amdsmi_init()
        self.handle = self.lib.amdsmi_get_processor_handles()[index]

    def _try(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception:  # one unsupported query must not hide the others
            return None

    def read(self) -> dict[str, float]:
        lib, h = self.lib, self.handle
        out: dict[str, float | None] = {}
        activity = self._try(lambda: lib.amdsmi_get_gpu_activity(h)) or {}
        out["gpu_busy_percent"] = to_number(activity.get("gfx_activity"))
        out["mem_busy_percent"] = to_number(activity.get("umc_activity"))
        clk = getattr(lib, "AmdSmiClkType", None)
        if clk is not None:
            out["sclk_mhz"] = to_number((self._try(lambda: lib.amdsmi_get_clock_info(h, clk.GFX)) or {}).get("clk"))
            out["mclk_mhz"] = to_number((self._try(lambda: lib.amdsmi_get_clock_info(h, clk.MEM)) or {}).get("clk"))
        ttype, tmetric = getattr(lib, "AmdSmiTemperatureType", None), getattr(lib, "AmdSmiTemperatureMetric", None)
        if ttype is not None and tmetric is not None:
            out["temp_c"] = to_number(self._try(lambda: lib.amdsmi_get_temp_metric(h, ttype.EDGE, tmetric.CURRENT)))
        power = self._try(lambda: lib.amdsmi_get_power_info(h)) or {}
        out["power_w"] = first_number(power, ("current_socket_power", "average_socket_power", "socket_power"))
        vram = self._try(lambda: lib.amdsmi_get_gpu_vram_usage(h)) or {}
        out["vram_used_mb"] = to_number(vram.get("vram_used"))
        out["vram_total_mb"] = to_number(vram.get("vram_total"))
        return {k: v for k, v in out.items() if v is not None}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.lib.amdsmi_shut_down()


def first_number(data: dict, keys: tuple[str, ...]) -> float | None:
    """The first key of ``keys`` in ``data`` that holds a number."""
    for key in keys:
        value = to_number(data.get(key))
        if value is not None:
            return value
    return None


def run_json(cmd: list[str], timeout: float = CLI_TIMEOUT_S) -> Any:
    """Run a CLI and parse its stdout as JSON; a hang is killed after ``timeout`` seconds."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    text = proc.stdout
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)  # skip banner lines
    if start < 0:
        raise ValueError(f"{cmd[0]} printed no JSON")
    return json.loads(text[start:])


ROCM_SMI_CMD = [
    "rocm-smi",
    "--showuse",
    "--showmemuse",
    "--showclocks",
    "--showtemp",
    "--showpower",
    "--showmeminfo",
    "vram",
    "--json",
]


def parse_rocm_smi(data: dict, card: int = 0) -> dict[str, float]:
    """Parse ``rocm-smi --json``: string values, and a power key that differs between GPU generations."""
    cards = sorted(k for k in data if k.startswith("card"))
    if not cards:
        raise ValueError("rocm-smi JSON has no card entries")
    c = data[cards[min(card, len(cards) - 1)]]

    def find(*patterns: str) -> float | None:
        for pattern in patterns:
            for key, value in c.items():
                if re.search(pattern, key, re.I):
                    number = to_number(value)
                    if number is not None:
                        return number
        return None

    used_b, total_b = find(r"VRAM Total Used Memory"), find(r"VRAM Total Memory")
    out = {
        "gpu_busy_percent": find(r"^GPU use \(%\)"),
        "mem_busy_percent": find(r"GPU [Mm]emory use \(%\)", r"Memory Activity"),
        "sclk_mhz": find(r"^sclk clock"),
        "mclk_mhz": find(r"^mclk clock"),
        "temp_c": find(r"Temperature \(Sensor edge\)", r"Temperature \(Sensor junction\)", r"Temperature"),
        "power_w": find(r"Average Graphics Package Power", r"Current Socket Graphics Package Power", r"Power \(W\)"),
        "vram_used_mb": used_b / MB if used_b is not None else None,
        "vram_total_mb": total_b / MB if total_b is not None else None,
    }
    return {k: v for k, v in out.items() if v is not None}


def parse_amd_smi_metric(data: Any, gpu: int = 0) -> dict[str, float]:
    """Parse ``amd-smi metric --json`` (a list of per-GPU objects, or ``{"gpu_data": [...]}``)."""
    if isinstance(data, dict):
        data = data.get("gpu_data", [data])
    if not data:
        raise ValueError("amd-smi JSON has no GPU entries")
    g = data[min(gpu, len(data) - 1)]
    usage, power, clock = g.get("usage", {}), g.get("power", {}), g.get("clock", {})
    temp, mem = g.get("temperature", {}), g.get("mem_usage", {})

    def clock_of(prefix: str) -> float | None:
        for key in sorted(clock):
            if key.startswith(prefix):
                value = clock[key]
                return to_number(value.get("clk") if isinstance(value, dict) and "clk" in value else value)
        return None

    out = {
        "gpu_busy_percent": to_number(usage.get("gfx_activity")),
        "mem_busy_percent": to_number(usage.get("umc_activity")),
        "sclk_mhz": clock_of("gfx"),
        "mclk_mhz": clock_of("mem"),
        "temp_c": first_number(temp, ("edge", "hotspot", "junction")),
        "power_w": first_number(power, ("socket_power", "current_socket_power", "average_socket_power")),
        "vram_used_mb": to_number(mem.get("used_vram")),
        "vram_total_mb": to_number(mem.get("total_vram")),
    }
    return {k: v for k, v in out.items() if v is not None}


class CliBackend(Backend):
    """A vendor CLI run once per sample, with a timeout, parsed by ``parser``."""

    def __init__(
        self, name: str, cmd: list[str], parser: Callable[[Any], dict[str, float]], timeout: float = CLI_TIMEOUT_S
    ) -> None:
        if shutil.which(cmd[0]) is None:
            raise FileNotFoundError(f"{cmd[0]} not on PATH")
        self.name, self.cmd, self.parser, self.timeout = name, cmd, parser, timeout

    def read(self) -> dict[str, float]:
        return self.parser(run_json(self.cmd, self.timeout))


def gpu_backend_factories(device: torch.device) -> list[tuple[str, Callable[[], Backend]]]:
    """Candidate GPU telemetry sources for ``device``, best first."""
    if device.type != "cuda":
        return []
    index = device.index or 0
    if getattr(torch.version, "hip", None):
        return [
            ("amdsmi", lambda: AmdSmiLibBackend(index)),
            ("rocm-smi", lambda: CliBackend("rocm-smi", ROCM_SMI_CMD, functools.partial(parse_rocm_smi, card=index))),
            (
                "amd-smi",
                lambda: CliBackend(
                    "amd-smi", ["amd-smi", "metric", "--json"], functools.partial(parse_amd_smi_metric, gpu=index)
                ),
            ),
        ]
    return [("nvml", lambda: NvmlBackend(index))]


def open_backends(device: torch.device) -> tuple[list[Backend], list[dict]]:
    """Working backends for ``device`` (CPU always; torch memory and at most one vendor GPU source),
    and an error record for each candidate that could not start."""
    backends: list[Backend] = []
    errors: list[dict] = []
    candidates: list[tuple[str, Callable[[], Backend]]] = [("cpu", CpuBackend)]
    if device.type in ("cuda", "mps"):
        candidates.append(("torch", lambda: TorchMemoryBackend(device)))
    gpu_found = False
    for name, factory in candidates + gpu_backend_factories(device):
        if gpu_found and name not in ("cpu", "torch"):
            break
        try:
            backend = factory()
            backend.read()  # a source that cannot answer once is not kept
        except (Exception, SystemExit) as exc:  # PyPI's amdsmi raises KeyError on import without ROCm; a vendor
            # library that calls exit() on import must not end the run either (Ctrl-C still does)
            errors.append({"backend": name, "error": f"{exc.__class__.__name__}: {exc}"[:300]})
            continue
        backends.append(backend)
        gpu_found = gpu_found or name not in ("cpu", "torch")
    return backends, errors


def available_backends(device: torch.device | None = None) -> dict[str, str]:
    """Which telemetry backends work here ("ok") and why the others do not (for ``cifarkit info``)."""

    device = device or resolve_device("auto")
    backends, errors = open_backends(device)
    status = {b.name: "ok" for b in backends}
    status.update({e["backend"]: e["error"] for e in errors})
    for b in backends:
        b.close()
    return status


class sample_hardware:  # noqa: N801 - used like a function: ``with sample_hardware(...)`` / ``@sample_hardware(...)``
    """Sample telemetry every ``interval`` seconds into ``outfile`` (JSONL) while a block or function runs.

    Each sample is ``{"phase": "sample", "ts", "t_rel_s", "backend", <metrics>, "epoch"}``; on exit
    one ``summary`` line holds the wall time, peak memory, and step timing reported via
    :meth:`step` (images/s and the share of step time spent waiting for data).

    Args:
        outfile: JSONL file to append to.
        interval: seconds between samples.
        device: the training device (decides which GPU backends are tried).
        epoch: written into every line.
        extra: more fields for every line (e.g. ``{"split": "val"}``).
        backends: use these instead of detecting (tests inject fakes here).
    """

    def __init__(
        self,
        outfile: str | Path,
        interval: float = 0.5,
        device: torch.device | str | None = None,
        epoch: int | None = None,
        extra: dict | None = None,
        backends: list[Backend] | None = None,
    ) -> None:
        self.outfile = Path(outfile)
        self.interval = interval
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.epoch = epoch
        self.extra = extra or {}
        self._given = backends
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.samples = 0
        self.peaks: dict[str, float] = {}
        self.step_images = 0
        self.step_count = 0
        self.data_seconds = 0.0
        self.write_error: OSError | None = None
        self.summary: dict[str, Any] = {}

    # -- context manager / decorator
    def __enter__(self) -> sample_hardware:
        self.outfile.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.outfile, "a")
        if self._given is not None:
            self.backends, errors = list(self._given), []
        else:
            self.backends, errors = open_backends(self.device)
        self.t0 = time.time()
        self._perf0 = time.perf_counter()
        for err in errors:
            self._write({"phase": "error", **err})
        self._sample()  # one sample at the start, so even short phases have data
        self._thread = threading.Thread(target=self._run, name="cifarkit-profiler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, CLI_TIMEOUT_S * 2))
        self._sample()
        wall = time.perf_counter() - self._perf0
        summary = {
            "phase": "summary",
            "wall_s": wall,
            "samples": self.samples,
            "backends": [b.name for b in self.backends],
        }
        summary.update({f"peak_{k}": v for k, v in self.peaks.items()})
        if self.step_count:
            summary.update(
                steps=self.step_count,
                images=self.step_images,
                images_per_s=self.step_images / wall,
                data_wait_s=self.data_seconds,
                data_wait_fraction=self.data_seconds / wall,
            )
        self.summary = summary
        self._write(summary)
        with contextlib.suppress(OSError):  # the disk filled up: what was written stays
            self._file.close()
        if self._given is None:
            for b in self.backends:
                b.close()

    def __call__(self, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with sample_hardware(self.outfile, self.interval, self.device, self.epoch, self.extra, self._given):
                return fn(*args, **kwargs)

        return wrapper

    # -- recording
    def step(self, step: int, images: int) -> None:
        """Report one training step and its image count."""
        self.step_count += 1
        self.step_images += images

    def data_wait(self, seconds: float) -> None:
        """Report the phase's total data-wait time (measured by the training loop, see ``IntervalTimer``)."""
        self.data_seconds += seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        now = time.time()
        record: dict[str, Any] = {"phase": "sample", "ts": now, "t_rel_s": now - self.t0}
        names = []
        for backend in list(self.backends):
            try:
                values = backend.read()
            except Exception as exc:  # a hang (timeout), garbage or a crash: record once and drop it
                self.backends.remove(backend)
                self._write(
                    {"phase": "error", "backend": backend.name, "error": f"{exc.__class__.__name__}: {exc}"[:300]}
                )
                continue
            names.append(backend.name)
            for key, value in values.items():
                if key in METRICS and value is not None:
                    record[key] = value
                    if key in PEAK_METRICS:
                        self.peaks[key] = max(self.peaks.get(key, value), value)
        record["backend"] = "+".join(names)
        self.samples += 1
        self._write(record)

    def _write(self, record: dict) -> None:
        base = {"ts": time.time(), "t_rel_s": time.time() - self.t0, "epoch": self.epoch, **self.extra}
        with self._lock:
            if self.write_error is not None:
                return
            try:
                self._file.write(json.dumps({**base, **record}) + "\n")
                self._file.flush()
            except OSError as exc:  # a full disk: stop logging, never stop the training it watches
                self.write_error = exc
                warnings.warn(f"telemetry stopped: cannot write {self.outfile} ({exc})", stacklevel=2)


def _line_epoch(line: str) -> float | None:
    """The ``epoch`` of one JSONL line (None for lines without one or that are not JSON)."""
    try:
        epoch = json.loads(line).get("epoch")
    except (ValueError, AttributeError, RecursionError):
        return None
    return epoch if isinstance(epoch, (int, float)) else None


class Telemetry(Callback):
    """The training run's telemetry: one profiled phase per training epoch and validation pass (into
    ``perf/``, or ``perf/rank<N>/`` for the other ranks of a torchrun launch), plus an optional
    torch.profiler trace of the first training steps. Follows ``cfg.telemetry`` and
    ``cfg.torch_profile_steps``; with both off it does nothing."""

    records_telemetry = True

    def __init__(self) -> None:
        self.enabled = False
        self.torch_steps = 0
        self.summaries: dict[str, dict[str, Any]] = {}  # the last summary line of each phase ("train", "val")

    def run_start(self, run: Run) -> None:
        """Open for ``run``; a resumed run's telemetry of epochs after its checkpoint is dropped from the
        logs, so that no epoch appears twice."""
        self.perf_dir = run.run_dir / "perf" if run.dist.is_main else run.run_dir / "perf" / f"rank{run.dist.rank}"
        self.device = run.device
        self.enabled = bool(run.cfg.telemetry)
        self.interval = run.cfg.telemetry_interval
        self.torch_steps = int(run.cfg.torch_profile_steps)
        if run.resumed_after is not None and self.perf_dir.is_dir():
            try:
                self._drop_epochs_after(run.resumed_after)
            except (OSError, CifarkitError) as exc:
                self._off(exc)

    def _drop_epochs_after(self, epoch: int) -> None:

        for log in sorted(self.perf_dir.glob("*.jsonl")):
            with open(log, errors="replace") as f:
                lines = f.readlines()
            kept = [line for line in lines if _line_epoch(line) is None or _line_epoch(line) <= epoch]
            if len(kept) != len(lines):
                write_text(log, "".join(kept))

    def _off(self, exc: BaseException) -> None:
        """Telemetry never stops training: say once why it stopped, then train on without it."""
        self.enabled, self.torch_steps = False, 0
        warnings.warn(f"telemetry off for the rest of this run: cannot write {self.perf_dir} ({exc})", stacklevel=3)

    @contextlib.contextmanager
    def phase(self, name: str, epoch: int) -> Iterator[StepHooks | None]:
        """Profile one ``train`` or ``val`` phase; yields its :class:`StepHooks` (or None when nothing listens)."""
        hooks = StepHooks()
        with contextlib.ExitStack() as stack:
            if self.enabled:
                try:
                    prof = sample_hardware(
                        self.perf_dir / f"{name}_epoch.jsonl", self.interval, self.device, epoch, {"split": name}
                    )
                    stack.callback(lambda: self.summaries.__setitem__(name, prof.summary))  # after prof's exit
                    stack.enter_context(prof)
                    hooks.steps.append(prof.step)
                    hooks.waits.append(prof.data_wait)
                except OSError as exc:  # perf/ is a file, the disk is full or read-only
                    self._off(exc)
            if name == "train" and self.torch_steps and not (self.perf_dir / "torch_ops.txt").exists():
                try:
                    hooks.steps.append(stack.enter_context(self._torch_profile()))
                except OSError as exc:
                    self._off(exc)
            yield hooks if hooks.steps else None

    @contextlib.contextmanager
    def _torch_profile(self) -> Iterator[Callable[[int, int], None]]:
        from torch.profiler import ProfilerActivity, profile, schedule

        quiet_profiler()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self.perf_dir.mkdir(parents=True, exist_ok=True)

        def save(p: Any) -> None:
            try:
                p.export_chrome_trace(str(self.perf_dir / "torch_trace.json"))
                sort = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
                (self.perf_dir / "torch_ops.txt").write_text(p.key_averages().table(sort_by=sort, row_limit=40))
            except OSError as exc:
                self._off(exc)

        with profile(
            activities=activities,
            schedule=schedule(wait=1, warmup=1, active=self.torch_steps, repeat=1),
            on_trace_ready=save,
            record_shapes=True,
        ) as p:
            yield lambda step, n: p.step()


def quiet_profiler() -> None:
    """Keep PyTorch's profiler library (kineto) from printing its own log lines to stderr: ``profiler_start`` and
    ``profiler_stop`` on every run, and "ERROR: gpuGetDeviceCount failed" on a CUDA build of torch in a machine
    without a GPU, which reads as a fault where there is none. Kineto reads the level once, when this process
    first profiles; a ``KINETO_LOG_LEVEL`` the user set wins."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")


class MachineLoad:
    """``with MachineLoad() as load:`` measures what share of the whole machine's CPU other processes used
    during the block (``load.other_percent``, 0-100; None where psutil cannot tell): the CPU time every core
    was busy, less this process's own and its children's, over the block's wall time on every core. A race
    timed while something else ran is a measurement of the machine's load too."""

    def __enter__(self) -> MachineLoad:
        import psutil

        self.other_percent: float | None = None
        self._cores = psutil.cpu_count() or 1
        self._start = time.perf_counter(), _busy_seconds(psutil.cpu_times()), _own_seconds(psutil.Process())
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        wall0, busy0, own0 = self._start
        wall = time.perf_counter() - wall0
        busy = _busy_seconds(psutil.cpu_times()) - busy0
        own = _own_seconds(psutil.Process()) - own0
        if wall > 0:
            self.other_percent = machine_percent(100 * (busy - own) / (wall * self._cores))


def machine_percent(value: float) -> float:
    """A share of the whole machine's CPU, in 0-100: machine-wide and per-process counters are read at slightly
    different moments, so their difference can stray just past either end (100.3% was seen on a busy machine)."""
    return min(100.0, max(0.0, value))


def _busy_seconds(times: Any) -> float:
    """CPU seconds every core spent on anything but idling or waiting for the disk."""
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_seconds(process: Any) -> float:
    """CPU seconds this process and its finished children used (threads included)."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system
