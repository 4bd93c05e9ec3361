"""The learning-rate range test (03): an exponential sweep that stops when the loss explodes, and its suggestion."""

from __future__ import annotations

import math
import re

import pytest

from cifarkit.config import TrainConfig
from cifarkit.data import load_dataset
from cifarkit.errors import ConfigError
from cifarkit.tools.lrfinder import lr_range_test

CFG = TrainConfig(model="ex1", dataset="synthetic", batch_size=64, lr=3e-3, val_fraction=0.2, device="cpu")


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("synthetic")


def test_the_sweep_grows_the_rate_by_one_factor_and_stops_when_the_loss_explodes(dataset):
    sweep = lr_range_test(CFG, dataset, start=1e-5, end=1e4, steps=60)
    assert sweep.stopped == "diverged" and 10 < len(sweep.lrs) < 60  # Adam at a rate of hundreds explodes
    ratios = [b / a for a, b in zip(sweep.lrs, sweep.lrs[1:], strict=False)]
    assert all(r == pytest.approx((1e4 / 1e-5) ** (1 / 59)) for r in ratios)
    assert sweep.lrs[0] == pytest.approx(1e-5)
    finite = [s for s in sweep.smoothed if math.isfinite(s)]
    assert sweep.lowest == sweep.lrs[sweep.smoothed.index(min(finite))]
    assert sweep.suggestion == pytest.approx(sweep.lowest / 10)
    assert sweep.smoothed[0] == pytest.approx(sweep.losses[0])  # the average's start at zero is corrected


def test_a_sweep_that_never_explodes_runs_to_its_last_rate(dataset):
    sweep = lr_range_test(CFG, dataset, start=1e-7, end=1e-4, steps=15)
    assert sweep.stopped == "end" and len(sweep.lrs) == 15 and sweep.lrs[-1] == pytest.approx(1e-4)
    assert sweep.optimizer == CFG.optimizer and sweep.batch_size == 64


@pytest.mark.parametrize(
    ("start", "end", "steps", "said"),
    [
        (1e-3, 1e-4, 100, "learning-rate range 0.001 to 0.0001: use start < end, e.g. 1e-6 to 1"),
        (0, 1, 100, "start: 0 must be a finite number > 0"),
        (1e-6, 1, 5, "steps: 5 must be an integer >= 10: fewer say nothing"),
        # end=inf was accepted and suggested inf, a rate `train` refuses
        (1e-6, math.inf, 20, "end: inf must be a finite number > 0"),
        (math.nan, 1.0, 20, "start: nan must be a finite number > 0"),
        (-math.inf, 1.0, 20, "start: -inf must be a finite number > 0"),
        # a notebook's own values: text, or a step count with a fraction, were TypeErrors from deep inside
        ("1e-5", 1.0, 20, "start: '1e-5' is str; give a number"),
        (1e-6, 1.0, 50.5, "steps: '50.5' is not an integer"),
    ],
)
def test_bad_ranges_are_one_line(dataset, start, end, steps, said):
    with pytest.raises(ConfigError, match=re.escape(said)) as caught:
        lr_range_test(CFG, dataset, start=start, end=end, steps=steps)
    assert "\n" not in str(caught.value)


def test_a_sweep_with_no_finite_loss_suggests_nothing(dataset):
    """A dataset whose statistics divide by zero (std 0, as numpy gives for images of one colour, set by hand)
    makes the very first loss NaN, whatever the kernels' summation order: there is no rate to suggest, and the
    answer says so in one line. (A tiny std such as 1e-38 is no such fault: the values stay finite, and whether
    a convolution overflows depends on the CPU's kernels.)"""
    from dataclasses import replace

    from cifarkit.errors import TrainingDiverged

    degenerate = replace(dataset, std=(0.0, 0.0, 0.0))
    with pytest.raises(TrainingDiverged, match="non-finite loss") as caught:
        lr_range_test(CFG, degenerate, start=1e-6, end=1.0, steps=20)
    assert "\n" not in str(caught.value)
