"""Every figure cifarkit draws. Figures are built with ``matplotlib.figure.Figure`` (no pyplot),
so they save headless on any backend and still display inline when returned in a notebook."""

from __future__ import annotations

import itertools
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cifarkit.config import MONTAGE_COLS, check_value, positive_int
from cifarkit.errors import ConfigError, DataError
from cifarkit.report.comparison import run_labels
from cifarkit.report.stats import standard_error
from cifarkit.runs import atomic_write, ensure_dir, read_run, write_text
from cifarkit.tools.perflogs import load_events, load_perf_logs, present_metrics, summary_table
from cifarkit.tools.telemetry import METRICS, Telemetry
from cifarkit.tools.tensorboard import TensorBoard
from cifarkit.train import Callback, Run


def save(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as PNG, creating the folder; written whole or not at all (no 0-byte figures)."""

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


# train.json's field names as axis labels a reader understands
AXIS_LABELS = {
    "train_losses": "training loss (cross-entropy)",
    "val_losses": "validation loss (cross-entropy)",
    "train_accuracies": "training top-1 accuracy",
    "val_accuracies": "validation top-1 accuracy",
    "val_top5_accuracies": "validation top-5 accuracy",
    "learning_rates": "learning rate",
    "loss": "loss (cross-entropy)",
    "accuracy": "top-1 accuracy",
}


def epoch_axis(ax, epochs: int) -> None:
    """Whole-number epoch ticks (no "1.5 epochs")."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)


def robust_ylim(ax, values: Sequence[float]) -> None:
    """Keep one outlier (a first-epoch loss of 5) from squashing the rest: cap the axis at 1.5x the 90th
    percentile when the maximum is far above it, and say on the plot how many points the cap hides."""
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size >= 4:
        top, p90 = finite.max(), np.percentile(finite, 90)
        if top > 2 * p90 > 0:
            cap = 1.5 * p90
            ax.set_ylim(top=cap)
            hidden = int((finite > cap).sum())
            ax.text(
                0.99, 0.98, f"{hidden} point(s) above the axis, up to {top:.3g}", transform=ax.transAxes,
                ha="right", va="top", fontsize=7, color="dimgray",
            )  # fmt: skip


def legend_below(ax, ncol: int = 1, fontsize: int = 8) -> None:
    """The figure's legend under its axes, outside the data, so it never covers a curve (the constrained
    layout makes room for it)."""
    ax.figure.legend(
        *ax.get_legend_handles_labels(), loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False
    )


CURVES = {"loss": ("train_losses", "val_losses"), "accuracy": ("train_accuracies", "val_accuracies")}


def plot_curves(history: dict, metric: str, title: str | None = None) -> Figure:
    """Train vs validation ``loss`` or ``accuracy`` per epoch (uses train.json's field names)."""
    if metric not in CURVES:
        raise ConfigError(f"metric {metric!r} is not one of {', '.join(CURVES)}")
    keys = CURVES[metric]
    fig = Figure(figsize=(6, 4.6), layout="constrained")
    ax = fig.subplots()
    # the training numbers are averaged over the epoch on augmented images (and with dropout): say so
    labels = ("train (augmented images, averaged over the epoch)", "validation (plain images, after the epoch)")
    for key, label in zip(keys, labels, strict=True):
        values = history.get(key) or []
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=label)
    best = history.get("best_epoch")
    if best:
        ax.axvline(best, color="grey", ls="--", lw=1, label=f"best epoch ({best})")
    ax.set(xlabel="epoch", ylabel=AXIS_LABELS[metric], title=title or metric)
    epoch_axis(ax, len(history.get(keys[0]) or []))
    ax.grid(alpha=0.3)
    legend_below(ax)
    return fig


