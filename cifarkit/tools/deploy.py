"""What it costs to run a checkpoint, and what can be traded for speed: ``cifarkit deploy-bench``.

From one checkpoint it builds the variants of :mod:`cifarkit.tools.compress` (int8, pruned at a few
sparsities with a short fine-tune, ONNX) and measures every one side by side in one process: test
top-1, size on disk, parameters, batch-1 latency (median and 95th percentile over a warm run) and
throughput at a large batch. Every number comes from the same test images and the same machine.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifarkit.data import Dataset, Split, load_dataset
from cifarkit.device import (
    configure_threads,
    precision_name,
    resolve_amp,
    resolve_device,
    seed_everything,
    synchronize,
)
from cifarkit.errors import CheckpointError, ConfigError
from cifarkit.evaluate import autocast, fixed_broken
from cifarkit.loader import DeviceLoader, Normalizer
from cifarkit.predict import Predictor
from cifarkit.runs import ensure_dir, load_checkpoint, named, save_blob, save_checkpoint
from cifarkit.tools.compress import export_onnx, int8_blob, prune_channels, quantize_int8
from cifarkit.tools.settings import DeploySettings, variant_name
from cifarkit.train import train_one_epoch
from cifarkit.variants import INT8_METHOD, Int8Model, OnnxModel, model_from_blob

QUANT_NOTE = "torchao PT2E, x86 quantizer, calibrated on training images"  # how the int8 variant is made
# each speed's measured spread as (worse edge, better edge): batch 1's middle half of its timed calls, and the
# large batch's slowest and fastest timed call; two variants rank only where their spreads do not overlap
SPREAD = {
    "latency_ms_p50": ("latency_ms_p75", "latency_ms_p25"),
    "throughput_img_s": ("throughput_img_s_min", "throughput_img_s_max"),
}
TIMING = "time.perf_counter around each call, device synchronised; {warmup} warm-up calls, then {runs} timed"


def latency(forward: Callable[[torch.Tensor], Any], x1: torch.Tensor, xb: torch.Tensor, s: DeploySettings) -> dict:
    """Batch-1 latency percentiles (ms) and throughput at ``xb``'s batch size (images/s) of ``forward``, each
    timed after its warm-up calls, and ``warmup_seconds``: what those calls took."""
    device = x1.device
    times, warmup = [], 0.0
    with torch.no_grad():
        for i in range(s.warmup + s.runs):
            synchronize(device)
            start = time.perf_counter()
            forward(x1)
            synchronize(device)
            if i >= s.warmup:
                times.append(1000 * (time.perf_counter() - start))
            else:  # first calls pay kernel selection and allocation: timed apart, reported, never counted
                warmup += time.perf_counter() - start
        start = time.perf_counter()
        forward(xb)  # warm the large-batch path
        synchronize(device)
        warmup += time.perf_counter() - start
        calls = []
        for _ in range(s.throughput_runs):
            start = time.perf_counter()
            forward(xb)
            synchronize(device)
            calls.append(time.perf_counter() - start)
    q = statistics.quantiles(times, n=20)  # 5% steps: q[4] is the 25th percentile, q[18] the 95th
    return {
        "latency_ms_p50": round(statistics.median(times), 4),
        "latency_ms_p95": round(q[18], 4),
        "latency_ms_p25": round(q[4], 4),
        "latency_ms_p75": round(q[14], 4),
        "throughput_img_s": round(len(xb) * len(calls) / sum(calls), 1),
        "throughput_img_s_min": round(len(xb) / max(calls), 1),
        "throughput_img_s_max": round(len(xb) / min(calls), 1),
        "warmup_seconds": round(warmup, 4),
    }


def fine_tune(model: nn.Module, train: Split, norm: Normalizer, device: torch.device, s: DeploySettings) -> nn.Module:
    """A short fine-tune after pruning on ``train``: Adam at a small learning rate, crop+flip, ``finetune_epochs``."""
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.finetune_lr)
    criterion = nn.CrossEntropyLoss()
    whole, part = divmod(s.finetune_epochs, 1)
    for epoch in range(int(whole) + (1 if part else 0)):
        split = train if epoch < whole else train.sample(max(1, int(part * len(train))), s.seed + epoch)
        loader = DeviceLoader(split, 128, norm, train=True, augment=("crop", "flip"), seed=s.seed + epoch)
        train_one_epoch(model, loader, optimizer, criterion, device)
    return model.eval()


def training_images(ds: Dataset, blob: dict[str, Any]) -> Split:
    """The images the checkpoint trained on: its dataset's train split without the validation images its
    run held out (same fraction and seed), so calibration and fine-tuning see nothing new."""
    cfg = blob.get("config", {})
    if "val_fraction" not in cfg:
        return ds.split("train")
    return ds.split("train").hold_out(cfg["val_fraction"], cfg.get("seed", 0))[0]


def file_mb(path: Path) -> float:
    """A file's size in megabytes (10^6 bytes)."""
    return round(path.stat().st_size / 1e6, 3)


