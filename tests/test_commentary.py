"""Commentary: paragraphs written from a run's numbers say what those numbers say."""

from __future__ import annotations

import pandas as pd
import pytest

from cifarkit.report import commentary
from cifarkit.report.stats import difference_is_noise, standard_error


def history(val_losses, train_losses=None, val_acc=None, best_epoch=None):
    n = len(val_losses)
    val_acc = val_acc or [0.5 + 0.02 * i for i in range(n)]
    best = best_epoch or max(range(n), key=lambda i: val_acc[i]) + 1
    return {
        "train_losses": train_losses or [1.5 - 0.1 * i for i in range(n)],
        "val_losses": val_losses,
        "train_accuracies": [0.4 + 0.05 * i for i in range(n)],
        "val_accuracies": val_acc,
        "best_epoch": best,
        "best_val_accuracy": val_acc[best - 1],
        "min_val_loss_epoch": min(range(n), key=lambda i: val_losses[i]) + 1,
    }


def test_notes_render_as_markdown():
    """IPython shows a note as Markdown (bold numbers in the HTML report), not as a quoted Python string."""
    from IPython.core.formatters import DisplayFormatter

    note = commentary.training_curves(history([1.0, 0.9, 0.8]))
    shown, _ = DisplayFormatter().format(note)
    assert shown["text/markdown"] == note and "**" in note
    assert not shown["text/markdown"].startswith(("'", '"'))


def test_training_curves_still_falling_versus_overfitting():
    falling = commentary.training_curves(history([1.0, 0.9, 0.8], train_losses=[1.2, 1.1, 1.0]))
    assert "still falling at the end" in falling and "overfitting setting in" not in falling
    assert "below* training loss in 3 of 3 epochs (epochs 1-3)" in falling  # 0.8 < 1.0 and so on: explained
    over = commentary.training_curves(
        history([1.0, 0.7, 0.9, 1.1], train_losses=[0.9, 0.6, 0.4, 0.2], val_acc=[0.5, 0.6, 0.65, 0.64])
    )
    assert "lowest in epoch 2" in over and "After epoch 2 validation loss rose by 0.400" in over
    assert "until epoch 3" in over and "below" not in over
    # the Takeaways carry the verdict, not only when accuracy peaked
    assert over.finding.endswith("; overfitting set in after epoch 2 (validation loss rose by 0.400 from there).")
    assert falling.finding.endswith("; no overfitting within 3 epochs (validation loss still falling at the end).")


def test_test_metrics_quote_the_numbers_and_define_the_terms():
    test = {
        "n": 2000,
        "accuracy": 0.7,
        "top5_accuracy": 0.97,
        "f1_score": 0.69,
        "auc_score": 0.95,
        "per_class_accuracy": {"cat": 0.5, "ship": 0.9, "empty": None},
        "most_confused": [{"true": "cat", "predicted": "dog", "count": 40}],
    }
    note = commentary.test_metrics(test, ["cat", "ship", "empty"])
    assert "**top-1 70.0%**" in note and "± 1.0 points" in note and "**top-5 97.0%**" in note
    assert "`ship` is easiest (90.0%)" in note and "`cat` hardest (50.0%)" in note
    assert "`cat` taken for `dog` (40 images)" in note
    # a class is called easiest only beyond noise of the next: 88.2% and 87.4% on 500 images each are not apart
    close = {**test, "per_class_accuracy": {"ship": 0.882, "automobile": 0.874, "bird": 0.61, "cat": 0.526}}
    close["confusion_matrix"] = [[441, 20, 20, 19], [20, 437, 20, 23], [60, 60, 305, 75], [80, 80, 77, 263]]
    note = commentary.test_metrics(close, list(close["per_class_accuracy"]))
    assert "Per class, `ship` (88.2%) and `automobile` (87.4%) are easiest, within noise of each other" in note
    assert "and `cat` hardest (52.6%)." in note
    assert "true class is among the five highest" in note and "One-vs-rest AUC 0.950" in note


