"""What each notebook calls first: its profile (from :mod:`cifarkit.tools.settings`), report folder, data, figures
and summary."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cifarkit.config import (
    IMAGE_SIDES,
    TOP_K,
    TTA_AVERAGES,
    TrainConfig,
    check_settings,
    check_value,
    count,
    fraction,
    non_negative,
    number,
    positive_float,
    positive_int,
    setting,
    text,
)
from cifarkit.config import recipe as named_recipe
from cifarkit.data import load_dataset, project_root, resolve_user_path
from cifarkit.device import (
    accelerator_name,
    cpu_instruction_set,
    git_commit,
    precision_name,
    resolve_amp,
    resolve_device,
    seed_everything,
)
from cifarkit.errors import CifarkitError, ConfigError, duration_text, first_line
from cifarkit.predict import evaluate_run, expand_paths, predict
from cifarkit.report.analysis import validation_correct
from cifarkit.report.commentary import Note, findings, in_this_run
from cifarkit.report.comparison import compare_runs, find_runs, on_dataset
from cifarkit.report.exercises import check
from cifarkit.report.figures import plot_own_predictions, run_callbacks, save, write_test_figures
from cifarkit.runs import ensure_dir, make_run_dir, read_json, read_run, slug, write_json
from cifarkit.tools.perflogs import run_conditions
from cifarkit.tools.settings import DeploySettings, Profile, SeriesSettings, get_profile
from cifarkit.train import fit


@dataclass
class NotebookRun:
    """One notebook's place in a report: parameters, folders, loaded data and the summary it leaves."""

    notebook: str
    dataset: str
    seed: int
    device: str
    profile: Profile
    report_dir: Path
    interactive: bool
    amp: str = "auto"  # the precision every training of this notebook asks for (resolved per run, in config.json)
    started: float = field(default_factory=time.perf_counter)  # when start() ran: the notebook's own time
    computed: bool = False  # whether a network ran here (trained, reused or scored): only then is there a precision
    headline: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exercises: dict[str, str] = field(default_factory=dict)  # each "Your turn" exercise's state
    _data: Any = None

    @property
    def runs_dir(self) -> Path:
        """Where this notebook's training runs go: ``<report>/<notebook>/``."""
        return self.report_dir / self.notebook

    @property
    def figures_dir(self) -> Path:
        return self.report_dir / "figures" / self.notebook

    def data(self, train_images: int | None | str = "profile", test_images: int | None | str = "profile"):
        """The dataset, loaded once per notebook, cut to the profile's sizes (stratified, seeded)."""

        if self._data is None:
            self._data = load_dataset(self.dataset, progress=self.interactive)
        train = self.profile.train_images if train_images == "profile" else train_images
        test = self.profile.test_images if test_images == "profile" else test_images
        return self._data.subsample(train, test, seed=self.seed)

    def config(self, recipe: str | None = None, **overrides: Any) -> TrainConfig:
        """A TrainConfig with this notebook's dataset, seed and device: the named recipe (see
        :data:`cifarkit.config.RECIPES`) or the defaults, plus ``overrides``."""
        mine = {"dataset": self.dataset, "seed": self.seed, "device": self.device, "amp": self.amp, **overrides}
        return named_recipe(recipe, **mine) if recipe else TrainConfig(**mine)

    def train(self, data, test: bool = True, recipe: str | None = None, **overrides: Any) -> Path:
        """Train ``recipe`` (or the defaults) on the loaded dataset ``data`` with ``overrides`` (``dataset``: the
        name its runs record, when ``data`` is a part of this notebook's dataset) into this notebook's runs folder,
        telemetry on; log a line per epoch; return the run folder."""
        cfg = self.config(recipe, **{"telemetry": True, **overrides})
        self.computed = True
        run = fit(cfg, self.runs_dir, data, progress=self.interactive, test=test, callbacks=run_callbacks())
        self.runs.append(str(run.relative_to(self.report_dir)))
        return run

    def evaluate_run(self, run: Path, dataset) -> dict[str, Any]:
        """Score ``run``'s best.pt on ``dataset``'s test split (its test.json) and draw the test figures."""
        result = evaluate_run(run, dataset, self.device)
        write_test_figures(run, result, dataset.classes)
        return result

    def validation_correct(self, runs: dict[str, Path], dataset) -> dict[str, Any]:
        """Each run's per-image right/wrong on the validation images it held out of ``dataset``, by name."""
        return {name: validation_correct(run, dataset, self.device) for name, run in runs.items()}

    def runs_to_compare(self, runs_root: str = "") -> Path:
        """The folder notebook 06 ranks: ``runs_root`` (found from the notebook or the repository root), else
        this report folder; when that holds no run yet, the committed example report, said in one sentence."""
        if runs_root:
            return resolve_user_path(runs_root)
        if find_runs(self.report_dir):
            return self.report_dir
        examples = (project_root() or Path.cwd()) / "reports" / "examples"
        if find_runs(examples):
            print(
                f"This report folder holds no training run yet, so the committed example report is ranked instead "
                f"({examples}); run notebooks 01-03 first, or set runs_root, to rank your own runs."
            )
            return examples
        print("No training run found: run notebooks 01-03 first, or set runs_root to a folder of runs.")
        return self.report_dir

    def ranking(self, runs_root: str = "", all_datasets: bool = False):
        """Notebook 06's runs and table: the runs of :meth:`runs_to_compare` ranked on validation, only those
        on this notebook's dataset unless ``all_datasets`` (the committed examples are ranked whatever their
        dataset); says in one line how many runs the filter hid. Returns (folder, table)."""
        root = self.runs_to_compare(runs_root)
        everything = compare_runs(root)
        if all_datasets or root.name == "examples" or everything.empty:
            return root, everything
        table = on_dataset(everything, self.dataset)
        if len(table) < len(everything):
            print(
                f"{len(everything) - len(table)} of {len(everything)} runs in {root} are on another dataset than "
                f"{self.dataset} and are not ranked; set all_datasets = True to rank them all."
            )
        return root, table

    def own_images(self, predictor, image_paths, tta: str = "none", topk: int = TOP_K):
        """Your images (files or folders, from the notebook or the repository root), each beside its top-k
        classes in percent; a one-line hint when ``image_paths`` is empty. One path alone is read as a list of one."""
        files = expand_paths([image_paths] if isinstance(image_paths, (str, Path)) else image_paths)
        if not files:
            print("No images given: put file or folder paths in image_paths (e.g. ['my_photo.jpg']) and rerun.")
            return None
        table = predict(predictor, files, tta=tta, topk=topk)
        images = []
        for f in files:
            try:
                images.append(predictor.to_uint8(f))
            except CifarkitError:
                images.append(None)
        return self.save(plot_own_predictions(images, table, [str(f) for f in files]), "your_images")

    def run_from(
        self,
        notebook: str,
        dataset=None,
        recipe: str | None = None,
        *,
        identical: bool = False,
        test: bool = True,
        **overrides: Any,
    ) -> Path:
        """The run ``notebook`` (e.g. ``01_ex1_baseline``) wrote into this report, else one trained here by
        :meth:`train` with these arguments (this notebook ran alone). With ``identical``, only a run that this
        training would repeat bit for bit counts (:meth:`_identical_run`): its curve and time then stand in
        for this notebook's own. ``dataset``: what it trains on (default: this notebook's :meth:`data`). Prints
        which it used."""
        found = None if identical else next(reversed(find_runs(self.report_dir / notebook)), None)
        if dataset is None and found is None:
            dataset = self.data()
        if identical:
            found = self._identical_run(notebook, dataset, self.config(recipe, **{"telemetry": True, **overrides}))
        if found is None:
            missing = "no identical run on a quiet machine" if identical else "no run"
            print(f"training here: {notebook} has {missing} in this report")
            return self.train(dataset, test=test, recipe=recipe, **overrides)
        self.computed = True
        name = found.relative_to(self.report_dir)
        if not identical:
            print(f"using {name}, the latest run of {notebook} in this report")
            return found
        print(
            f"reusing {name}: {notebook} trained exactly this (same settings, seed, data and commit) on a quiet "
            "machine, so its curve and training time are this run's, measured there"
        )
        self.runs.append(str(name))
        return found

    def _identical_run(self, notebook: str, dataset, cfg: TrainConfig) -> Path | None:
        """The latest run ``notebook`` wrote into this report with ``cfg``'s settings and seed (config.json), the
        same data sizes (env.json), the same code (its recorded commit, not a modified copy) and a timing
        verdict of ``clean`` (a quiet machine, :func:`~cifarkit.tools.perflogs.run_conditions`)."""
        wanted = json.loads(json.dumps(cfg.to_dict()))
        commit = git_commit()
        if commit is None or commit.endswith("+dirty"):
            return None
        for run in reversed(find_runs(self.report_dir / notebook)):
            files = read_run(run)
            same = (
                {k: v for k, v in files.config.items() if k != "resolved"} == wanted
                and (files.env.get("train_images") or 0) + (files.env.get("val_images") or 0) == len(dataset.train)
                and files.env.get("git_commit") == commit
            )
            if same and run_conditions(run)["clean"]:
                return run
        return None

    def compute(self) -> tuple[Any, str]:
        """The device and the precision (``device`` and ``amp`` resolved) that a notebook's own loops run in."""
        device = resolve_device(self.device)
        self.computed = True
        return device, resolve_amp(self.amp, device)

    def deploy_settings(self) -> DeploySettings:
        """How notebook 08 builds and times the deployment variants: the profile's, with this notebook's seed."""
        return replace(self.profile.deploy, seed=self.seed)

    def save(self, fig, name: str):
        """Save a figure under ``figures/<notebook>/<name>.png``, remember it, and return it for display."""

        path = save(fig, self.figures_dir / f"{name}.png")
        self.figures.append(str(path.relative_to(self.report_dir)))
        return fig

    def add_figures(self, paths) -> None:
        """Remember figures saved elsewhere (e.g. by :func:`cifarkit.report.figures.plot_perf`) for the report index."""
        self.figures += [str(Path(p).resolve().relative_to(self.report_dir)) for p in paths]

    def note(self, text: Note) -> None:
        """Show a generated paragraph (a :mod:`cifarkit.report.commentary` result) and remember it for
        :meth:`takeaways`. It is displayed by this call, not returned, so a cell with two notes shows both
        (a cell shows only its last expression) and the executed notebook and its HTML hold every one."""
        self.notes.append(text)
        show(text)

    def exercise(self, name: str, yours: Callable) -> Callable:
        """A "Your turn" check (:func:`cifarkit.report.exercises.check`): shows its one-line answer, keeps the
        state for the summary, and returns the function the notebook goes on with: yours once it passes,
        the library's until then."""
        answer = check(name, yours)
        self.exercises[name] = answer.state
        show(Note(answer.line))
        return answer.use

    def takeaways(self) -> Note:
        """The "In this run" list: what every paragraph :meth:`note` showed found (its finding), as bullets."""
        return in_this_run(self.notes)

    def write_summary(self, status: str, error: str | None = None) -> None:
        """``summaries/<notebook>.json``: the status (``running``, ``failed`` with its error, ``finished``),
        headline numbers, figures and runs, so a report folder says what happened in it, failures included."""
        write_json(
            self.report_dir / "summaries" / f"{self.notebook}.json",
            {
                "notebook": self.notebook,
                "status": status,
                **({"error": error} if error else {}),
                "dataset": self.dataset,
                "profile": asdict(self.profile),
                "seed": self.seed,
                "headline": self.headline,
                "figures": self.figures,
                "runs": self.runs,
                "in_this_run": findings(self.notes),
            },
        )

    def record_failures(self) -> None:
        """In IPython: a cell that fails marks this notebook ``failed`` in its summary (with the error's first
        line), so a report folder left by a failed run says so instead of sitting there empty."""
        shell = ipython_shell()
        if shell is None:
            return

        def after(result: Any) -> None:
            error = getattr(result, "error_in_exec", None)
            if error is not None:
                self.write_summary("failed", first_line(error, named=True))

        for old in [cb for cb in shell.events.callbacks["post_run_cell"] if getattr(cb, "__name__", "") == "after"]:
            shell.events.unregister("post_run_cell", old)  # a rerun of the first cells replaces the hook
        shell.events.register("post_run_cell", after)

    def own_cost(self) -> Note:
        """What this run of the notebook cost on this machine, so a learner plans by their own machine: the
        fixed costs in the parameters cell and the Try-it cells are those of the machine they name. A precision
        is named only where a network ran (a notebook that reads files computes in none)."""
        device = resolve_device(self.device)
        seconds = time.perf_counter() - self.started
        precision = f", precision {precision_name(self.amp, device)}" if self.computed else ""
        return Note(
            f"This run of the notebook took **{duration_text(seconds)}** from its first cell on {device} "
            f"({accelerator_name(device)}; {cpu_instruction_set() if device.type == 'cpu' else 'GPU'}), profile "
            f"`{self.profile.name}`{precision}: a rerun here costs about the same. The README's cost table gives "
            "each notebook's time on the machines it was measured on."
        )

    def finish(self, **headline: Any):
        """Write ``summaries/<notebook>.json`` (headline numbers, figures, runs) for the report index, and
        return the headline as a small table (what the notebook's last cell shows)."""
        import pandas as pd

        self.headline.update(headline)
        self.headline.update({f"exercise[{name}]": state for name, state in self.exercises.items()})
        self.write_summary("finished")
        show(self.own_cost())
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in self.headline.values()]
        index = pd.Index(list(self.headline), name=f"headline (summaries/{self.notebook}.json)")
        return pd.DataFrame({"value": values}, index=index)