def plot_learning_rate(history: dict, title: str = "learning rate") -> Figure:
    """The learning rate at the end of each epoch (train.json's ``learning_rates``): the schedule the
    optimizer followed, e.g. one-cycle's warm-up and anneal."""
    values = history.get("learning_rates") or []
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.plot(range(1, len(values) + 1), values, marker="o", ms=3)
    ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title=title)
    epoch_axis(ax, len(values))
    ax.grid(alpha=0.3)
    return fig


def plot_lr_finder(sweep: Any, recipe_lr: float | None = None, title: str = "learning-rate range test") -> Figure:
    """A :class:`cifarkit.tools.lrfinder.LrSweep`: each step's training loss (faint) and its smoothed curve
    against the learning rate on a log axis, with the suggested rate, the lowest point and the recipe's rate."""
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(sweep.lrs, sweep.losses, color="lightgray", lw=0.8, label="loss of each step")
    ax.plot(sweep.lrs, sweep.smoothed, color="tab:blue", label="smoothed loss")
    ax.axvline(sweep.lowest, color="tab:red", ls=":", label=f"lowest smoothed loss at {sweep.lowest:.2g}")
    ax.axvline(sweep.suggestion, color="tab:green", ls="--", label=f"suggestion (a tenth) {sweep.suggestion:.2g}")
    if recipe_lr is not None:
        ax.axvline(recipe_lr, color="black", ls="-.", label=f"the recipe's rate {recipe_lr:g}")
    ax.set_xscale("log")
    smooth = [v for v in sweep.smoothed if np.isfinite(v)] or [0.0, 1.0]
    ax.set_ylim(0.9 * min(smooth), 1.1 * max(smooth))  # the smoothed curve decides; one step's spike is cut off
    ax.set(xlabel="learning rate (log scale)", ylabel=AXIS_LABELS["loss"], title=title)
    ax.grid(alpha=0.3)
    legend_below(ax, ncol=2)
    return fig


def plot_reliability(curves: dict[str, Any], title: str = "reliability on validation") -> Figure:
    """Reliability diagrams (:class:`cifarkit.report.calibration.Reliability`) side by side: each confidence
    bin's accuracy as a bar against the diagonal a calibrated model would follow, with its ECE."""
    fig = Figure(figsize=(4.2 * max(len(curves), 1), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(curves), 1), sharey=True))
    for ax, (name, r) in zip(axes, curves.items(), strict=False):
        centres = (np.arange(r.bins) + 0.5) / r.bins
        filled = r.count > 0
        ax.bar(centres[filled], r.accuracy[filled], width=1 / r.bins, edgecolor="white", label="accuracy in the bin")
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=1, label="calibrated (accuracy = confidence)")
        ax.plot(r.confidence[filled], r.accuracy[filled], "o", color="tab:red", ms=3, label="bin's mean confidence")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top class's probability)")
        ax.set_title(f"{name}\nECE {100 * r.ece:.1f} points ({r.bins} bins)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    fig.suptitle(title)
    legend_below(axes[0], ncol=3)
    return fig


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], normalize: bool = True) -> Figure:
    """Confusion matrix heat map (rows: true class, columns: predicted), row-normalised by default."""
    m = np.asarray(cm, dtype=float)
    if normalize:
        m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    side = max(5.0, min(0.45 * n, 24.0))
    fig = Figure(figsize=(side, side * 0.85))
    ax = fig.subplots()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if n <= 20:
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    f"{m[i, j]:.2f}" if normalize else int(m[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if m[i, j] > 0.5 * m.max() else "black",
                )
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row-normalised)" if normalize else ""))
    return fig