def test_the_winner_is_quoted_with_its_test_number():
    win = commentary.winner_test("+bn", 0.665, {"n": 10000, "accuracy": 0.6728})
    assert win.finding == "The winner `+bn` scores **67.3%** test top-1 on 10,000 images."
    assert "chosen at 66.5% validation top-1" in win and "± 0.5 points" in win


def test_tta_note_reports_gain_cost_and_harmful_views():
    table = pd.DataFrame(
        {
            "accuracy": [0.70, 0.72, 0.65],
            "n": [5000] * 3,
            "ms_per_image": [0.1, 0.2, 0.5],
            "gain_vs_none": [0.0, 0.02, -0.05],
        },
        index=["none", "flip", "scale3"],
    )
    note = commentary.tta(table, "flip")
    assert note.startswith("The TTA mode chosen on validation, `flip`, changes test top-1 by **+2.0 points**")
    assert "**2.0x**" in note  # the finding comes first, with its gain and cost; the definition after it
    assert "within noise" not in note and "`scale3` costs -5.0 points, more than noise explains" in note
    assert "plain inference is used: test top-1 **70.0%**" in commentary.tta(table, "none")
    close = table.assign(accuracy=[0.70, 0.72, 0.69], gain_vs_none=[0.0, 0.02, -0.01])
    assert "`scale3` (-1.0 points), is within noise" in commentary.tta(close, "flip")  # no cause for noise


def test_parameters_name_the_largest_layer():
    from cifarkit.models import create_model
    from cifarkit.report.comparison import model_summary

    summary = model_summary(create_model("ex1", 10), 32)
    note = commentary.parameters(summary)
    top = max(summary["layers"], key=lambda r: r["params"])
    assert f"`{top['layer']}` with {top['params']:,}" in note and f"**{summary['params']:,} parameters**" in note
    assert sum(r["params"] for r in summary["layers"]) == summary["params"]


@pytest.mark.parametrize(
    ("a", "b", "n", "noise"), [(0.70, 0.71, 2000, True), (0.70, 0.75, 2000, False), (0.70, 0.71, 200_000, False)]
)
def test_difference_is_noise(a, b, n, noise):
    assert difference_is_noise(a, n, b, n) is noise
    assert standard_error(0.7, 2100) == pytest.approx(0.01, rel=1e-3)


def test_channels_note_names_the_brightest_channel():
    stats = pd.DataFrame(
        {
            "computed_mean": [0.49, 0.48, 0.45],
            "computed_std": [0.25, 0.24, 0.26],
            "published_mean": [0.4914, 0.4822, 0.4465],
        },
        index=["R", "G", "B"],
    )
    note = commentary.channels(stats)
    assert "brightest channel on average is **R** (mean 0.490" in note and "darkest **B** (0.450)" in note
    assert "**B** varies most (std 0.260)" in note and "within 0.004 of the published" in note