@dataclass(frozen=True)
class Parameters:
    """What a notebook's parameters cell sets beside :func:`start`'s own arguments, each held to the range the
    command line holds the same kind of setting to; ``None``: the notebook has no such parameter. Each notebook
    passes its own to :func:`start`, so a bad one stops the first cell, before any training."""

    epochs: int | None = setting(None, type=count)  # 0: the profile's
    lr: float | None = setting(None, type=positive_float)
    batch_size: int | None = setting(None, type=positive_int)
    augment: str | None = setting(None, type=text)
    per_class: int | None = setting(None, type=number(int, 1, 100))  # 00's sample grid: a row of this many a class
    max_rms: float | None = setting(None, type=number(float, 0, 255))  # 00's near-duplicate threshold, of 255 levels
    reference_model: str | None = setting(None, type=text)
    ex2_image_size: int | None = setting(None, type=number(int, 0, IMAGE_SIDES[1]))  # 0: EX-2's own
    image_paths: list[str] | str | None = None  # files or folders
    tta_average: str | None = setting(None, choices=TTA_AVERAGES)
    runs_root: str | None = None
    all_datasets: bool | None = None
    target: float | None = setting(None, type=fraction)  # 07's race: a validation top-1, 0.7 for 70%
    recipe_epochs: float | None = setting(None, type=non_negative)  # 0: the recipe's own length

    def __post_init__(self) -> None:
        check_settings(self)  # what it cannot read as the command line would: a list, a side's gap
        if self.image_paths is not None and not isinstance(self.image_paths, (str, Path, list, tuple)):
            raise ConfigError(f"Parameters.image_paths: {self.image_paths!r} is not a path or a list of paths")
        if self.ex2_image_size and self.ex2_image_size < IMAGE_SIDES[0]:
            raise ConfigError(f"Parameters.ex2_image_size: {self.ex2_image_size} must be 0 (EX-2's own) or 8 or more")


