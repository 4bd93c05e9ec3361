"""The course's "Your turn" exercises: the learner writes a short function that the library already has, and
:func:`check` tries it on random and edge-case inputs against the library's version, answering in one line.

Until an exercise passes, the notebook goes on with the library's version, so Run All and the headless series
work with every exercise unsolved. Reference solutions, written to be read, are in the repository's
``solutions/`` folder, one file per exercise, named like the function.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cifarkit.errors import ConfigError, first_line
from cifarkit.evaluate import topk_accuracy, tta_forward
from cifarkit.loader import crop_at, draw_crop_offsets
from cifarkit.models import create_model
from cifarkit.tools.compress import int8_megabytes

NOT_DONE, PASSED, DIFFERS = "not done yet", "passed", "differs"


@dataclass(frozen=True)
class Case:
    """One input an exercise is tried on; ``name`` says what it tests ("tied logits")."""

    name: str
    args: tuple


@dataclass(frozen=True)
class Exercise:
    """A function to write: the library's version (used until the learner's passes), where it lives, the inputs
    to try, the type its docstring promises (``returns``, named by ``returns_text``), and how a learner's output is
    judged (``differs(output, case)``: a sentence, or None when right)."""

    name: str
    library: Callable
    library_name: str
    cases: Callable[[], list[Case]]
    returns: type | tuple[type, ...]
    returns_text: str
    differs: Callable[[Any, Case], str | None] | None = None  # None: compare with the library's output

    def difference(self, yours: Callable, case: Case) -> tuple[str | None, float]:
        """Run ``yours`` on copies of the case's inputs, then judge what it did: inputs it changed in place, the
        type it returned, then the output itself. Returns the difference (None when right) and the seconds
        ``yours`` took."""
        copies = clone(case.args)
        started = time.perf_counter()
        with time_limit(CASE_SECONDS):
            got = yours(*copies)
        return self.judge(got, copies, case), time.perf_counter() - started

    def judge(self, got: Any, copies: tuple, case: Case) -> str | None:
        """What is wrong with ``got``, returned for the case's inputs given as ``copies``; None when right."""
        if changed := changed_input(copies, case.args):
            return f"changed its input {changed} in place; leave the inputs as they are and return a new value"
        if not isinstance(got, self.returns) or isinstance(got, bool):
            return f"returned {shown(got)} (a {type(got).__name__}), where its docstring promises {self.returns_text}"
        if self.differs is not None:
            return self.differs(got, case)
        return difference(got, self.library(*case.args))


@dataclass(frozen=True)
class Answer:
    """What :func:`check` found: ``state`` (passed, not done yet, differs), the line shown, the function to use."""

    state: str
    line: str
    use: Callable


# ----------------------------------------------------------------------------- judging an output


def difference(got: Any, want: Any, rtol: float = 1e-4, atol: float = 1e-5) -> str | None:
    """How ``got`` differs from ``want`` (type, shape, dtype, or the first value that differs), or None."""
    if isinstance(want, tuple):
        same = isinstance(got, (tuple, list)) and len(got) == len(want)
        if not same or any(difference(g, w, rtol, atol) for g, w in zip(got, want, strict=True)):
            return f"returned {shown(got)}, expected {shown(want)}"
        return None
    if isinstance(want, torch.Tensor) and want.ndim > 0:
        if not isinstance(got, torch.Tensor):
            return f"returned a {type(got).__name__}, expected a tensor of shape {tuple(want.shape)}"
        if got.shape != want.shape:
            return f"returned shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        if got.dtype != want.dtype:
            return f"returned dtype {got.dtype}, expected {want.dtype}"
        bad = ~torch.isclose(got.detach().double(), want.double(), rtol, atol, equal_nan=False)
        if bad.any():
            at = tuple(bad.nonzero()[0].tolist())
            return f"value at {list(at)} is {got[at].item():.6g}, expected {want[at].item():.6g}"
        return None
    try:
        value = float(got)
    except (TypeError, ValueError, RuntimeError):
        return f"returned {shown(got)}, expected a number like {float(want):.6g}"
    if not math.isclose(value, float(want), rel_tol=rtol, abs_tol=atol):
        return f"returned {value:.6g}, expected {float(want):.6g}"
    return None