def test_model_comparison_quotes_costs_and_noise():
    table = pd.DataFrame(
        [
            {
                "model": "ex2",
                "input_px": 128,
                "params": 16_000_000,
                "mult_adds": 600_000_000,
                "s_per_epoch": 40.0,
                "val_accuracy": 0.57,
                "val_images": 1000,
                "train_images": 9000,
                "epochs": 4,
            },
            {
                "model": "small",
                "input_px": 32,
                "params": 1_000_000,
                "mult_adds": 150_000_000,
                "s_per_epoch": 10.0,
                "val_accuracy": 0.64,
                "val_images": 1000,
                "train_images": 9000,
                "epochs": 4,
            },
        ]
    )
    note = commentary.model_comparison(table)
    assert "16.0x the parameters" in note and "4.0x its mult-adds" in note and "40.0 s vs 10.0 s (4.0x)" in note
    assert "-7.0 points for `ex2`: beyond the images' noise, one run each)" in note and "within noise" not in note
    assert "does not follow arithmetic" not in note  # 4x the mult-adds, 4x the time: arithmetic can explain it
    assert note.finding == (
        "`ex2` at 128 px: validation top-1 57.0% vs `small`'s 64.0% (-7.0 points, beyond the images' noise, one run "
        "each), at 4.0x the time "
        "per epoch."
    )
    # 02's quick run: EX-2 needed 0.4x smallcifarnet's mult-adds and took 2.9x as long per epoch; on a CPU the
    # memory quoted is what training added above the process's RSS at its start, not the whole process's
    slow = table.assign(
        mult_adds=[60_000_000, 150_000_000],
        s_per_epoch=[29.0, 10.0],
        peak_memory_mb=[2008.0, 1608.0],
        added_memory_mb=[700.0, 300.0],
    )
    note = commentary.model_comparison(slow)
    assert "Time does not follow arithmetic here: 0.4x the mult-adds took 2.9x the time per epoch" in note
    assert "this run did not measure which" in note and "memory added by training 700 MB vs 300 MB." in note.finding
    assert "above what the process held when training started" in note and "2,008" not in note


@pytest.mark.parametrize(
    "ex2,verdict",
    [
        ({0: 446, 1: 440}, "`ex2` behind at every seed, beyond noise"),  # 58 and 64 images only the reference gets
        ({0: 446}, "one seed: cannot tell"),  # one seed's gap is that seed's luck
        ({0: 446, 1: 500}, "cannot tell: beyond noise at 1 of 2 seeds"),
    ],
)
def test_model_comparison_judges_the_gap_over_seeds_and_names_a_test_column_that_disagrees(tmp_path, ex2, verdict):
    """02 called EX-2 behind smallcifarnet "beyond noise" from one run of each: a seed's luck is not in the images'
    noise, so the gap is judged seed by seed as 03 judges its arms."""
    from cifarkit.report import ablation

    from .test_ablation import correct_at, write_run

    row = {"input_px": 32, "params": 1000, "mult_adds": 1e6, "s_per_epoch": 1.0, "train_images": 1440, "epochs": 3}
    n = 1440
    table = pd.DataFrame(
        [
            {**row, "model": "ex2", "val_accuracy": 0.31, "val_images": n, "test_accuracy": 0.312, "test_images": 2500},
            {**row, "model": "ref", "val_accuracy": 0.35, "val_images": n, "test_accuracy": 0.354, "test_images": 2500},
        ]
    )
    right = {"reference": {s: range(0, 504) for s in ex2}, "ex2": {s: range(0, k) for s, k in ex2.items()}}
    runs = {k: {s: write_run(tmp_path / f"{k}-{s}", len(r) / n) for s, r in v.items()} for k, v in right.items()}
    correct = {k: {s: correct_at(r, n) for s, r in v.items()} for k, v in right.items()}
    note = commentary.model_comparison(table, ablation.table(runs, correct, base="reference"))
    counts = ", ".join(f"{max(k - 504, 0)}/{max(504 - k, 0)}" for k in ex2.values())
    assert f"at seed{'s' if len(ex2) > 1 else ''} {', '.join(map(str, ex2))}; on 1,440 validation images" in note
    assert f"({points_of(ex2, n)}; fixed/broken per seed {counts}, paired test: {verdict})." in note
    assert (
        "The test column, scored once on 2,500 images (the first seed), says 31.2% vs 35.4% (-4.2 points, beyond "
        "the images' noise, one run each)" in note
    )
    called = verdict.endswith("beyond noise")
    assert ("validation and test disagree" in note) is not called  # test beyond noise agrees only with a verdict
    assert note.finding.startswith("`ex2` at 32 px: validation top-1") and verdict in note.finding


def points_of(ex2: dict, n: int) -> str:
    """The mean gap of ``ex2``'s per-seed right counts against the reference's 504, as the note writes it."""
    return commentary.points(sum(k - 504 for k in ex2.values()) / len(ex2) / n) + " for `ex2`"


