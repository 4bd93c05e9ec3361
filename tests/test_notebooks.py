"""Committed notebooks: stripped of outputs, a literal-only parameters cell, kernel python3, no reusable code."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
EXPECTED = [
    "00_data_exploration",
    "01_ex1_baseline",
    "02_ex2_bigger_model",
    "03_augmentation",
    "04_tta",
    "05_profiling_analysis",
    "06_compare_runs",
    "07_speedrun",
    "08_deploy",
    "09_transfer",
]
COMMON = {"dataset", "seed", "device", "profile", "report_dir", "interactive"}


def test_the_numbered_series_is_complete():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_clean_and_parameterised(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    import nbformat

    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))  # e.g. every cell has its id (nbformat 4.5)
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "commit without outputs"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    tree = ast.parse("".join(params[0]["source"]))
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign), "parameters cell holds assignments only"
        ast.literal_eval(node.value)  # literals only: papermill does not recompute derived values
        names |= {t.id for t in node.targets}
    assert COMMON <= names
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# ")
    markdown = " ".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert "## Takeaways" in markdown and "## Try it" in markdown


def exercise_stub(tree: ast.Module) -> str | None:
    """The name of a "Your turn" stub, when the cell is exactly one: a function whose body is a docstring and
    ``raise NotImplementedError``, for the learner to fill in."""
    if len(tree.body) != 1 or not isinstance(fn := tree.body[0], ast.FunctionDef) or len(fn.body) != 2:
        return None
    docstring, stub = fn.body
    raises = isinstance(stub, ast.Raise) and getattr(stub.exc, "id", None) == "NotImplementedError"
    return fn.name if ast.get_docstring(fn) and isinstance(docstring, ast.Expr) and raises else None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_defines_no_reusable_code(path):
    """No function, class or lambda in a notebook, except the exercises' stubs, each checked by the next cell."""
    nb = json.loads(path.read_text())
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    for i, source in enumerate(code):
        tree = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith("%")))
        if name := exercise_stub(tree):
            assert code[i + 1] == f"{name} = nb.exercise('{name}', {name})", path.stem
            continue
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), source


def test_five_notebooks_have_an_exercise():
    stubs = {
        path.stem: [exercise_stub(ast.parse("".join(c["source"]))) for c in json.loads(path.read_text())["cells"]
                    if c["cell_type"] == "code" and not "".join(c["source"]).startswith("%")]
        for path in NOTEBOOKS
    }  # fmt: skip
    with_one = {name: [s for s in found if s] for name, found in stubs.items() if any(found)}
    assert with_one == {
        "01_ex1_baseline": ["topk_accuracy"],
        "03_augmentation": ["smoothed_cross_entropy"],
        "04_tta": ["flip_tta"],
        "07_speedrun": ["random_crop"],
        "08_deploy": ["int8_megabytes"],
    }