def params(model: nn.Module) -> int:
    """Weights and biases a model stores: float parameters, the int8 weights of quantized layers (held
    behind ``weight()`` methods), or what an int8 or ONNX model's file holds."""
    if isinstance(model, (Int8Model, OnnxModel)):
        return model.params
    total = 0
    for module in model.modules():
        for name in ("weight", "bias"):
            value = getattr(module, name, None)
            if callable(value) and not isinstance(value, torch.Tensor):
                value = value()  # quantized modules unpack their weights on request
            if isinstance(value, torch.Tensor):
                total += value.numel()
    return total


def build_variants(
    blob: dict[str, Any],
    fp32: nn.Module,
    ds: Dataset,
    test: Split,
    out: Path,
    dev: torch.device,
    s: DeploySettings,
    log: Callable[[str], None],
) -> list[tuple[str, Path]]:
    """Write the int8, pruned and ONNX variants of ``fp32`` (the checkpoint ``blob``'s model) into ``out``."""
    size = int(blob["image_size"])
    cpu_norm = Normalizer(blob["mean"], blob["std"], torch.device("cpu"), size)
    example = cpu_norm(test.images[:1])
    train = training_images(ds, blob)
    calibration = [cpu_norm(b) for b in train.pick(s.calibration_images, s.seed).images.split(64)]
    files = []
    try:
        state = quantize_int8(fp32, calibration)
        files.append((f"int8-{INT8_METHOD}", save_blob(out / "int8.pt", int8_blob(blob, state, fp32))))
        log(f"int8 ({INT8_METHOD}, {QUANT_NOTE}) built")
    except ConfigError as exc:
        log(f"int8 skipped: {exc}")
    for sparsity in s.sparsities:
        pruned = prune_channels(fp32, sparsity, example, len(ds.classes))
        pruned = fine_tune(pruned, train, Normalizer(blob["mean"], blob["std"], dev, size), dev, s).cpu()
        meta = {k: v for k, v in blob.items() if k not in ("format", "state_dict")}
        path = save_checkpoint(
            out / f"{variant_name(sparsity)}.pt", pruned, {**meta, "variant": "pruned", "sparsity": sparsity}
        )
        files.append((f"{variant_name(sparsity)}%", path))
        log(f"pruned {sparsity:.0%} of channels, fine-tuned {s.finetune_epochs:g} epoch(s)")
    onnx_path = export_onnx(fp32, example, out / "model.onnx", {k: v for k, v in blob.items() if k != "state_dict"})
    diff = check_onnx(fp32, onnx_path, cpu_norm(test.images[:64]))
    files.append(("onnx", onnx_path))
    log(f"onnx built (logits within {diff:.1g} of PyTorch's on 64 test images)")
    return files


