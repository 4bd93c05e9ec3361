"""The notebooks' "Your turn" exercises: every reference solution passes its check, a stub is "not done yet" and
the library's function is used instead, and each kind of wrong answer is named by its first difference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cifarkit.report.exercises import DIFFERS, EXERCISES, NOT_DONE, PASSED, check, difference

SOLUTIONS = Path(__file__).parents[1] / "solutions"


def solution(name: str):
    spec = importlib.util.spec_from_file_location(name, SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_reference_solution_passes_and_is_used(name):
    mine = solution(name)
    answer = check(name, mine)
    assert answer.state == PASSED, answer.line
    assert answer.use is mine and f"**{name}: passed**" in answer.line


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_stub_is_not_done_yet_and_the_notebook_goes_on_with_the_library(name):
    def stub(*args):
        raise NotImplementedError

    answer = check(name, stub)
    assert answer.state == NOT_DONE and answer.use is EXERCISES[name].library
    assert f"solutions/{name}.py" in answer.line and EXERCISES[name].library_name in answer.line
    assert len(answer.line.splitlines()) == 1


def topk_with_topk(logits, labels, k):  # torch.topk breaks ties as its kernel likes
    return (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).float().mean().item()


def naive_smoothing(logits, labels, eps):  # log of a softmax: overflows for large logits
    log_p = logits.softmax(1).log()
    return -((1 - eps) * log_p[torch.arange(len(labels)), labels] + eps * log_p.mean(1)).mean()


def smoothing_on_wrong_classes_only(logits, labels, eps):  # eps/(C-1) on the others: another definition
    classes = logits.shape[1]
    target = torch.full_like(logits, eps / (classes - 1))
    target[torch.arange(len(labels)), labels] = 1 - eps
    return -(target * logits.log_softmax(1)).sum(1).mean()


def crop_with_zero_padding(images, p):
    padded = F.pad(images, (p, p, p, p))
    return torch.stack([padded[i, :, 2 * p * 0 : images.shape[2], 0 : images.shape[3]] for i in range(len(images))])


def crop_with_one_shift_for_all(images, p):
    padded = F.pad(images.float(), (p, p, p, p), mode="reflect")
    return padded[:, :, : images.shape[2], : images.shape[3]].to(images.dtype)


def crop_in_place(images, p):
    images[:, :, 0, 0] = 0
    return images


WRONG = [
    ("topk_accuracy", topk_with_topk, "tied logits"),
    ("topk_accuracy", lambda logits, labels, k: 100 * solution("topk_accuracy")(logits, labels, k), "expected 0.0"),
    ("smoothed_cross_entropy", naive_smoothing, "large logits"),
    ("smoothed_cross_entropy", smoothing_on_wrong_classes_only, "smoothing 1 (a uniform target)"),
    ("flip_tta", lambda model, x: (model(x) + model(x.flip(2))) / 2, "value at [0, 0]"),
    ("flip_tta", lambda model, x: (model(x) + model(x.flip(3))).sum(0), "returned shape (10,), expected (8, 10)"),
    ("random_crop", crop_with_zero_padding, "is not a 32x32 window of itself reflect-padded by 4"),
    ("random_crop", crop_with_one_shift_for_all, "got the same shift"),
    ("random_crop", lambda images, p: images.float(), "dtype torch.float32, expected torch.uint8"),
    ("random_crop", crop_in_place, "in place"),
    ("int8_megabytes", lambda model: sum(p.numel() for p in model.parameters()) / 1e6, "expected 0.051004"),
    ("int8_megabytes", lambda model: 1 / 0, "raised ZeroDivisionError"),
]


@pytest.mark.parametrize(("name", "wrong", "named"), WRONG, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(WRONG)])
def test_a_wrong_solution_is_named_by_its_first_difference(name, wrong, named):
    answer = check(name, wrong)
    assert answer.state == DIFFERS and answer.use is EXERCISES[name].library
    assert named in answer.line, answer.line
    assert "input" in answer.line and len(answer.line.splitlines()) == 1


def test_difference_names_type_shape_dtype_and_the_first_value():
    want = torch.zeros(2, 3)
    assert difference(want.clone(), want) is None
    assert difference([0.0], want) == "returned a list, expected a tensor of shape (2, 3)"
    assert difference(torch.zeros(3, 2), want) == "returned shape (3, 2), expected (2, 3)"
    assert (
        difference(torch.zeros(2, 3, dtype=torch.float64), want)
        == "returned dtype torch.float64, expected torch.float32"
    )
    got = want.clone()
    got[1, 2] = 0.5
    assert difference(got, want) == "value at [1, 2] is 0.5, expected 0"
    assert difference(torch.tensor(0.25), 0.25) is None and difference(0.25, torch.tensor(0.25)) is None
    assert difference(float("nan"), 0.25) == "returned nan, expected 0.25"
    assert difference((3, 1), (1, 3)) == "returned (3, 1), expected (1, 3)"


def test_checking_leaves_the_notebooks_random_stream_as_it_was():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    for name in EXERCISES:
        check(name, solution(name))
    assert torch.equal(torch.rand(3), expected)


def masking_topk(logits, labels, k):
    """Right answer, but it writes into the caller's logits (notebook 01's next cell then printed wrong top-k)."""
    logits[torch.arange(len(labels)), labels] += 0.0
    logits.clamp_(min=logits.min().item() + 1e-3)
    return solution("topk_accuracy")(logits, labels, k)


@pytest.mark.parametrize(
    "name,learner,named",
    [
        ("topk_accuracy", masking_topk, "changed its input 1"),
        (
            "topk_accuracy",
            lambda lo, la, k: str(solution("topk_accuracy")(lo, la, k)),
            "docstring promises a Python float",
        ),
        ("topk_accuracy", lambda lo, la, k: torch.tensor(solution("topk_accuracy")(lo, la, k)), "a Python float"),
        ("int8_megabytes", lambda model: int(solution("int8_megabytes")(model)), "a Python float"),
        (
            "flip_tta",
            lambda model, x: (model.linear.weight.data.zero_(), model(x))[1],
            "changed its input 1 (LeftRight)",
        ),
        ("random_crop", lambda images, padding: images.zero_(), "changed its input 1"),
    ],
)
def test_what_the_learners_function_did_is_judged(name, learner, named):
    answer = check(name, learner)
    assert answer.state == DIFFERS and named in answer.line, answer.line
    assert answer.use is EXERCISES[name].library


def test_sys_exit_in_a_learners_function_is_a_difference_not_the_end_of_the_notebook():
    import sys

    answer = check("topk_accuracy", lambda logits, labels, k: sys.exit(0))
    assert answer.state == DIFFERS and "called sys.exit(0) (SystemExit)" in answer.line
    assert answer.use is EXERCISES["topk_accuracy"].library


def test_keyboard_interrupt_still_stops_the_check():
    def interrupted(*args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        check("topk_accuracy", interrupted)


def test_an_unknown_exercise_is_one_line_naming_the_known_ones():
    from cifarkit.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown exercise 'topk_acuracy'; the exercises are topk_accuracy, ") as e:
        check("topk_acuracy", solution("topk_accuracy"))
    assert "\n" not in str(e.value) and all(name in str(e.value) for name in EXERCISES)


def test_a_function_that_runs_too_long_is_stopped_and_said(monkeypatch):
    import time

    from cifarkit.report import exercises

    monkeypatch.setattr(exercises, "CASE_SECONDS", 0.2)
    started = time.perf_counter()
    answer = check("topk_accuracy", lambda *args: time.sleep(30))
    assert time.perf_counter() - started < 5
    assert answer.state == DIFFERS and "ran for more than 0 s and was stopped" in answer.line
    monkeypatch.setattr(exercises, "SLOW_SECONDS", 0.01)

    def slow(*args):
        time.sleep(0.05)
        return solution("topk_accuracy")(*args)

    passed = check("topk_accuracy", slow)
    assert passed.state == PASSED and "where the library takes milliseconds" in passed.line