def test_a_cifarkit_error_in_a_notebook_is_a_short_message_and_marks_the_report(tmp_path):
    """What a learner sees: a mistake they can fix is two lines in the notebook's terms (the parameters
    cell, not a command-line flag); any other exception keeps its traceback; the report says it failed."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        f"from cifarkit.report import notebook\nnb = notebook.start('zz_check', 'synthetic', report_dir=r'{tmp_path}')",
        "from cifarkit.errors import DataError\nraise DataError('offline? put the archive in data/ or use --dataset folder:PATH')",
        "1 / 0",
    ]
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(book, kernel_name="python3", allow_errors=True, timeout=120).execute(cwd=str(tmp_path))
    (brief,) = [o for o in book.cells[1].outputs if o.output_type == "error"]
    assert len(brief.traceback) == 2 and brief.ename == "DataError"
    assert '`dataset = "folder:PATH"` in the parameters cell' in brief.traceback[0]
    (other,) = [o for o in book.cells[2].outputs if o.output_type == "error"]
    assert len(other.traceback) > 2  # an unexpected error still shows where it happened
    summary = json.loads((tmp_path / "summaries" / "zz_check.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith("ZeroDivisionError")


@pytest.mark.slow
@pytest.mark.parametrize(
    "answer,state",
    [
        ("import sys\n    sys.exit(0)", "differs"),  # a learner's sys.exit must not stop Run All
        ("from cifarkit.evaluate import topk_accuracy as library\n    return library(logits, labels, k)", "passed"),
    ],
)
def test_notebook_01_runs_to_the_end_with_a_solved_or_wrong_exercise(tmp_path, answer, state):
    """Notebook 01 in the smoke profile with its exercise answered: it runs to its last cell either way, and its
    summary records what the check found."""
    import nbformat
    from nbclient import NotebookClient

    (path,) = [p for p in NOTEBOOKS if p.name == "01_ex1_baseline.ipynb"]
    book = nbformat.read(path, as_version=4)
    (stub,) = [c for c in book.cells if c.cell_type == "code" and "raise NotImplementedError" in c.source]
    stub.source = stub.source.replace("raise NotImplementedError  # your code here: about three lines", answer)
    params = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    params.source += f"\nprofile = 'smoke'\ndataset = 'synthetic'\ninteractive = False\nreport_dir = r'{tmp_path}'\n"
    NotebookClient(book, kernel_name="python3", timeout=600).execute(cwd=str(path.parent))
    summary = json.loads((tmp_path / "summaries" / "01_ex1_baseline.json").read_text())
    assert summary["status"] == "finished" and summary["headline"]["exercise[topk_accuracy]"] == state


def cell_texts(name: str, kinds: tuple[str, ...] = ("markdown",)) -> str:
    """The fixed text of notebook ``name``: its Markdown cells (and with ``"parameters"`` its parameters cell)."""
    import nbformat

    (path,) = [p for p in NOTEBOOKS if p.name.startswith(name)]
    book = nbformat.read(path, as_version=4)
    return "\n".join(
        c.source
        for c in book.cells
        if c.cell_type in kinds or ("parameters" in kinds and "parameters" in c.metadata.get("tags", []))
    )


DURATION = re.compile(r"\b\d+(?:\.\d+)?\s*(?:s|min|minutes|seconds|hours?)\b(?![-\w])")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_fixed_text_quotes_a_time(path):
    """A time depends on the machine and the code's budgets, and drifted in fixed text (00 said 37 s and 27 s for
    one thing): the footer prints this run's own, the README's cost table each machine's from a report."""
    text = cell_texts(path.stem, ("markdown", "parameters"))
    assert DURATION.findall(text) == [], path.stem


def parameter_names(path: Path) -> list[str]:
    """The names notebook ``path``'s parameters cell sets."""
    cell = cell_texts(path.stem, ("parameters",))
    return [node.targets[0].id for node in ast.parse(cell).body]


def test_the_notebook_terms_know_every_parameter():
    """A message about a parameter reads as a line of the parameters cell only for the names in
    :data:`cifarkit.report.notebook.PARAMETERS`: it held 7 of the 21 names the cells set (01's lr said --lr)."""
    from cifarkit.report.notebook import PARAMETERS, in_notebook_terms

    assert sorted(PARAMETERS) == sorted({name for path in NOTEBOOKS for name in parameter_names(path)})
    assert in_notebook_terms("--lr: -1 must be a finite number > 0") == (
        "`lr` in the parameters cell: -1 must be a finite number > 0"
    )
    assert in_notebook_terms("TrainConfig.epochs: 0 must be an integer").startswith("`epochs` in the parameters cell:")
    assert in_notebook_terms("--torch-profile: x") == "--torch-profile: x"  # not a parameter: the flag's own words