def test_ranking_warns_when_budgets_differ():
    rows = [
        {
            "model": "ex1",
            "val_accuracy": 0.76,
            "val_images": 5000,
            "train_images": 45000,
            "epochs": 12,
            "train_time_s": 120.0,
        },
        {
            "model": "vgg",
            "val_accuracy": 0.68,
            "val_images": 2000,
            "train_images": 18000,
            "epochs": 5,
            "train_time_s": 80.0,
        },
    ]
    note = commentary.ranking(pd.DataFrame(rows))
    assert "**76.0%**, by `ex1` (45,000 training images × 12 epochs, 120 s" in note
    assert "measured on 5,000 validation images" in note  # 06 says each run's validation size
    assert "validated on 2,000, 5,000 images (the `val_images` column)" in note
    assert "-8.0 points" in note and "different budget (18,000 images × 5 epochs)" in note
    same = commentary.ranking(pd.DataFrame([rows[0], {**rows[0], "model": "b", "val_accuracy": 0.755}]))
    assert "(within noise, one run each)" in same and "different budget" not in same
    assert "No runs" in commentary.ranking(pd.DataFrame())


def test_look_inside_shows_the_librarys_own_source():
    import inspect

    from cifarkit import evaluate, loader
    from cifarkit.report import notebook

    note = notebook.show_source(evaluate.tta_forward, loader.crop_at)
    assert (
        inspect.getsource(evaluate.tta_forward).rstrip() in note and inspect.getsource(loader.crop_at).rstrip() in note
    )
    assert note.count("```python") == 2 and "`cifarkit.evaluate.tta_forward` (line " in note


def throughput_rows(waits, rates=(2000.0, 500.0), busy=(None, None), load=(5.0, 8.0), ranges=None):
    ranges = ranges or [(rate, rate) for rate in rates]  # each run's slowest and fastest steady epoch
    return pd.DataFrame(
        {
            "model": ["ex1", "ex2"],
            "device": ["cpu", "cpu"],
            "device_name": ["Xeon", "Xeon"],
            "backends": ["psutil", "psutil"],
            "images_per_s": list(rates),
            "slowest_images_per_s": [low for low, _ in ranges],
            "fastest_images_per_s": [high for _, high in ranges],
            "data_wait_fraction": list(waits),
            "gpu_busy_median": list(busy),
            "other_load_percent": list(load),
        }
    )


def test_throughput_names_the_fastest_and_what_limited_training():
    note = commentary.throughput(throughput_rows([0.02, 0.05]))
    assert "2 training run(s) on cpu (Xeon); telemetry from psutil." in note
    assert "fastest was `ex1` at 2,000 images/s, the slowest `ex2` at 500 images/s (4.0x apart" in note
    assert "from 2.0% to 5.0% (`ex2`)" in note and "kept up everywhere" in note
    slow_loader = commentary.throughput(throughput_rows([0.02, 0.45]))
    assert "held training back" in slow_loader and "kept up" not in slow_loader
    gpu = commentary.throughput(throughput_rows([0.02, 0.05], busy=(40.0, 90.0)))
    assert "Median GPU busy ranged from 40% to 90%." in gpu
    assert "each model's own work set its pace; whether that was its arithmetic" in note  # not claimed as cause
    assert "All 2 run(s) were clean measurements" in note
    # 05 once said the models' arithmetic set the pace while another load held half the machine
    shared = commentary.throughput(throughput_rows([0.02, 0.05], load=(5.0, 52.0)).assign(clean=[True, False]))
    assert "about 52% of the machine's CPU while `ex2` trained" in shared
    assert "1 of 2 run(s) were not clean measurements" in shared and "(another load" in shared
    # two runs of one model are told apart by their notebook
    runs = throughput_rows([0.02, 0.05], load=(52.0, 5.0)).assign(model="ex1", run=["01_a/x", "07_b/y"])
    named = commentary.throughput(runs)
    assert "fastest was `01 ex1` at 2,000 images/s, the slowest `07 ex1`" in named and "while `01 ex1` trained" in named