def deploy_bench(
    checkpoint: str | Path,
    dataset: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    settings: DeploySettings | None = None,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Build every variant of ``checkpoint`` into ``out`` (default ``deploy/`` beside it) and measure each.

    Returns one row per variant and device: ``variant``, ``file``, ``accuracy``, ``fixed`` and ``broken`` (test images
    only this variant, or only the checkpoint on the same device, gets right: a paired test's counts), ``size_mb``,
    ``params``, ``latency_ms_p50``, ``latency_ms_p95``, ``throughput_img_s`` (at ``throughput_batch``),
    ``device``, ``threads``, ``test_images``, ``precision`` (what the variant computes in: the checkpoint's own
    precision as :class:`Predictor` evaluates it, ``int8``, or ``fp32`` for ONNX) and ``reference`` (the
    checkpoint itself, the first row per device). The checkpoint's row is named by its precision (``fp32``,
    ``bf16``), so a bf16 run's row is not called fp32.
    """
    s = settings or DeploySettings()
    checkpoint = Path(checkpoint)
    blob = load_checkpoint(checkpoint)
    if blob.get("variant", "fp32") != "fp32":
        raise CheckpointError(
            f"{checkpoint} is the {blob['variant']} variant of a model; deploy-bench builds its variants from the "
            "fp32 original, so pass the run's best.pt"
        )
    out = ensure_dir(out or checkpoint.parent / "deploy", "--out folder")
    seed_everything(s.seed)
    dev = resolve_device(device)
    threads = configure_threads()
    ds = load_dataset(dataset or blob["dataset"], data_dir)
    base = Predictor.from_checkpoint(checkpoint, dev)
    ds = base.check_dataset(ds)
    test = ds.split("test")
    cpu = torch.device("cpu")
    files: list[tuple[str, Path]] = [("fp32", checkpoint)]
    with tempfile.TemporaryDirectory(prefix=".variants-", dir=out) as stage:  # removed whatever happens
        try:
            built = build_variants(blob, model_from_blob(blob), ds, test, Path(stage), dev, s, log)
        except OSError as exc:  # a full disk names the variant's file in --out, not its hidden staging copy
            staged = Path(str(exc.filename or ""))
            if staged.parent != Path(stage):
                raise
            raise named(exc, out / staged.name, staged) from None
        # every variant is whole before the first replaces its old file, so a full disk or Ctrl-C while
        # building leaves the folder as it was; renames within one folder take no space
        for variant, path in built:
            os.replace(path, out / path.name)
            files.append((variant, out / path.name))
            log(f"{variant} -> {out / path.name}")

    rows, reference_correct = [], {}
    for variant, path in files:
        for run_on in dict.fromkeys([dev, cpu]):
            predictor = Predictor.from_checkpoint(path, run_on)
            if predictor.device != run_on:
                continue  # int8 and ONNX run on the CPU only
            result = predictor.evaluate(test, report=False, per_image=True)
            top1 = result["accuracy"]
            correct = result["correct"].cpu()
            reference = str(run_on) not in reference_correct  # the checkpoint comes first on every device
            reference_correct.setdefault(str(run_on), correct)  # the paired test's reference
            fixed, broken = fixed_broken(reference_correct[str(run_on)], correct)
            x1 = predictor.normalizer(test.images[:1].to(run_on))
            xb = predictor.normalizer(test.images[: s.throughput_batch].to(run_on))
            precision = resolve_amp(predictor.amp, run_on)  # timed as evaluated: the checkpoint's autocast

            def forward(x: torch.Tensor, p: Predictor = predictor, amp: str = precision) -> torch.Tensor:
                with autocast(p.device, amp):
                    return p.model(x)

            computes_in = "int8" if variant.startswith("int8") else precision_name(precision)
            row = {
                "variant": computes_in if reference else variant,
                "file": str(path),
                "accuracy": round(top1, 4),
                "test_images": result["n"],
                "fixed": fixed,
                "broken": broken,
                "size_mb": file_mb(path),
                "params": params(predictor.model),
                **latency(forward, x1, xb, s),
                "throughput_batch": len(xb),
                "device": str(run_on),
                "precision": computes_in,
                "stored": stored_dtype(predictor.model),
                "reference": reference,
                "threads": threads if run_on.type == "cpu" else None,
            }
            rows.append(row)
            log(
                f"measured {row['variant']} on {run_on}: top-1 {top1:.4f}, {row['latency_ms_p50']:.3f} ms/image at batch 1"
            )
    return rows


def check_onnx(model: nn.Module, path: Path, x: torch.Tensor, tolerance: float = 1e-3) -> float:
    """The largest difference between PyTorch's and ONNX Runtime's logits on ``x``; raises when above
    ``tolerance`` (an export that changed the model must not be measured as if it were the same)."""
    with torch.no_grad():
        diff = float((OnnxModel(path)(x) - copy.deepcopy(model).eval()(x)).abs().max())
    if diff > tolerance:
        raise ConfigError(
            f"{path}: ONNX Runtime's logits differ from PyTorch's by {diff:.2g} (> {tolerance}); not measured"
        )
    return diff


def table(rows: Sequence[dict[str, Any]], settings: DeploySettings) -> str:
    """The rows as a Markdown table, with how they were timed."""
    import pandas as pd

    df = pd.DataFrame(rows).drop(columns=["file"])
    return df.to_markdown(index=False) + "\n\n" + TIMING.format(warmup=settings.warmup, runs=settings.runs) + "."


def faster(a: Any, b: Any, key: str) -> bool:
    """Whether row ``a`` beats row ``b`` on ``key`` (a latency or a throughput) beyond both rows' measured
    :data:`SPREAD`: ``a``'s worse edge still beats ``b``'s better one. Rows without a spread cannot be ranked."""
    worse, better = SPREAD[key]
    if worse not in a or better not in b:
        return False
    return a[worse] < b[better] if key.startswith("latency") else a[worse] > b[better]


def leaders(rows: Sequence[dict[str, Any]], key: str, lowest: bool) -> list[dict[str, Any]]:
    """The row with the lowest (or highest) ``key``, with the runner-up where the leader is not :func:`faster`
    than it: their measured spreads overlap, so this run cannot rank the two."""
    ranked = sorted(rows, key=lambda r: r[key], reverse=not lowest)
    tied = len(ranked) > 1 and not faster(ranked[0], ranked[1], key)
    return ranked[: 2 if tied else 1]


def headline(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Notebook 08's headline: the checkpoint's precision, its and int8's top-1, latency on the CPU, and the
    fastest variant at batch 1 and at the throughput batch (two, "a and b", where :func:`leaders` ties them)."""
    cpu = [r for r in rows if r["device"] == "cpu"]
    ref = next((r for r in cpu if r.get("reference")), {})
    by = {r["variant"].split("-")[0]: r for r in cpu if not r.get("reference")}
    fastest, busiest = leaders(cpu, "latency_ms_p50", lowest=True), leaders(cpu, "throughput_img_s", lowest=False)
    return {
        "checkpoint_precision": ref.get("precision"),
        "checkpoint_accuracy": ref.get("accuracy"),
        "int8_accuracy": by.get("int8", {}).get("accuracy"),
        "checkpoint_latency_ms": ref.get("latency_ms_p50"),
        "int8_latency_ms": by.get("int8", {}).get("latency_ms_p50"),
        "onnx_latency_ms": by.get("onnx", {}).get("latency_ms_p50"),
        "fastest_on_cpu": " and ".join(r["variant"] for r in fastest) or None,
        "highest_throughput_on_cpu": " and ".join(r["variant"] for r in busiest) or None,
    }


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int8: "int8"}