@pytest.mark.parametrize(
    "given,needle",
    [
        ({"seed": 1.5}, "--seed: '1.5' is not an integer"),  # was numpy's TypeError traceback
        ({"seed": "3"}, "--seed: '3' is str; give a number"),  # was a TypeError traceback
        ({"seed": -1}, "--seed: -1 must be an integer >= 0"),
        ({"dataset": ""}, "--dataset: '' is blank"),
        ({"dataset": 5}, "--dataset: 5 is int; give text"),
        ({"interactive": "no"}, "--interactive: 'no' is not True or False"),
        ({"amp": "fp8"}, "--amp: 'fp8' is not one of auto, off, fp16, bf16"),  # the words `series --amp` uses
        ({"report_dir": 5}, "--report-dir: 5 is int; give text"),
        # a notebook's own parameters, which it passes to start(): refused before any cell trains
        ({"target": 70}, "Parameters.target: 70 must be a fraction between 0 and 1"),  # 70%, written as a percent
        ({"per_class": 5000}, "Parameters.per_class: 5000 must be an integer >= 1 and <= 100"),  # a grid of 50,000
        ({"per_class": -1}, "Parameters.per_class: -1 must be an integer >= 1"),  # was the class's images but one
        ({"max_rms": "x"}, "Parameters.max_rms: 'x' is not a number"),  # was numpy's TypeError, after the hashes
        ({"tta_average": "mean"}, "Parameters.tta_average: 'mean' is not one of logits, probs"),
        ({"lr": "0.01"}, "Parameters.lr: '0.01' is str; give a number"),
        ({"colour": 3}, "start() has no parameter 'colour'"),
        ({"all_datasets": "no"}, "Parameters.all_datasets: 'no' is not True or False"),  # a truthy text ranked all
        ({"image_paths": 5}, "Parameters.image_paths: 5 is not a path or a list of paths"),
        ({"ex2_image_size": 5}, "Parameters.ex2_image_size: 5 must be 0 (EX-2's own) or 8 or more"),
    ],
)
def test_a_bad_parameter_is_refused_when_the_notebook_starts(tmp_path, given, needle):
    from cifarkit.errors import ConfigError
    from cifarkit.report import notebook

    values = {"dataset": "synthetic", "device": "cpu", "profile": "smoke", "report_dir": str(tmp_path), **given}
    with pytest.raises(ConfigError, match=re.escape(needle)):
        notebook.start("01_ex1_baseline", **values)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_start_check_its_own_parameters(path):
    """Each parameter a notebook's cell sets beside start()'s own goes to start(), which holds it to its range
    (:class:`cifarkit.report.notebook.Parameters`) before any cell trains."""
    from cifarkit.report.notebook import OWN_PARAMETERS

    code = cell_texts(path.stem, ("code",))
    call = code[code.index("notebook.start(") :].split(")\n", 1)[0]
    own = [name for name in parameter_names(path) if name in OWN_PARAMETERS]
    assert [name for name in own if f"{name}={name}" not in call] == [], path.stem


def try_it(name: str) -> str:
    """The "## Try it" cell of notebook ``name``."""
    (cell,) = [c for c in cell_texts(name).split("\n## ") if c.startswith("Try it")]
    return cell


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_exercise_presumes_this_runs_verdict(path):
    """A verdict belongs to a run: 03's first exercise asked whether crop+flip would turn from "cannot tell" to
    helpful, while both committed example runs say it hurt. An exercise asks which verdicts change; the run's
    own verdicts are the generated notes'."""
    from cifarkit.report.stats import HELPED, HURT

    text = try_it(path.stem)
    said = [w for w in (HELPED, HURT, "cannot tell", "within noise", "beyond noise") if w in text]
    assert said == [], path.stem


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_fixed_prose_never_nests_parentheses(path):
    """A sentence pasted into another's parenthesis ("a rerun takes seconds (This run's own time is in the footer
    above (the README's ...)).", 05 and 06) reads as a garble: prose outside code spans, formulas and link targets
    opens no parenthesis inside another, and closes each it opens."""
    text = re.sub(r"```.*?```|`[^`]*`|\$[^$]*\$|\]\([^)]*\)", "", cell_texts(path.stem), flags=re.S)
    for paragraph in text.split("\n\n"):
        depth = deepest = 0
        for ch in paragraph:
            depth += {"(": 1, ")": -1}.get(ch, 0)
            deepest = max(deepest, depth)
        assert (deepest, depth) in ((0, 0), (1, 0)), paragraph


def test_the_counts_in_fixed_text_are_the_codes():
    """Every count a notebook's fixed Markdown states about what the code does is checked against the code."""
    from cifarkit.config import TrainConfig
    from cifarkit.report import ablation
    from cifarkit.tools import settings
    from cifarkit.tools.lrfinder import lr_range_test

    cfg = TrainConfig()
    arms = dict(ablation.ARMS)
    t03 = cell_texts("03")
    assert f"padded by {cfg.crop_padding} px" in t03
    assert f"zeroes a random {100 * arms['+dropout']['model_kwargs']['dropout']:.0f}%" in t03
    assert f"erases a random {cfg.cutout_size}×{cfg.cutout_size} square" in t03
    smoothing = arms["+label smoothing"]["label_smoothing"]
    assert f"**label smoothing** ({smoothing:g})" in t03 and f"target is {100 * (1 - smoothing):.0f}% on" in t03
    defaults = lr_range_test.__defaults__  # start, end, steps
    assert defaults[:2] == (1e-6, 1.0) and "from 10⁻⁶ to 1" in t03
    assert "a few hundred steps" not in t03  # the sweep's length is the profile's, said by the note
    quick = settings.PROFILES["quick"]
    assert f"30 epochs instead of the quick profile's {quick.epochs}" in cell_texts("01")
    t07 = cell_texts("07")
    held = cfg.val_fraction
    assert f"same {100 * (1 - held):.0f}% of the training split" in t07 and f"held-out {100 * held:.0f}%" in t07
    t09 = cell_texts("09")
    budgets = settings.PROFILES["quick"].transfer.labels_per_class
    assert f"from {budgets[0]:,}, {budgets[1]:,} or {budgets[2]:,} labelled images per class" in t09
    assert "the target classes' test split." not in t09  # quick scores a part of it: the table says how many
    assert "10,000-image" not in cell_texts("06")