def test_throughput_names_one_fastest_run_only_beyond_its_epoch_to_epoch_range():
    from cifarkit.report.comparison import throughput_headline

    close = throughput_rows([0.02, 0.05], rates=(2000.0, 1950.0), ranges=[(1900.0, 2050.0), (1920.0, 1990.0)])
    tied = commentary.throughput(close)
    assert "`ex1` and `ex2` were fastest at 2,000 and 1,950 images/s, within each other's" in tied
    assert "one run of each cannot rank them." in tied and "The fastest was" not in tied
    assert throughput_headline(close)["fastest"] == "ex1 2000 img/s and ex2 1950 img/s (within noise)"
    twins = close.assign(model="ex1", run=["01_ex1_baseline/a", "03_augmentation/b"])  # one model, two notebooks
    assert throughput_headline(twins)["fastest"] == "01 ex1 2000 img/s and 03 ex1 1950 img/s (within noise)"
    apart = throughput_rows([0.02, 0.05], rates=(2000.0, 1950.0), ranges=[(1960.0, 2050.0), (1920.0, 1955.0)])
    assert "The fastest was `ex1` at 2,000 images/s" in commentary.throughput(apart)
    assert throughput_headline(apart)["fastest"] == "ex1 2000 img/s"
    three = pd.concat([close, throughput_rows([0.1, 0.1], rates=(500.0, 500.0)).iloc[:1].assign(model="ex3")])
    assert "cannot rank them. The slowest was `ex3` at 500 images/s." in commentary.throughput(three.reset_index())


def conditions(rates=(1000.0, 1020.0, 990.0), load=10.0, share=0.0) -> dict:
    from cifarkit.tools.perflogs import OTHER_LOAD_PERCENT, PACE_SPREAD

    spread = max(rates) / min(rates) - 1
    return {
        "slowest_images_per_s": min(rates), "fastest_images_per_s": max(rates), "steady_epochs": len(rates),
        "pace_spread": spread, "other_load_percent": load, "other_load_share": share,
        "clean": spread <= PACE_SPREAD and load <= OTHER_LOAD_PERCENT,
    }  # fmt: skip


def test_pace_and_race_say_when_other_processes_competed():
    loaded = commentary.pace(conditions(load=48.0, share=0.08))
    assert "steady pace" not in loaded and "(within 3% of each other). Other processes used about 48%" in loaded
    assert "of the machine's CPU for 8.0% of training" in loaded
    assert loaded.finding == "Training ran at 990 to 1,020 images/s: not a clean measurement of this machine's speed."
    quiet = commentary.pace(conditions())
    assert "steady pace" in quiet and quiet.finding.endswith(": a clean measurement of this machine's speed.")
    assert "224% apart" in commentary.pace(conditions(rates=(310.0, 1005.0)))
    assert "about 60% of the machine's CPU during the race" in commentary.competing_load(60.0, "the race")
    assert "otherwise quiet during the race (other processes used about 3%" in commentary.competing_load(
        3.0, "the race"
    )
    assert "could not be measured" in commentary.competing_load(None, "the race")