def start(
    notebook: str,
    dataset: str = "cifar10",
    seed: int = 0,
    device: str = "auto",
    profile: str = "quick",
    report_dir: str = "",
    interactive: bool = True,
    amp: str = "auto",
    **parameters: Any,
) -> NotebookRun:
    """Begin a notebook: validate parameters (the notebook's own ones too, see :class:`Parameters`), pick or
    create the report folder, seed everything.

    Run by hand with ``report_dir=""``, a notebook gets its own ``reports/<timestamp>-<notebook>/``;
    the series runner passes one shared folder to every notebook.
    """

    show_errors_briefly()
    prof = get_profile(profile)
    SeriesSettings(dataset=dataset, profile=profile, amp=amp, seed=seed)  # held as `cifarkit series` holds them
    check_value("--device", device, text)
    check_value("--report-dir", report_dir, str)
    if not isinstance(interactive, bool):
        raise ConfigError(f"--interactive: {interactive!r} is not True or False")
    unknown = sorted(set(parameters) - set(OWN_PARAMETERS))
    if unknown:
        raise ConfigError(f"start() has no parameter {unknown[0]!r}; the notebooks' own: {', '.join(OWN_PARAMETERS)}")
    Parameters(**parameters)
    resolve_amp(amp, resolve_device(device))  # fail now, in one line, rather than in the first training cell
    if report_dir:
        folder = ensure_dir(report_dir, "report folder")
    else:
        root = project_root() or Path.cwd()
        folder = make_run_dir(root / "reports", slug(notebook))
    seed_everything(seed)
    show_whole_tables()
    nb = NotebookRun(notebook, dataset, seed, device, prof, folder.resolve(), interactive, amp)
    nb.write_summary("running")
    nb.record_failures()
    return nb


