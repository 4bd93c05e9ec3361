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