def test_one_timing_verdict_per_run_in_01_and_05(tmp_path):
    """01 warned that another process competed while 05 called the same run quiet: both now read run_conditions."""
    import json

    from cifarkit.report.comparison import throughput_table
    from cifarkit.tools.perflogs import run_conditions

    run = tmp_path / "01_ex1_baseline" / "20260101-000000-ex1-synthetic"
    (run / "perf").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "ex1"}))
    (run / "env.json").write_text(json.dumps({"cpu_count": 2, "device": "cpu", "device_name": "EPYC"}))
    (run / "train.json").write_text(json.dumps({"images_per_s": 1000.0, "data_wait_fraction": 0.02}))
    (run / "best.pt").write_bytes(b"")
    rows = [{"epoch": e, "images_per_s": v} for e, v in enumerate((400.0, 1000.0, 1010.0, 990.0), start=1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    quiet = {"phase": "sample", "system_cpu_percent": 51.0, "cpu_percent": 100.0}
    busy = {"phase": "sample", "system_cpu_percent": 100.0, "cpu_percent": 100.0}  # half the machine taken
    samples = [quiet] * 95 + [busy] * 5  # a competitor for a twentieth of the run: the 90th percentile missed it
    (run / "perf" / "train_epoch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    verdict = run_conditions(run)
    assert verdict["other_load_percent"] == pytest.approx(50.0) and verdict["other_load_share"] == pytest.approx(0.05)
    assert verdict["steady_epochs"] == 3 and not verdict["clean"]  # steady epochs, but not a quiet machine
    in_01 = commentary.pace(verdict)
    table = throughput_table(tmp_path)
    assert not table.loc[0, "clean"]
    in_05 = commentary.throughput(table)
    assert "not a clean measurement" in in_01.finding and "1 of 1 run(s) were not clean measurements" in in_05
    assert "otherwise quiet" not in in_05 and "arithmetic set the pace" not in in_05


def test_other_load_is_the_machine_less_this_process():
    from cifarkit.tools.perflogs import bottleneck, other_load_percent

    samples = [{"phase": "sample", "system_cpu_percent": 100.0, "cpu_percent": 116.0}] * 3  # 2 cores
    assert other_load_percent(samples, cores=2) == pytest.approx(42.0)
    assert other_load_percent([{"phase": "sample", "cpu_percent": 50.0}], cores=2) is None
    assert other_load_percent(samples, cores=None) is None
    # a competitor for a third of the run counts although the median sample was quiet
    quiet = {"phase": "sample", "system_cpu_percent": 51.0, "cpu_percent": 100.0}
    busy = {"phase": "sample", "system_cpu_percent": 100.0, "cpu_percent": 100.0}
    assert other_load_percent([quiet] * 20 + [busy] * 10, cores=2) == pytest.approx(50.0)
    assert other_load_percent([quiet] * 95 + [busy] * 5, cores=2) == pytest.approx(50.0)  # a brief one counts
    assert other_load_percent([quiet] * 99 + [busy], cores=2) == pytest.approx(1.0)  # a one-sample blip does not
    assert other_load_percent([quiet] * 50 + [busy] * 2 + [quiet] * 50, cores=2) == pytest.approx(1.0)
    assert bottleneck(0.05, None, 42.0).startswith("shared machine: other processes used about 42%")
    assert bottleneck(0.05, None, 10.0).startswith("compute-bound")


def test_throughput_of_an_empty_report_says_so():
    assert "nothing to compare" in commentary.throughput(throughput_rows([0.1, 0.1]).iloc[0:0])


def test_duplicates_says_how_many_and_how_many_are_shown():
    near = [(5, 1, 3.0), (7, 1, 4.5), (9, 2, 12.25)]
    note = commentary.duplicates({"pairs": {"train/test": 2}}, near, test_images=100, shown=2)
    assert "**2** test image(s) have an exact copy" in note and "**3** train/test pairs" in note
    assert "touching 2 of 100 test images (2.0%)" in note
    assert "the 2 closest of 3 pairs" in note and "from 3 to 4.5 of 255" in note
    assert "shows all 3 pairs" in commentary.duplicates({"pairs": {}}, near, 100, shown=24)
    assert "grid" not in commentary.duplicates({"pairs": {}}, [], 100, shown=24)


def test_takeaways_repeat_each_notes_finding_or_its_first_sentence():
    notes = [
        "This model has **50,326 parameters**. The largest layer is `fc`.",
        "Validation top-1 peaked at **75.4%** in epoch 9 of 10! Then it fell.",
        "",
    ]
    assert commentary.findings(notes) == [
        "This model has **50,326 parameters**.",
        "Validation top-1 peaked at **75.4%** in epoch 9 of 10!",
    ]
    note = commentary.in_this_run(notes)
    assert note.startswith("**In this run:**\n\n- This model has **50,326 parameters**.\n- Validation")
    assert "No generated findings" in commentary.in_this_run([])
    chosen = commentary.Note("A definition comes first. Then **72.0%**, the answer.", finding="The answer: **72.0%**.")
    assert commentary.findings([chosen]) == ["The answer: **72.0%**."]  # the writer's choice, not the first sentence
    assert commentary.findings(["**a** reached it.\n\n- **b** too"]) == ["**a** reached it."]  # one line only


def test_a_notebook_remembers_its_notes_for_the_takeaways_and_the_summary(tmp_path, capsys):
    import json

    from cifarkit.report import notebook

    nb = notebook.start("01_ex1_baseline", "synthetic", 0, "cpu", "smoke", str(tmp_path), False)
    capsys.readouterr()
    assert nb.note(commentary.Note("First finding, 12.5% of it. Detail.")) is None  # shown by the call itself
    nb.note(commentary.Note("Second finding."))
    assert capsys.readouterr().out == "First finding, 12.5% of it. Detail.\nSecond finding.\n"  # both, not the last
    assert nb.takeaways() == "**In this run:**\n\n- First finding, 12.5% of it.\n- Second finding."
    nb.finish(x=1)
    shown = capsys.readouterr().out  # the notebook's own cost on this machine, beside the fixed costs' machine
    assert "This run of the notebook took **" in shown and "on cpu (" in shown and "profile `smoke`" in shown
    assert "README's cost table" in shown and "precision" not in shown  # nothing was computed: no precision named
    nb.compute()
    nb.finish(x=1)
    assert f"precision {expected_precision()}" in capsys.readouterr().out  # a network ran (nb.compute)
    summary = json.loads((tmp_path / "summaries" / "01_ex1_baseline.json").read_text())
    assert summary["in_this_run"] == ["First finding, 12.5% of it.", "Second finding."]


def expected_precision() -> str:
    """What ``amp="auto"`` means on this machine's CPU: bf16 where it is native, fp32 elsewhere."""
    from cifarkit.device import precision_name, resolve_amp, resolve_device

    return precision_name(resolve_amp("auto", resolve_device("cpu")))


def test_epochs_below_training_loss_are_named_as_they_are():
    """Epoch 1 and epochs 8-12 is not 'from epoch 1' (a claim the numbers beside it contradicted)."""
    vl = [1.0] + [2.0] * 6 + [0.5] * 5
    tl = [1.5] + [1.0] * 6 + [0.9] * 5
    note = commentary.training_curves(history(list(vl), train_losses=tl))
    assert "in 6 of 12 epochs (epoch 1 and epochs 8-12)" in note


def test_tta_on_the_same_images_is_judged_by_the_paired_test():
    """Same test images for every mode: only the images one of them gets right decide (McNemar)."""
    from cifarkit.report.stats import difference_is_noise, paired_is_noise

    table = pd.DataFrame(
        {"accuracy": [0.70, 0.72], "n": [1000] * 2, "ms_per_image": [0.1, 0.2], "gain_vs_none": [0.0, 0.02],
         "fixed": [0, 24], "broken": [0, 4]},
        index=["none", "flip"],
    )  # fmt: skip
    note = commentary.tta(table, "flip")
    assert "fixed 24 images plain inference got wrong and broke 4" in note and "within noise" not in note
    assert difference_is_noise(0.70, 1000, 0.72, 1000)  # as independent samples the same 2 points were noise
    assert paired_is_noise(14, 10) and not paired_is_noise(24, 4)
    assert "within noise" in commentary.tta(table.assign(fixed=[0, 30], broken=[0, 10 + 20 - 10]), "flip")


def test_pace_says_when_the_machine_was_not_quiet():
    """01 trained at 136-1,105 img/s in one run and said nothing: a spread beyond 30% is named now."""
    steady = commentary.pace(conditions((1000.0, 1020.0, 990.0)))
    assert "steady pace" in steady and "990 to 1,020 images/s over 3 epoch(s)" in steady
    note = commentary.pace(conditions((1105.0, 136.0, 700.0)))
    assert "136 to 1,105 images/s" in note and "not a clean measurement" in note
    assert "cannot be judged" in commentary.pace({"slowest_images_per_s": None, "fastest_images_per_s": None})


def test_precision_note_says_what_this_run_trained_in_and_why():
    """A learner whose CPU made amp "auto" pick bf16 is told so, once, with what it changes."""
    bf16 = commentary.precision({"amp": "auto", "resolved": {"amp": "bf16", "device": "cpu"}})
    assert bf16.finding == (
        'This run trained in **bf16** on cpu: `amp = "auto"` chose it because this CPU computes bf16 natively '
        "(AVX512-BF16 or AMX)."
    )
    assert "Logits tie more often" in bf16 and 'a rerun with `amp = "off"` trains the fp32 twin' in bf16
    assert "was not measured by this run" in bf16 and "last digits" not in bf16  # no unmeasured claim about fp32
    fp32 = commentary.precision({"amp": "auto", "resolved": {"amp": "off", "device": "cpu"}})
    assert fp32.startswith('This run trained in **fp32** on cpu: `amp = "auto"` keeps fp32 because this CPU has no')
    assert 'Set `amp = "bf16"`' in fp32 and "tie" not in fp32
    gpu = commentary.precision({"amp": "fp16", "resolved": {"amp": "fp16", "device": "cuda"}})
    assert '**fp16** on cuda: the parameters cell asked for `amp = "fp16"`' in gpu and "gradient scaler" in gpu


def test_test_metrics_name_a_precision_other_than_fp32_and_the_main_confusion():
    test = {
        "n": 1000, "accuracy": 0.75, "top5_accuracy": 0.97, "f1_score": 0.74, "auc_score": None,
        "per_class_accuracy": {"cat": 0.5, "ship": 0.9},
        "most_confused": [{"true": "cat", "predicted": "dog", "count": 40}],
    }  # fmt: skip
    fp32 = commentary.test_metrics({**test, "precision": "fp32"}, ["cat", "ship"])
    assert "computed in" not in fp32
    assert (
        fp32.finding
        == "Test top-1 **75.0%** on 1,000 images; the most common mistake is `cat` taken for `dog` (40 images)."
    )
    bf16 = commentary.test_metrics({**test, "precision": "bf16"}, ["cat", "ship"])
    assert "highest scores), computed in **bf16**." in bf16 and "images, computed in **bf16**; the most" in bf16.finding


def test_in_this_run_keeps_every_verdict_and_caveat_of_a_paragraph():
    """06's and 07's Takeaways kept a number and dropped the words that qualified it."""
    note = commentary.Note(
        "The speedrun reaches **70.6%** on 5,000 images. A difference counts only beyond noise. That is within "
        "noise of the 70.0% target.\n\n- **course** did not reach 70%: this run cannot tell how long it takes."
    )  # no finding chosen: the first sentence stands for it, and the sentences that qualify it follow
    (bullet,) = commentary.findings([note])
    assert bullet.startswith("The speedrun reaches **70.6%** on 5,000 images.")
    assert "That is within noise of the 70.0% target." in bullet
    assert "**course** did not reach 70%: this run cannot tell how long it takes." in bullet
    assert "counts only beyond noise" not in bullet  # a definition, not this run's verdict
    assert bullet.count("70.6%") == 1
    chosen = commentary.Note(str(note), finding="The speedrun reaches **70.6%**, within noise of the target.")
    assert commentary.findings([chosen]) == [chosen.finding]  # a finding chosen by its writer stands as it is