# every name a notebook's parameters cell sets: start()'s own, then the notebooks' (a test holds it to the notebooks)
OWN_PARAMETERS = tuple(f.name for f in fields(Parameters))
PARAMETERS = ("dataset", "seed", "device", "amp", "profile", "report_dir", "interactive") + OWN_PARAMETERS


def in_notebook_terms(message: str) -> str:
    """A library message in a notebook's own terms: ``--dataset folder:PATH`` (a command-line flag) reads
    ``dataset = "folder:PATH"`` (a line of the parameters cell), and a setting's check ``--lr: -1 must be ...``
    (``TrainConfig.epochs: ...`` or ``Parameters.target: ...`` for a setting with no flag of its own) reads
    ``lr`` in the parameters cell."""

    def swap(m: re.Match) -> str:
        name = m.group(1).replace("-", "_")
        if name not in PARAMETERS:
            return m.group(0)
        return (
            f"`{name}` in the parameters cell:"
            if m.group(2) is None
            else f'`{name} = "{m.group(2)}"` in the parameters cell'
        )

    return re.sub(r"(?:--|\b(?:TrainConfig|Parameters)\.)([a-z][a-z_-]*)(?::|[ =]([^\s;,)]+))", swap, message)


def show(text: Note) -> None:
    """Display Markdown in a notebook (as a cell output, so nbconvert's HTML has it too); print it elsewhere."""
    if ipython_shell() is None:
        print(text)
        return
    from IPython.display import display

    display(text)


