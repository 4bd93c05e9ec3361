"""``cifarkit amp-check``: does mixed precision pay on this machine, and which kernels run it?

Trains a speedrun recipe's network for a few steps on random images, once in fp32 and once under
each requested autocast mode, and reports images per second. On a CPU it also records which oneDNN
convolution implementation ran each convolution and in which data type (oneDNN's verbose log), so
one can see whether bf16 convolutions take a native fast path (``brg``/``jit`` kernels for
``avx512_core_bf16``/``amx``) or fall back to emulation, and that the 2x2 whitening convolution
stays in fp32 under autocast.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from cifarkit.device import cpu_supports_bf16, resolve_amp, resolve_device, synchronize
from cifarkit.speedrun import recipe as speedrun
from cifarkit.tools.settings import AmpCheckSettings
from cifarkit.tools.telemetry import quiet_profiler
from cifarkit.train import forward_backward

_SRC_TYPE = re.compile(r"\bsrc[_:]([a-z0-9]+):")
_SHAPE = re.compile(r"\bmb\d+_?(?:g\d+)?ic(\d+)oc(\d+)_?(?:id\d+od\d+_?)?ih(\d+)oh\d+kh(\d+)")


def parse_onednn_line(line: str) -> dict[str, Any] | None:
    """One oneDNN verbose ``exec`` line of a convolution as ``{impl, prop, dtype, ic, oc, ih, kh}``,
    or None for any other line (creation lines, other primitives, torch's own output)."""
    fields = line.strip().split(",")
    if not fields or not fields[0].startswith(("onednn_verbose", "dnnl_verbose")) or "exec" not in fields:
        return None
    if "convolution" not in fields:
        return None
    at = fields.index("convolution")
    if len(fields) < at + 4:
        return None
    src = _SRC_TYPE.search(fields[at + 3])
    shape = _SHAPE.search(line)
    row: dict[str, Any] = {"impl": fields[at + 1], "prop": fields[at + 2], "dtype": src.group(1) if src else "?"}
    if shape:
        row.update(zip(("ic", "oc", "ih", "kh"), (int(g) for g in shape.groups()), strict=True))
    return row


@contextlib.contextmanager
def captured_stdout_fd() -> Iterator[Callable[[], str]]:
    """Redirect the process's file descriptor 1 (where oneDNN prints) to a temporary file; the
    yielded function returns what was written once the block has ended."""
    sys.stdout.flush()
    saved = os.dup(1)
    text = ""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            yield lambda: text
        finally:
            with contextlib.suppress(OSError, AttributeError):  # C stdio buffers (not on Windows)
                ctypes.CDLL(None).fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")


def onednn_convolutions(step: Callable[[], None]) -> list[dict[str, Any]]:
    """The convolutions oneDNN executed during one call of ``step`` (empty if it ran none)."""
    if not torch.backends.mkldnn.is_available():
        return []
    with captured_stdout_fd() as read, torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        step()
    rows = [parse_onednn_line(line) for line in read().splitlines()]
    return [r for r in rows if r is not None]


def aten_convolutions(step: Callable[[], None]) -> dict[str, dict[str, float]]:
    """PyTorch's profile of one call of ``step``: each convolution operator that did work itself
    (``aten::mkldnn_convolution`` is oneDNN; ``aten::_slow_conv2d_*`` is ATen's generic im2col path),
    with its calls and self CPU milliseconds."""
    quiet_profiler()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    ops = {}
    for event in prof.key_averages():
        if "conv" in event.key and event.self_cpu_time_total > 0:
            ops[event.key] = {"calls": event.count, "self_ms": round(event.self_cpu_time_total / 1000, 1)}
    return dict(sorted(ops.items(), key=lambda kv: -kv[1]["self_ms"]))


def summarize(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts of ``prop impl dtype`` over convolution calls, most frequent first."""
    counts = Counter(f"{r['prop']} {r['impl']} {r['dtype']}" for r in rows)
    return dict(counts.most_common())


def whitening_dtypes(rows: list[dict[str, Any]]) -> list[str]:
    """Data types oneDNN saw for the 2x2, 3-channel whitening convolution."""
    return sorted({r["dtype"] for r in rows if r.get("ic") == 3 and r.get("kh") == 2})


def run_amp_check(
    settings: AmpCheckSettings,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Images per second of one recipe's training step under each amp mode, and its oneDNN kernels.

    Args:
        settings: the recipe (its network, batch size and CPU chunking are used), the amp modes ("off" is
            fp32), the images per step (default: the recipe's) and the timed steps per mode (after one
            untimed warm-up step); see :class:`~cifarkit.tools.settings.AmpCheckSettings`.
        device: auto, cpu, cuda, mps.
        log: where progress lines go.

    Returns:
        ``{"device", "native_bf16", "recipe", "batch_size", "chunk", "modes": {mode: {img_per_s,
        seconds_per_step, kernels, operators, whitening_dtypes}}}``: ``kernels`` counts oneDNN's
        convolution calls by direction, implementation and data type; ``operators`` is the profile.
    """
    steps = settings.steps
    dev = resolve_device(device)
    rec = speedrun.get_recipe(settings.recipe)
    batch = settings.batch_size or rec.batch_size
    chunk = rec.cpu_micro_batch if dev.type == "cpu" and batch % max(rec.cpu_micro_batch, 1) == 0 else 0
    modes = tuple(resolve_amp(m, dev) for m in settings.modes)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    x = images.to(dev, memory_format=torch.channels_last)
    y = labels.to(dev)
    result: dict[str, Any] = {
        "device": str(dev),
        "native_bf16": cpu_supports_bf16() if dev.type == "cpu" else None,
        "recipe": rec.name,
        "batch_size": batch,
        "chunk": chunk,
        "modes": {},
    }
    for mode in modes:
        if mode == "bf16" and result["native_bf16"] is False:
            log(
                "note: this CPU has no native bf16 (oneDNN says so): its bf16 convolutions run on ATen's generic "
                "path and can take 10-20x longer than fp32 (--batch-size 128 --steps 1 gives a quicker look)"
            )
        torch.manual_seed(0)
        model = speedrun.build_model(rec, 10, images, dev)
        criterion = nn.CrossEntropyLoss(label_smoothing=rec.label_smoothing)

        def step(model: nn.Module = model, criterion: nn.Module = criterion, mode: str = mode) -> None:
            model.zero_grad(set_to_none=True)
            forward_backward(model, x, y, criterion, dev, mode, chunk=chunk)

        step()  # warm-up: oneDNN creates its primitives here
        kernels = onednn_convolutions(step) if dev.type == "cpu" else []
        operators = aten_convolutions(step)
        synchronize(dev)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(dev)
        per_step = (time.perf_counter() - start) / steps
        row = {
            "img_per_s": round(batch / per_step, 1),
            "seconds_per_step": round(per_step, 3),
            "kernels": summarize(kernels),
            "operators": operators,
            "whitening_dtypes": whitening_dtypes(kernels),
        }
        result["modes"][mode] = row
        log(f"amp {mode:>4}: {row['img_per_s']:8.1f} img/s ({per_step:.2f} s per step of {batch})")
        for name, count in row["kernels"].items():
            log(f"    oneDNN {count:4d} x {name}")
        for name, op in operators.items():
            if op["self_ms"] >= 1:
                log(f"    torch  {op['calls']:4d} x {name}: {op['self_ms']:.0f} ms self")
    return result