def test_the_numbers_in_fixed_descriptions_are_the_codes():
    """00's near-duplicate test, 01's and 02's networks and 05's timing verdict are described in fixed Markdown:
    each number is the default, constant or layer count the code has."""
    import inspect

    import torch

    from cifarkit.models import create_model
    from cifarkit.report import duplicates
    from cifarkit.tools import perflogs

    words = ("no", "one", "two", "three", "four", "five")

    hash_side = inspect.signature(duplicates.average_hash).parameters["side"].default
    thumb_side = inspect.signature(duplicates.thumbnails).parameters["side"].default
    near = inspect.signature(duplicates.near_duplicates).parameters
    t00 = " ".join(cell_texts("00").split())
    assert f"{hash_side**2}-bit average hashes ({hash_side}×{hash_side} grayscale" in t00
    assert f"within {near['max_bits'].default} bits" in t00
    assert (
        f"a {thumb_side}×{thumb_side} colour thumbnail that differs by at most {near['max_rms'].default:g} levels"
        in t00
    )
    ex1, ex2 = create_model("ex1", 10), create_model("ex2", 10)
    convs = [m for m in ex1.modules() if isinstance(m, torch.nn.Conv2d)]
    assert f"{words[len(convs)]} 5×5 convolutions" in cell_texts("01")
    assert {m.kernel_size for m in convs} == {(5, 5)}
    hidden = [m.out_features for m in ex2.modules() if isinstance(m, torch.nn.Linear)][0]
    pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in ex2.modules())
    size = ex2.input_size
    t02 = " ".join(cell_texts("02").split())
    assert f"{words[pools]} conv blocks on {size}×{size} upsampled input, a {hidden}-unit" in t02
    assert f"runs over {(size // 32) ** 2}× more positions" in t02
    t05 = " ".join(cell_texts("05").split())
    assert f"the highest level held for {words[perflogs.SUSTAINED_SAMPLES]} telemetry samples in a row" in t05
    assert f"above {perflogs.OTHER_LOAD_PERCENT:g}% they set the pace too" in t05
    assert f"epochs within {100 * perflogs.PACE_SPREAD:g}% of each other" in t05


def test_the_methods_numbers_in_fixed_text_are_the_codes():
    """03's calibration method, 07's whitening layer and 00's histogram sample are described in fixed Markdown:
    each number is the constant, layer or call the code has."""
    from cifarkit.models import create_model
    from cifarkit.report import calibration
    from cifarkit.speedrun.recipe import RECIPES, model_kwargs

    t03 = " ".join(cell_texts("03").split())
    assert f"into {calibration.BINS} equal-width bins" in t03 and f"({calibration.RESAMPLES:,} resamples" in t03
    whiten = create_model("speednet", 10, **model_kwargs(RECIPES["speedrun"])).whiten
    patch = whiten.in_channels * whiten.kernel_size[0] * whiten.kernel_size[1]
    t07 = " ".join(cell_texts("07").split())
    assert f"the first layer's {whiten.out_channels} filters" in t07 and f"({patch} directions, each with both" in t07
    assert whiten.out_channels == 2 * patch and whiten.kernel_size == (2, 2) and "2x2 patch statistics" in t07
    picked = re.search(r"ds\.train\.pick\((\d+), nb\.seed\)", cell_texts("00", ("code",)))
    assert picked and f"a seeded sample of up to {int(picked[1]):,} training images" in " ".join(
        cell_texts("00").split()
    )
