"""Figures say what they show: readable axis labels, whole-number epochs, values on bars, the true class marked."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest

from cifarkit.report import figures


def history(n: int, first_loss: float = 2.0) -> dict:
    return {
        "train_losses": [first_loss] + [1.0 - 0.1 * i for i in range(n - 1)],
        "val_losses": [1.5 - 0.1 * i for i in range(n)],
        "val_accuracies": [0.5 + 0.05 * i for i in range(n)],
        "train_accuracies": [0.4 + 0.05 * i for i in range(n)],
        "best_epoch": n,
    }


def test_curves_use_readable_labels_and_whole_epochs():
    fig = figures.plot_curves(history(3), "accuracy")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "top-1 accuracy" and ax.get_xlabel() == "epoch"
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_overlaid_axis_is_not_squashed_by_one_outlier():
    fig = figures.plot_overlaid({"a": history(6, first_loss=5.2), "b": history(6)}, "train_losses")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "training loss (cross-entropy)"
    assert ax.get_ylim()[1] < 5.2  # the 5.2 is clipped, the other values set the scale
    assert [t.get_text() for t in ax.texts] == ["1 point(s) above the axis, up to 5.2"]  # and the plot says so
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_per_class_bars_carry_their_values():
    fig = figures.plot_per_class({"cat": 0.5, "ship": 0.875})
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.50", "0.88"]


def test_topk_bars_mark_the_true_class():
    from matplotlib.figure import Figure

    rows = [{"class": "cat", "prob": 0.6}, {"class": "dog", "prob": 0.3}, {"class": "fox", "prob": 0.1}]
    ax = Figure().subplots()
    figures.topk_bars(ax, rows, true_class="dog")
    colours = {round(p.get_width()): mcolors.to_hex(p.get_facecolor()) for p in ax.patches}  # bars in percent
    assert colours[30] == mcolors.to_hex("tab:green") and colours[60] == mcolors.to_hex("tab:grey")
    missing = Figure().subplots()
    figures.topk_bars(missing, rows, true_class="ship")
    assert "true class ship is not in the top 3" in missing.get_xlabel()


def test_run_labels_name_the_experiment_and_budget(tmp_path):
    import json

    from cifarkit.report.comparison import load_histories, run_label

    run = tmp_path / "01_ex1_baseline" / "20261122-000000-ex1-synthetic"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "ex1", "augment": "crop+flip"}))
    (run / "env.json").write_text(json.dumps({"train_images": 45000}))
    (run / "train.json").write_text(json.dumps({"epochs_run": 12, "val_accuracies": [0.5]}))
    assert run_label(run) == "01 ex1 · crop+flip · 45,000 img × 12 ep"
    assert list(load_histories([run])) == ["01 ex1 · crop+flip · 45,000 img × 12 ep"]
    (run / "config.json").write_text(
        json.dumps({"model": "tinyvgg", "augment": "crop+flip", "model_kwargs": {"batchnorm": True, "dropout": 0.3}})
    )
    assert run_label(run) == "01 tinyvgg · crop+flip · BatchNorm, dropout 0.3 · 45,000 img × 12 ep"
    (run / "config.json").write_text(json.dumps({"model": "tinyvgg", "augment": "none", "label_smoothing": 0.1}))
    assert run_label(run) == "01 tinyvgg · none · label smoothing 0.1 · 45,000 img × 12 ep"
    (run / "env.json").write_text(json.dumps({"train_images": 45000, "world_size": 4}))
    (run / "config.json").write_text(json.dumps({"model": "ex1", "augment": "none", "sync_bn": True}))
    assert run_label(run) == "01 ex1 · none · 4 processes, synced BN · 45,000 img × 12 ep"
    # 03's seed repeats: the same setting with another seed gets a label of its own
    (run / "env.json").write_text(json.dumps({"train_images": 45000}))
    (run / "config.json").write_text(json.dumps({"model": "tinyvgg", "augment": "none", "seed": 1}))
    assert run_label(run) == "01 tinyvgg · none · seed 1 · 45,000 img × 12 ep"


def test_deploy_scatter_names_every_variant_with_plain_latency_ticks():
    import pandas as pd

    from cifarkit.report import figures

    rows = pd.DataFrame(
        {
            "variant": ["fp32", "int8-static", "onnx"],
            "accuracy": [0.75, 0.751, 0.75],
            "size_mb": [0.2, 0.06, 0.2],
            "latency_ms_p50": [0.9, 0.5, 0.2],
            "device": ["cpu"] * 3,
        }
    )
    ax = figures.plot_deploy(rows).axes[0]
    assert ax.get_xscale() == "log" and "latency" in ax.get_xlabel() and "top-1" in ax.get_ylabel()
    assert sorted(t.get_text() for t in ax.texts) == ["fp32", "int8-static", "onnx"]
    sizes = ax.collections[0].get_sizes()
    assert sizes[1] < sizes[0] == sizes[2]  # marker area follows the size on disk
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["on cpu", "0.06 MB on disk", "0.2 MB on disk"]  # the marker-area scale
    with_n = figures.plot_deploy(rows.assign(test_images=2000)).axes[0]
    (bars,) = [c for c in with_n.containers if type(c).__name__ == "ErrorbarContainer"]
    low, high = bars.lines[2][0].get_segments()[0][:, 1]
    assert high - low == pytest.approx(2 * (0.75 * 0.25 / 2000) ** 0.5)  # one standard error either side
    ticks = [ax.xaxis.get_major_formatter()(v, 0) for v in (0.2, 0.5, 1.0)]
    assert ticks == ["0.2", "0.5", "1"]


def test_learning_rate_and_curve_labels_say_what_they_show():
    history = {"learning_rates": [1e-3, 5e-3, 1e-4], "train_losses": [2.0, 1.5, 1.2], "val_losses": [1.9, 1.6, 1.4]}
    (line,) = figures.plot_learning_rate(history).axes[0].get_lines()
    assert list(line.get_ydata()) == [1e-3, 5e-3, 1e-4] and list(line.get_xdata()) == [1, 2, 3]
    labels = [t.get_text() for t in figures.plot_curves(history, "loss").legends[0].get_texts()]
    assert labels[0].startswith("train (augmented images") and labels[1].startswith("validation (plain images")


def test_own_images_are_drawn_beside_their_topk_in_percent_and_errors_in_full():
    import pandas as pd

    error = (
        "cannot read image broken.png: UnidentifiedImageError: cannot identify image file; remove or replace the file"
    )
    table = pd.DataFrame(
        [
            {"image": "broken.png", "rank": None, "class": None, "prob": None, "error": error},
            {"image": "cat.png", "rank": 1, "class": "cat", "prob": 0.9, "error": None},
            {"image": "cat.png", "rank": 2, "class": "dog", "prob": 0.1, "error": None},
        ]
    )
    fig = figures.plot_own_predictions([None, np.zeros((3, 8, 8), np.uint8)], table, ["broken.png", "cat.png"])
    shown = " ".join(t.get_text() for t in fig.axes[1].texts).replace("\n", " ")
    assert shown == error  # wrapped, not cut
    assert sorted(round(p.get_width()) for p in fig.axes[3].patches) == [10, 90]  # percent


def test_overlaid_runs_of_different_epoch_sizes_share_an_images_axis():
    small, whole = {**history(4), "train_images": 9_000}, {**history(2), "train_images": 45_000}
    ax = figures.plot_overlaid({"small": small, "whole": whole}, "val_accuracies", x="images").axes[0]
    assert ax.get_xlabel().startswith("training images seen")
    assert [list(line.get_xdata()) for line in ax.lines] == [[9_000, 18_000, 27_000, 36_000], [45_000, 90_000]]
    unknown = figures.plot_overlaid({"small": small, "old run": history(2)}, "val_accuracies", x="images").axes[0]
    assert unknown.get_xlabel() == "epoch"  # a run without its epoch size: the epoch axis, labelled as such


def render(fig):
    """Lay out and draw a figure as savefig does (a bare Figure's canvas does not draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    return fig


def overlaps(a, b) -> bool:
    """Whether two display-space boxes share any area."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def a_sweep():
    from cifarkit.tools.lrfinder import LrSweep

    lrs = list(np.geomspace(1e-6, 1.0, 50))
    loss = [2.3 - 1.2 * np.exp(-((np.log10(lr) + 2) ** 2)) for lr in lrs]
    return LrSweep(lrs, loss, loss, 1e-2, 1e-3, "end", "adam", 128)


def two_reliabilities():
    import torch

    from cifarkit.report.calibration import reliability

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (500,), generator=g)
    logits = torch.randn(500, 10, generator=g) * 3
    return {
        "without label smoothing": reliability(labels, logits),
        "with label smoothing 0.1": reliability(labels, logits / 2),
    }


@pytest.mark.parametrize(
    "draw",
    [
        lambda: figures.plot_curves(history(12), "loss"),
        lambda: figures.plot_curves(history(12), "accuracy"),
        lambda: figures.plot_colour_histograms(np.random.default_rng(0).integers(0, 256, (20, 3, 8, 8))),
        lambda: figures.plot_time_to_accuracy(
            {
                "a": [{"seconds": 1.0, "val_accuracy": 0.5}, {"seconds": 9.0, "val_accuracy": 0.75}],
                "b": [{"seconds": 2.0, "val_accuracy": 0.4}, {"seconds": 90.0, "val_accuracy": 0.71}],
            },
            0.7,
        ),  # fmt: skip
        lambda: figures.plot_lr_finder(a_sweep(), recipe_lr=2e-3),
        lambda: figures.plot_reliability(two_reliabilities()),
    ],
    ids=["loss", "accuracy", "colour", "time_to_accuracy", "lr_finder", "reliability"],
)
def test_legends_sit_outside_the_data(draw):
    """Issue 30: a legend in the corner of the axes covered a curve; every legend now sits below its axes."""
    fig = render(draw())
    ax = fig.axes[0]
    (legend,) = [*fig.legends, *filter(None, [ax.get_legend()])]
    assert not overlaps(legend.get_window_extent(), ax.get_window_extent())
    assert legend.get_window_extent().y0 >= 0  # and inside the figure, not cut off


def test_perf_panels_stay_readable_with_thirteen_runs_and_titles_apart():
    """05 packed 03's runs into one thumbnail panel whose legend ran under its neighbour's."""
    import pandas as pd

    rows = []
    for run in range(13):  # 03's six arms at two seeds and the learning-rate finder's run, in one panel
        for t in range(5):
            rows.append({"experiment": "03_augmentation", "folder": f"run{run}", "run": f"run{run}/train_epoch",
                         "t_s": float(t), "epoch": 1, "cpu_percent": 100.0 + run})  # fmt: skip
    for name in ("01_ex1_baseline", "02_ex2_bigger_model"):
        rows += [{**r, "experiment": name, "folder": name, "run": f"{name}/train_epoch"} for r in rows[:5]]
    labels = {f"run{i}": f"03 tinyvgg · arm {i} · seed {i % 2} · 5,600 img × 3 ep" for i in range(13)}
    fig = render(figures.plot_perf_metric(pd.DataFrame(rows), "cpu_percent", labels))
    panels = [ax for ax in fig.axes if ax.get_title()]
    panel = next(ax for ax in panels if ax.get_title() == "03_augmentation")
    legend = panel.get_legend()
    assert len(legend.get_texts()) == 13
    box, area = legend.get_window_extent(), panel.get_window_extent()
    assert not overlaps(box, area) and box.height <= 1.05 * area.height  # beside its panel, not taller than it
    for other in panels:
        if other is not panel:
            assert not overlaps(box, other.get_window_extent())  # never over a neighbour
            if other.get_legend():
                assert not overlaps(box, other.get_legend().get_window_extent())
    title = fig._suptitle.get_window_extent()
    assert all(not overlaps(title, ax.title.get_window_extent()) for ax in fig.axes)  # titles apart


def test_overlays_of_budgets_tenfold_apart_use_a_log_axis():
    """06 overlaid a 45,000-image run and a 300-image one on a linear axis: the small one was a dot at zero."""
    small, whole = {**history(2), "train_images": 300}, {**history(12), "train_images": 45_000}
    ax = figures.plot_overlaid({"small": small, "whole": whole}, "val_accuracies", x="images").axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel().endswith("log scale")
    near = {**history(4), "train_images": 9_000}
    assert (
        figures.plot_overlaid({"a": near, "b": {**history(2), "train_images": 45_000}}, x="images").axes[0].get_xscale()
        == "linear"
    )  # 2.5x apart: linear reads better


def test_many_runs_never_share_a_colour_and_a_line_style():
    """06 drew 13 runs with 10 colours: two tinyvgg runs of 03 looked the same."""
    from cifarkit.report import figures

    histories = {f"run {i}": {"val_accuracies": [0.1 * i, 0.1 * i + 0.05]} for i in range(13)}
    fig = figures.plot_overlaid(histories, "val_accuracies", "all")
    looks = [(str(line.get_color()), line.get_linestyle(), line.get_marker()) for line in fig.axes[0].get_lines()]
    assert len(looks) == 13 and len(set(looks)) == 13
    assert len(set(map(str, figures.plt_colours(13)))) == 20 and len(figures.plt_colours(4)) == 10


def test_row_titles_are_one_per_row_and_do_not_repeat_per_image():
    """07's crops titled each of 16 images "shifted (up to 2 px)", and the titles ran into each other."""
    import numpy as np

    from cifarkit.report import figures

    fig = figures.image_grid(np.zeros((16, 3, 8, 8), np.uint8), cols=8, row_titles=["originals", "shifted"])
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles.count("originals") == 1 and titles.count("shifted") == 1 and titles[8] == "shifted"
    assert not any(ax.get_title() for ax in fig.axes)  # no centred title per image