def shown(value: Any) -> str:
    """A short text of a value for an answer line."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}" if value.ndim else f"{value.item():.6g}"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(shown(v) for v in value) + ")"
    return repr(value)[:60]


def describe(args: tuple) -> str:
    """The inputs of a case in a few words: tensors by shape and dtype, models by class, numbers as they are."""

    def one(a: Any) -> str:
        if isinstance(a, torch.Tensor):
            return f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}"
        if isinstance(a, nn.Module):
            return type(a).__name__
        return repr(a)

    return ", ".join(map(one, args))


def clone(args: tuple) -> tuple:
    """Copies of the inputs (tensors cloned, models deep-copied), so a learner's in-place change cannot alter what
    the library sees, and shows when the copies are compared with the originals."""
    return tuple(a.clone() if isinstance(a, torch.Tensor) else copy.deepcopy(a) for a in args)


def changed_input(copies: tuple, originals: tuple) -> str | None:
    """Which input the learner's function changed in place ("1 (logits)" style: its position, and a tensor's
    shape or a model's class), comparing what it was given with the untouched originals; None when none."""
    for i, (mine, theirs) in enumerate(zip(copies, originals, strict=True), start=1):
        if isinstance(theirs, torch.Tensor):
            same = mine.shape == theirs.shape and torch.equal(mine, theirs)
        elif isinstance(theirs, nn.Module):
            a, b = mine.state_dict(), theirs.state_dict()
            same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            same = True
        if not same:
            return f"{i} ({describe((theirs,))})"
    return None


CASE_SECONDS = 20.0  # a case the library answers in milliseconds: longer than this is a loop gone wrong


class TookTooLong(Exception):
    """A learner's function ran past :data:`CASE_SECONDS` on one case."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Stop the block with :class:`TookTooLong` after ``seconds``, where the platform allows it (a timer signal on
    the main thread, as a Jupyter kernel runs cells); elsewhere the block runs on and its time is reported."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise TookTooLong

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- the exercises' inputs


def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)  # the same inputs on every run and every machine


def topk_cases() -> list[Case]:
    g = generator()
    logits, labels = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    rounded = (torch.randn(64, 10, generator=g) * 2).round()  # few distinct values: ties, as bf16 logits have
    tied_labels = torch.tensor([0, 1, 2, 0, 5, 9])
    return [
        Case("random logits, k=1", (logits, labels, 1)),
        Case("random logits, k=5", (logits, labels, 5)),
        Case("k equal to the number of classes", (logits, labels, 10)),
        Case("one image, 100 classes", (torch.randn(1, 100, generator=g), torch.tensor([42]), 3)),
        Case("tied logits (every score equal), k=1", (torch.zeros(6, 10), tied_labels, 1)),
        Case("tied logits (every score equal), k=3", (torch.zeros(6, 10), tied_labels, 3)),
        Case("rounded logits with many ties, k=2", (rounded, labels, 2)),
    ]


def smoothing_cases() -> list[Case]:
    g = generator()
    logits, labels = torch.randn(32, 10, generator=g), torch.randint(0, 10, (32,), generator=g)
    return [
        Case("random logits, smoothing 0.1", (logits, labels, 0.1)),
        Case("smoothing 0 (plain cross-entropy)", (logits, labels, 0.0)),
        Case("smoothing 1 (a uniform target)", (logits, labels, 1.0)),
        Case("large logits (scores near 1,000: a naive softmax overflows)", (logits * 1000, labels, 0.1)),
        Case("one image, 100 classes", (torch.randn(1, 100, generator=g), torch.tensor([7]), 0.2)),
    ]


class LeftRight(nn.Module):
    """A fixed linear model over all pixels: it tells left from right (and up from down), so a flip shows."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def flip_cases() -> list[Case]:
    g = generator()
    torch.manual_seed(0)  # inside check's fork_rng: the notebook's random stream is untouched
    model, wide = LeftRight().eval(), LeftRight(100).eval()
    return [
        Case("8 random images", (model, torch.randn(8, 3, 32, 32, generator=g))),
        Case("one image", (model, torch.randn(1, 3, 32, 32, generator=g))),
        Case("a model with 100 classes", (wide, torch.randn(4, 3, 32, 32, generator=g))),
    ]


def crop_cases() -> list[Case]:
    g = generator()
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=g)
    return [
        Case("64 random images, padding 4", (images, 4)),
        Case("padding 0 (the images themselves)", (images[:8], 0)),
        Case("8x8 images, padding 2", (torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=g), 2)),
        Case("one image, padding 4", (images[:1], 4)),
    ]


def crop_differs(out: Any, case: Case) -> str | None:
    """A random crop has no single right answer: each output image must be *some* window of its image
    reflect-padded by ``padding``, and the windows must vary between images."""
    images, padding = case.args
    if (problem := difference(out, images)) and "value at" not in problem:
        return problem  # type, shape or dtype
    shifts = list(itertools.product(range(-padding, padding + 1), repeat=2))
    n = len(images)
    windows = torch.stack([crop_at(images, torch.tensor(s)[:, None].expand(2, n)) for s in shifts])
    match = (windows == out[None]).flatten(2).all(2)  # (shifts, images)
    if not match.any(0).all():
        i = int((~match.any(0)).nonzero()[0])
        return (
            f"image {i} is not a {images.shape[2]}x{images.shape[3]} window of itself reflect-padded by {padding} "
            "(reflect mirrors without repeating the edge pixel, as F.pad(..., mode='reflect'))"
        )
    used = {int(match[:, i].nonzero()[0]) for i in range(n)}
    if padding > 0 and n >= 16 and len(used) == 1:
        return f"all {n} images got the same shift {shifts[used.pop()]}; draw one per image"
    return None