def stored_dtype(model: nn.Module) -> str:
    """The dtype most of a network's stored values have (its state dict, by element count): what its file holds,
    which can differ from the precision it computes in (an fp32 checkpoint run under bf16 autocast). An int8
    model's file holds int8 weights, an ONNX export fp32 ones."""
    if isinstance(model, Int8Model):
        return "int8"
    if isinstance(model, OnnxModel):
        return "fp32"
    counts: dict[str, int] = {}
    for value in model.state_dict().values():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            name = DTYPE_NAMES.get(value.dtype, str(value.dtype).removeprefix("torch."))
            counts[name] = counts.get(name, 0) + value.numel()
    return max(counts, key=counts.get) if counts else "unknown"


def sizes_against_arithmetic(
    checkpoint: str | Path, rows: Sequence[dict[str, Any]], int8_mb: Callable[[nn.Module], float]
) -> dict[str, float]:
    """Megabytes by arithmetic beside the measured files: four bytes a parameter for the checkpoint's network,
    ``int8_mb`` (notebook 08's exercise, or :func:`cifarkit.tools.compress.int8_megabytes`) for its int8 copy,
    and the sizes on disk of the checkpoint and its int8 variant (from ``rows``)."""
    cpu = [r for r in rows if r["device"] == "cpu"]
    ref = next(r for r in cpu if r.get("reference"))
    int8 = next((r for r in cpu if r["variant"].startswith("int8")), None)
    return {
        "arithmetic: 4 bytes a parameter": 4 * ref["params"] / 1e6,
        f"file: the checkpoint ({ref.get('stored', '?')} weights, computes in {ref['variant']})": ref["size_mb"],
        "arithmetic: int8 weights (int8_megabytes)": int8_mb(Predictor.from_checkpoint(checkpoint, "cpu").model),
        **({f"file: {int8['variant']}": int8["size_mb"]} if int8 else {}),
    }