def ipython_shell() -> Any:
    """The running IPython shell (a notebook's kernel), or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def show_errors_briefly() -> None:
    """In IPython, show a cifarkit error (a mistake a learner can fix) as a short message in the notebook's
    terms instead of the library's traceback; other exceptions keep theirs. The cell still fails, so
    Run All stops there and the series runner records it; ``%tb`` shows the full traceback."""
    shell = ipython_shell()
    if shell is None:
        return

    def brief(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # for %tb
        stb = [
            f"\x1b[0;31m{etype.__name__}\x1b[0m: {in_notebook_terms(str(value))}",
            "Change what the message names (usually a line of the parameters cell) and run the cells again.",
        ]
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((CifarkitError,), brief)


def show_whole_tables() -> None:
    """pandas shows every column and the full text of each cell (run names, errors), four decimals."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 200)
    pd.set_option("display.precision", 4)


def show_source(*objects: Any):
    """The library's own source of ``objects`` (functions, methods, classes) as a Markdown code block with
    its file and line: a "look inside" cell shows the real mechanism without the notebook redefining it."""
    import inspect

    blocks = []
    for obj in objects:
        lines, start = inspect.getsourcelines(obj)
        where = f"{obj.__module__}.{obj.__qualname__}"
        blocks.append(
            f"`{where}` (line {start} of `{obj.__module__.replace('.', '/')}.py`):\n\n```python\n"
            f"{''.join(lines).rstrip()}\n```"
        )
    return Note("\n\n".join(blocks))


def summaries(report_dir: str | Path) -> dict[str, dict]:
    """Every notebook summary written into a report folder, keyed by notebook name."""
    folder = Path(report_dir) / "summaries"
    return {p.stem: read_json(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}