def int8_cases() -> list[Case]:
    torch.manual_seed(0)
    return [
        Case("the EX-1 network", (create_model("ex1", 10),)),
        Case("one linear layer", (nn.Linear(10, 3),)),
        Case("convolutions without bias, and batch norm", (create_model("tinyvgg", 10, hidden_units=8),)),
        Case("a convolution without bias", (nn.Conv2d(3, 8, 3, bias=False),)),
    ]


def library_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """The loader's random crop for one batch: a shift per image, reflected at the borders."""
    return crop_at(images, draw_crop_offsets(len(images), padding))


EXERCISES = {
    e.name: e
    for e in (
        Exercise(
            "topk_accuracy", topk_accuracy, "cifarkit.evaluate.topk_accuracy", topk_cases, float, "a Python float"
        ),
        Exercise(
            "smoothed_cross_entropy",
            lambda logits, labels, smoothing: F.cross_entropy(logits, labels, label_smoothing=smoothing),
            "torch.nn.functional.cross_entropy(..., label_smoothing=...)",
            smoothing_cases,
            torch.Tensor,
            "a 0-dimensional tensor",
        ),
        Exercise(
            "flip_tta",
            lambda model, x: tta_forward(model, "flip")(x),
            "cifarkit.evaluate.tta_forward",
            flip_cases,
            torch.Tensor,
            "a tensor",
        ),
        Exercise(
            "random_crop", library_crop, "cifarkit.loader.crop_at", crop_cases, torch.Tensor, "a tensor", crop_differs
        ),
        Exercise(
            "int8_megabytes",
            int8_megabytes,
            "cifarkit.tools.compress.int8_megabytes",
            int8_cases,
            float,
            "a Python float",
        ),
    )
}


# ----------------------------------------------------------------------------- the check


def check(name: str, yours: Callable) -> Answer:
    """Try the learner's ``yours`` on every case of exercise ``name``; the first difference, an exception, or
    a stub that still raises ``NotImplementedError`` ends the check. The answer's ``use`` is the learner's
    function when it passed and the library's otherwise, so the notebook runs on either way. The notebook's
    random stream is left as it was: the cases and a random crop draw from a forked one."""
    if name not in EXERCISES:
        raise ConfigError(f"unknown exercise {name!r}; the exercises are {', '.join(EXERCISES)}")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        return first_difference(EXERCISES[name], yours)


def first_difference(exercise: Exercise, yours: Callable) -> Answer:
    """:func:`check`'s work: the cases in order, the first that fails answers."""
    name, cases = exercise.name, exercise.cases()
    fallback = f"the notebook goes on with `{exercise.library_name}`"
    slowest = (0.0, "")
    for case in cases:
        try:
            problem, seconds = exercise.difference(yours, case)
            slowest = max(slowest, (seconds, case.name))
        except TookTooLong:
            problem = (
                f"ran for more than {CASE_SECONDS:.0f} s and was stopped (the library answers in milliseconds: "
                "a loop over every image or element?)"
            )
        except SystemExit as exc:  # sys.exit() in a learner's function must not end Run All or the series
            problem = (
                f"called sys.exit({exc.code if exc.code is not None else ''}) (SystemExit): return a value instead"
            )
        except NotImplementedError:
            return Answer(
                NOT_DONE,
                f"**{name}: not done yet** (it raises `NotImplementedError`); {fallback}. "
                f"Stuck? A solution is in `solutions/{name}.py`.",
                exercise.library,
            )
        except Exception as exc:  # the learner's code may fail in any way: name it, keep the notebook going
            problem = f"raised {first_line(exc, named=True)}"
        if problem:
            return Answer(
                DIFFERS,
                f"**{name}: differs** on {case.name} (input {describe(case.args)}): {problem}. "
                f"Fix it and rerun this cell; until then {fallback} (or see `solutions/{name}.py`).",
                exercise.library,
            )
    slow = (
        f" Yours took {slowest[0]:.1f} s on {slowest[1]}, where the library takes milliseconds: it will slow the "
        "cells that use it."
        if slowest[0] > SLOW_SECONDS
        else ""
    )
    return Answer(
        PASSED,
        f"**{name}: passed** on {len(cases)} inputs ({'; '.join(c.name for c in cases)}), against "
        f"`{exercise.library_name}`; the notebook uses yours from here.{slow}",
        yours,
    )


SLOW_SECONDS = 1.0  # a passing function slower than this on one small case is named as slow