def plot_per_class(per_class: dict[str, float | None]) -> Figure:
    """Horizontal bars of accuracy per class, worst at the top."""
    items = sorted(((v if v is not None else 0.0), k) for k, v in per_class.items())
    fig = Figure(figsize=(6, max(3, 0.25 * len(items))))
    ax = fig.subplots()
    ax.barh([k for _, k in items], [v for v, _ in items], color="tab:blue")
    for y, (v, _) in enumerate(items):
        ax.text(min(v + 0.01, 0.9), y, f"{v:.2f}", va="center", fontsize=8)
    ax.set(xlim=(0, 1), xlabel="test top-1 accuracy of the class", title="per-class accuracy (test)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def image_grid(
    images: np.ndarray,
    titles: Sequence[str] | None = None,
    cols: int = 10,
    scale: float = 1.2,
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """Show uint8 images (N, 3, H, W) in a grid with optional titles per image, or one title per row
    (``row_titles``, beside each row's first image), which long words cannot make overlap."""
    check_value("cols", cols, positive_int)
    n = len(images)
    rows = max(1, -(-n // cols))
    fig = Figure(figsize=(cols * scale, rows * scale * (1.25 if titles else 1)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            ax.imshow(np.asarray(images[i]).transpose(1, 2, 0))
            if titles:
                ax.set_title(titles[i], fontsize=7)
    for row, text in enumerate(row_titles or []):
        axes[row * cols].set_title(text, fontsize=8, loc="left")
    return fig


def plot_class_counts(counts) -> Figure:
    """Grouped bars of images per class for each split (``explore.class_counts`` output)."""
    fig = Figure(figsize=(max(6, 0.35 * len(counts) + 2), 3.5))
    ax = fig.subplots()
    width = 0.8 / max(len(counts.columns), 1)
    x = np.arange(len(counts))
    for i, col in enumerate(counts.columns):
        ax.bar(x + i * width, counts[col], width, label=col)
    if len(counts) <= 20:
        ax.set_xticks(x + width * (len(counts.columns) - 1) / 2, counts.index, rotation=45, ha="right")
    ax.set(ylabel="images", title="images per class")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(counts.columns), frameon=False)
    return fig


def plot_colour_histograms(images: np.ndarray, bins: int = 64) -> Figure:
    """Pixel value histograms of the R, G and B channels of uint8 images (N, 3, H, W)."""
    check_value("bins", bins, positive_int)
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for c, colour in enumerate(("red", "green", "blue")):
        ax.hist(
            np.asarray(images)[:, c].ravel(),
            bins=bins,
            range=(0, 255),
            histtype="step",
            color=colour,
            label=colour,
            density=True,
        )
    ax.set(xlabel="pixel value", ylabel="density", title="colour histograms")
    legend_below(ax, ncol=3)
    return fig


def plot_overlaid(
    histories: dict[str, dict], key: str = "val_accuracies", title: str | None = None, x: str = "epoch"
) -> Figure:
    """One train.json field (e.g. ``val_accuracies``) of several runs on one axis; the legend uses the keys
    of ``histories`` (name the experiments, not their folders). ``x="images"`` plots against the training
    images seen (epochs times each history's ``train_images``), so runs whose epochs differ in size share
    one budget axis; runs that do not record it fall back to epochs, as the axis label then says."""
    if x not in ("epoch", "images"):
        raise ConfigError(f"x {x!r} is not one of epoch, images")
    if histories and not any(h.get(key) for h in histories.values()):  # a typo would draw an empty plot
        recorded = sorted({k for h in histories.values() for k, v in h.items() if isinstance(v, list) and v})
        raise ConfigError(f"no run records {key!r}; the runs' curves are {', '.join(recorded)}")
    by_images = x == "images" and all(h.get("train_images") for h in histories.values())
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    longest, everything = 0, []
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]  # identical runs stay visible
    colours = plt_colours(len(histories))
    for i, (name, h) in enumerate(histories.items()):
        line, mark = styles[i % len(styles)]
        values = h.get(key) or []
        steps = np.arange(1, len(values) + 1) * (h["train_images"] if by_images else 1)
        # colour and style cycle at different lengths, so no two of up to 80 runs share both
        ax.plot(steps, values, ls=line, marker=mark, ms=3, label=name, color=colours[i % len(colours)])
        longest, everything = max(longest, len(values)), everything + list(values)
    xlabel = "training images seen (epochs x images per epoch)" if by_images else "epoch"
    budgets = [len(h.get(key) or []) * h["train_images"] for h in histories.values()] if by_images else []
    if budgets and min(budgets) > 0 and max(budgets) / min(budgets) > 5:
        ax.set_xscale("log")  # budgets tenfold apart: a linear axis would squash the small runs into its corner
        xlabel += ", log scale"
    ax.set(xlabel=xlabel, ylabel=AXIS_LABELS.get(key, key), title=title or AXIS_LABELS.get(key, key))
    if not by_images:
        epoch_axis(ax, longest)
    robust_ylim(ax, everything)
    ax.grid(alpha=0.3)
    if histories:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.text(0.5, 0.5, "no runs to draw", ha="center", va="center", transform=ax.transAxes)
    return fig


def as_hwc(image: np.ndarray) -> np.ndarray:
    """A uint8 image as height x width x channels (CHW input is transposed)."""
    img = np.asarray(image)
    return img.transpose(1, 2, 0) if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3 else img


def topk_bars(ax, topk: Sequence[dict], true_class: str | None = None) -> None:
    """Horizontal bars of top-k class probabilities, the true class green (or named when it is missing)."""
    names = [e["class"] for e in topk][::-1]
    probs = [100 * e["prob"] for e in topk][::-1]
    colours = ["tab:blue" if true_class is None else "tab:green" if n == true_class else "tab:grey" for n in names]
    ax.barh(names, probs, color=colours)
    xlabel = "probability (%)" if true_class is None else "probability (%; green: the true class)"
    if true_class is not None and true_class not in names:
        xlabel = f"probability (%; true class {true_class} is not in the top {len(names)})"
    ax.set(xlim=(0, 100), xlabel=xlabel)
    for y, p in enumerate(probs):
        ax.text(min(p + 2, 80), y, f"{p:.1f}%" if p >= 0.1 else "<0.1%", va="center", fontsize=8)


def plot_own_predictions(images: Sequence[np.ndarray], table, names: Sequence[str]) -> Figure:
    """Each of your images (a row) beside the bar chart of its top-k classes in percent. ``table`` is
    :func:`cifarkit.predict.predict`'s DataFrame for ``names`` (an unreadable file shows its error)."""
    fig = Figure(figsize=(7, 2.2 * max(len(names), 1)), layout="constrained")
    axes = fig.subplots(max(len(names), 1), 2, squeeze=False, gridspec_kw={"width_ratios": [0.7, 1.6]})
    for (ax_img, ax_bar), image, name in zip(axes, images, names, strict=True):
        rows = table[table["image"] == name]
        ax_img.axis("off")
        ax_img.set_title(Path(name).name[:40], fontsize=9)
        if image is None or rows["error"].notna().any():
            ax_bar.axis("off")
            error = str(rows["error"].dropna().iloc[0] if len(rows) else "unreadable")
            ax_bar.text(0, 0.5, "\n".join(textwrap.wrap(error, 70)[:5]), va="center", fontsize=8)
            continue
        ax_img.imshow(as_hwc(image))
        topk_bars(ax_bar, rows.to_dict("records"))
    return fig


def plot_tta_side_by_side(images: Sequence[np.ndarray], predictions, true_classes: Sequence[str]) -> Figure:
    """Each image (a row) beside its top-k bars under every TTA mode (a column each), so plain and TTA
    predictions of the same image sit side by side. ``predictions`` maps a mode to the DataFrame of
    :func:`cifarkit.predict.predict` for ``images`` in order (rows ``image_0``, ``image_1``, ...)."""
    modes = list(predictions)
    fig = Figure(figsize=(2.2 + 3.6 * len(modes), 2.1 * len(images)), layout="constrained")
    axes = fig.subplots(
        len(images), 1 + len(modes), squeeze=False, gridspec_kw={"width_ratios": [0.7] + [1] * len(modes)}
    )
    for i, (image, truth) in enumerate(zip(images, true_classes, strict=True)):
        axes[i, 0].imshow(as_hwc(image))
        axes[i, 0].axis("off")
        axes[i, 0].set_title(f"true: {truth}", fontsize=9)
        for ax, mode in zip(axes[i, 1:], modes, strict=True):
            df = predictions[mode]
            topk_bars(ax, df[df["image"] == f"image_{i}"].to_dict("records"), truth)
            ax.set_title(f"TTA {mode}", fontsize=9)
            if i < len(images) - 1:
                ax.set_xlabel("")
    return fig


def plot_deploy(rows) -> Figure:
    """Accuracy against batch-1 latency for every deployment variant (a ``deploy_bench`` table), marker area
    proportional to the size on disk (its legend gives the scale), one colour per device, each point named,
    and error bars of one standard error of its top-1 (from ``test_images``, where the table has them)."""
    fig = Figure(figsize=(7.5, 4.4), layout="constrained")
    ax = fig.subplots()
    biggest = max(float(r) for r in rows["size_mb"]) or 1.0

    def area(size_mb: Any) -> Any:
        return 40 + 600 * size_mb / biggest

    for colour, (device, part) in zip(plt_colours(), rows.groupby("device"), strict=False):
        ax.scatter(
            part["latency_ms_p50"], part["accuracy"], s=area(part["size_mb"].astype(float)), alpha=0.6, color=colour
        )
        ax.scatter([], [], s=60, alpha=0.6, color=colour, label=f"on {device}")  # the legend's colour key
        if "test_images" in part:
            se = [standard_error(float(p), int(n)) for p, n in zip(part["accuracy"], part["test_images"], strict=True)]
            ax.errorbar(part["latency_ms_p50"], part["accuracy"], yerr=se, fmt="none", ecolor=colour, capsize=3, lw=1)
        for _, r in part.iterrows():
            ax.annotate(
                r["variant"],
                (r["latency_ms_p50"], r["accuracy"]),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
    smallest = min(float(r) for r in rows["size_mb"])
    for size in dict.fromkeys([smallest, biggest]):  # the marker-area scale, as legend entries
        ax.scatter([], [], s=area(size), color="lightgray", edgecolor="gray", label=f"{size:.2g} MB on disk")
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.12)  # room for the point labels at the edges
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, 1, 2 (not 5x10^-1)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set(xlabel="latency per image at batch 1, median (ms, log scale)", ylabel="test top-1 accuracy")
    ax.set_title("accuracy vs latency (marker area: size on disk; bars: one standard error)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False, labelspacing=1.2)
    return fig


# profiler metric names as axis labels with units
METRIC_LABELS = {
    "gpu_busy_percent": "GPU busy (%)",
    "mem_busy_percent": "GPU memory controller busy (%)",
    "sclk_mhz": "GPU clock (MHz)",
    "mclk_mhz": "GPU memory clock (MHz)",
    "temp_c": "GPU temperature (°C)",
    "power_w": "GPU power (W)",
    "vram_used_mb": "GPU memory used, whole device (MB)",
    "vram_total_mb": "GPU memory total (MB)",
    "torch_mem_alloc_mb": "torch tensors allocated (MB)",
    "torch_mem_reserved_mb": "torch allocator reserved (MB)",
    "torch_max_mem_alloc_mb": "torch peak allocated (MB)",
    "cpu_percent": "process CPU (% of one core; 200 = two cores busy)",
    "system_cpu_percent": "whole-machine CPU (% of all cores)",
    "rss_mb": "process memory, RSS (MB)",
    "system_mem_used_mb": "whole-machine memory used (MB)",
}


def broken_line(t: np.ndarray, y: np.ndarray, epochs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``t`` and ``y`` with a NaN (a break in the drawn line) wherever sampling paused: where the epoch
    changes (a validation log is silent while the next epoch trains, so its samples must not be joined
    across it) and at gaps over five times the usual sampling interval."""
    breaks = np.zeros(max(len(t) - 1, 0), dtype=bool)
    if len(t) > 2:
        breaks |= np.diff(t) > 5 * max(float(np.median(np.diff(t))), 1e-3)
    if epochs is not None and len(t) > 1:
        breaks |= np.diff(epochs) != 0
    gaps = np.flatnonzero(breaks) + 1
    return np.insert(t, gaps, np.nan), np.insert(y, gaps, np.nan)


def plot_perf_metric(df, metric: str, labels: dict[str, str] | None = None) -> Figure:
    """One telemetry metric over time, one panel per experiment (the run folder's parent, e.g.
    ``03_augmentation``) with one colour per run named by ``labels`` (run folder -> label), training
    logs solid and validation logs dotted; epoch starts dashed where a panel holds a single run."""
    experiments = sorted(df["experiment"].unique()) if "experiment" in df else [None]
    # one row per experiment, each legend to the right of its own panel: a dozen run labels never reach a neighbour
    counts = [df[df["experiment"] == e]["folder"].nunique() if e else df["folder"].nunique() for e in experiments]
    heights = [max(2.4, 0.16 * c + 0.9) for c in counts]
    fig = Figure(figsize=(13, sum(heights) + 0.6), layout="constrained")
    axes = np.atleast_1d(
        fig.subplots(len(experiments), 1, sharey=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    )
    for ax, experiment in zip(axes, experiments, strict=True):
        panel = df if experiment is None else df[df["experiment"] == experiment]
        folders = list(dict.fromkeys(panel["folder"]))
        for colour, folder in zip(itertools.cycle(plt_colours(len(folders))), folders):
            runs = panel[panel["folder"] == folder]
            run_dir = runs["run_dir"].iloc[0] if "run_dir" in runs else folder
            name = (labels or {}).get(run_dir, folder)
            if experiment and name[:2] == experiment[:2] and name[:2].isdigit():
                name = name[3:]  # the panel's title already names the notebook
            for run, part in runs.groupby("run"):
                part = part[part[metric].notna()]
                if part.empty:
                    continue
                t, y = part["t_s"].to_numpy(dtype=float), part[metric].to_numpy(dtype=float)
                t, y = broken_line(t, y, part["epoch"].to_numpy(dtype=float) if "epoch" in part else None)
                val = str(run).endswith("val_epoch")
                ax.plot(
                    t,
                    y,
                    lw=1.2,
                    color=colour,
                    ls=":" if val else "-",
                    marker="." if val else None,
                    ms=3,
                    label=None if val else name,
                )
            if len(folders) == 1 and "epoch" in runs and runs["epoch"].notna().any():
                for start in runs.groupby("epoch")["t_s"].min().iloc[1:]:
                    ax.axvline(start, color="grey", ls="--", lw=0.6, alpha=0.5)
        ax.set(xlabel="seconds since the run started", title=experiment or "")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        ax.set_ylabel(textwrap.fill(METRIC_LABELS.get(metric, metric), 28))
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} (solid: training, dotted: validation)", fontsize=10)
    return fig


def plt_colours(n: int = 10) -> list[str]:
    """Distinguishable colours for ``n`` lines: matplotlib's tab10, or its tab20 past ten, so a figure of many runs
    does not give two of them one colour (06 drew 13 runs in 10 colours)."""
    if n <= 10:
        return [
            f"tab:{c}" for c in ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")
        ]
    from matplotlib import colormaps

    return [colormaps["tab20"](i) for i in range(20)]


def plot_perf(df, out_dir: str | os.PathLike, log=print, labels: dict[str, str] | None = None) -> list[Path]:
    """A PNG per metric present in ``df`` (from :func:`cifarkit.tools.perflogs.load_perf_logs`); absent ones are named."""
    present = present_metrics(df)
    missing = [m for m in METRICS if m not in present]
    if missing:
        log(f"no data for: {', '.join(missing)} (skipped)")
    return [save(plot_perf_metric(df, m, labels), Path(out_dir) / f"{m}.png") for m in present]


def perf_report(logs: Sequence[str | os.PathLike], out: str | os.PathLike) -> str:
    """``plot-perf``: a figure per metric of the telemetry JSONL ``logs`` (files or folders), summary.csv and
    summary.md (and phases.csv where the logs hold phase events) in ``out``; returns what was written."""
    df = load_perf_logs(logs)
    if df.empty or not present_metrics(df):
        what = "no sample lines" if df.empty else "no metric values in the sample lines"
        raise DataError(f"{what} in the given logs; record them with train --telemetry")
    out = ensure_dir(out, "--out folder")
    paths = plot_perf(df, out, labels=run_labels(df["run_dir"]))
    table = summary_table(df)
    atomic_write(out / "summary.csv", table.to_csv)
    write_text(out / "summary.md", table.to_markdown() + "\n")
    events = load_events(logs)
    if not events.empty:
        atomic_write(out / "phases.csv", lambda tmp: events.to_csv(tmp, index=False))
    return f"{len(paths)} figure(s), summary.csv and summary.md in {out}"


def montage(
    images: Sequence[str | os.PathLike], out: str | os.PathLike, cols: int = MONTAGE_COLS, cell: int = 480
) -> Path:
    """Stitch PNGs into one grid image, each scaled to ``cell`` pixels wide (rows as tall as their tallest
    image), centred on white.

    An image that cannot be read stops the montage with a :class:`~cifarkit.errors.DataError` naming it.
    """
    from PIL import Image

    paths = [Path(p) for p in images]
    if not paths:
        raise DataError("no PNG images to stitch into a montage")
    check_value("cols", cols, positive_int)
    tiles = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as exc:  # not an image, truncated, unreadable
            reason = f"{exc.__class__.__name__}: {exc}".replace("\n", " ")
            raise DataError(f"cannot read image {path} ({reason}); remove or replace it") from None
        # fit the tile in cell x 4 cells: a 1 x 100,000 strip must not become a 480 x 48,000,000 image
        scale = min(cell / img.width, 4 * cell / img.height)
        tiles.append(img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS))
    cols = min(cols, len(tiles))
    rows = [tiles[i : i + cols] for i in range(0, len(tiles), cols)]
    heights = [max(t.height for t in row) for row in rows]
    sheet = Image.new("RGB", (cols * cell, sum(heights)), "white")
    top = 0
    for row, height in zip(rows, heights, strict=True):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * cell + (cell - tile.width) // 2, top + (height - tile.height) // 2))
        top += height
    return atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))


def montage_folder(folder: str | os.PathLike, out: str | os.PathLike, cols: int = MONTAGE_COLS) -> Path:
    """``montage`` of the PNG files in ``folder`` (sorted; regular files only, since a FIFO would block, and never
    the montage itself) written to the PNG ``out``."""
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder of PNG files")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the PNG to write, e.g. {out}/montage.png")
    pngs = [p for p in folder.glob("*.png") if p.is_file() and p.resolve() != out.resolve()]
    return montage(sorted(pngs), out, cols)


def write_run_figures(run_dir: Path, history: dict) -> list[Path]:
    """The training-curve figures of a run folder (test figures: :func:`write_test_figures`)."""
    figures = run_dir / "figures"
    return [
        save(plot_curves(history, "loss"), figures / "loss.png"),
        save(plot_curves(history, "accuracy"), figures / "accuracy.png"),
    ]


def write_test_figures(run_dir: Path, test: dict, classes: Sequence[str]) -> list[Path]:
    """Confusion matrix and per-class accuracy of a run's test.json."""
    figures = run_dir / "figures"
    return [
        save(plot_confusion(test["confusion_matrix"], classes), figures / "confusion_matrix.png"),
        save(plot_per_class(test["per_class_accuracy"]), figures / "per_class_accuracy.png"),
    ]


class RunFigures(Callback):
    """Draws a run's figures when it ends: training curves, and the test confusion matrix and per-class
    accuracy when it was tested."""

    def run_end(self, run: Run, test: dict[str, Any] | None) -> None:
        write_run_figures(run.run_dir, read_run(run.run_dir).train)
        if test is not None:
            write_test_figures(run.run_dir, test, run.dataset.classes)


def run_selector(histories: dict[str, dict]):
    """An ipywidgets picker of runs that redraws overlaid validation curves (for interactive notebooks)."""
    import ipywidgets as widgets
    from IPython.display import display

    names = list(histories)
    wide = widgets.Layout(width="95%")
    pick = widgets.SelectMultiple(
        options=names, value=tuple(names[:3]), rows=min(10, max(len(names), 1)), description="runs", layout=wide
    )
    metric = widgets.Dropdown(
        options=["val_accuracies", "val_losses", "train_losses", "train_accuracies"], description="metric"
    )

    def draw(runs, key):
        if not runs:
            print("Select one or more runs above (Ctrl/Cmd-click adds one) to draw their curves.")
            return
        display(plot_overlaid({n: histories[n] for n in runs}, key, x="images"))

    return widgets.VBox([pick, metric, widgets.interactive_output(draw, {"runs": pick, "key": metric})])


def plot_time_to_accuracy(curves: dict[str, list[dict]], target: float | None = None) -> Figure:
    """Validation top-1 against cumulative training seconds (log x), one line per recipe, target dashed."""
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.subplots()
    for name, curve in curves.items():
        ax.plot([r["seconds"] for r in curve], [r["val_accuracy"] for r in curve], marker="o", ms=3, label=name)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xscale("log")
    ax.set(
        xlabel="training time (s, log scale; validation passes not counted)",
        ylabel="validation top-1",
        title="time to accuracy",
    )
    ax.grid(alpha=0.3, which="both")
    legend_below(ax, ncol=2)
    return fig


def run_callbacks() -> list[Callback]:
    """What every run trained by the CLI or a notebook gets: telemetry (when its config asks for it),
    TensorBoard events (with the test confusion matrix drawn here) and the run folder's figures."""
    telemetry = Telemetry()
    return [telemetry, TensorBoard(telemetry, draw_confusion=plot_confusion), RunFigures()]


def plot_label_curve(table: Any, title: str = "label efficiency on the target classes") -> Figure:
    """Test top-1 against labelled images per class (log axis), one line per method (and what it trains), each point
    the mean over seeds with +-1 standard error bars (:func:`cifarkit.report.stats.curve_table`)."""
    fig = Figure(figsize=(7, 4.6), layout="constrained")
    ax = fig.subplots()
    for method, rows in table.groupby("method", sort=False):
        label = f"{method}, trains {rows['trains'].iloc[0]}"
        ax.errorbar(
            rows["labels_per_class"], rows["test_accuracy"], yerr=rows["se"], marker="o", capsize=4, label=label
        )
    ax.set_xscale("log")
    ax.minorticks_off()  # only the budgets are labelled
    ax.set_xticks(
        sorted(table["labels_per_class"].unique()),
        labels=[f"{n:,}" for n in sorted(table["labels_per_class"].unique())],
    )
    seeds, images = int(table["seeds"].min()), int(table["test_images"].min())
    spread = f"mean of {seeds} seed{'s' * (seeds > 1)}, bars +-1 standard error of seeds and {images:,} test images"
    ax.set(xlabel="labelled images per class (log scale)", ylabel="test accuracy", title=f"{title}\n({spread})")
    ax.grid(alpha=0.3)
    legend_below(ax, ncol=2)
    return fig
