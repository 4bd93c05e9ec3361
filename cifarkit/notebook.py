"""What each notebook calls first: profiles (smoke / quick / full), its report folder, data, figures and summary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .commentary import Note, first_sentences, in_this_run
from .comparison import find_runs
from .config import TrainConfig
from .data import load_dataset, project_root
from .deploy import BenchSettings
from .device import resolve_device, seed_everything
from .engine import fit
from .errors import ConfigError
from .runs import ensure_dir, make_run_dir, read_json, slug, write_json
from .viz import save


@dataclass(frozen=True)
class Profile:
    """How much work a notebook does. ``None`` limits keep the whole split."""

    name: str
    epochs: int  # baseline epochs; notebooks scale from it
    train_images: int | None
    test_images: int | None
    big_model_train_images: int | None  # EX-2 at 128 px and the 32 px reference model are costly on CPU
    big_model_epochs: int
    ablation_train_images: int | None
    ablation_epochs: int
    ablation_hidden_units: int
    tta_test_images: int | None
    speedrun_recipe: str = "speedrun"  # a name from cifarkit.speedrun.RECIPES
    speedrun_ablation_train_images: int | None = None
    course_epochs: int = 10  # the course EX-1 recipe's budget in the 07 race
    deploy_sparsities: tuple[float, ...] = (0.3, 0.5)  # 08: channel shares pruned
    deploy_finetune_epochs: float = 1.0  # 08: fine-tune after each pruning
    deploy_runs: int = 200  # 08: batch-1 calls timed per variant


PROFILES = {
    # CI: every notebook runs end to end in about a minute on a 2-core CPU (synthetic data)
    "smoke": Profile(
        "smoke",
        epochs=2,
        train_images=1000,
        test_images=300,
        big_model_train_images=300,
        big_model_epochs=1,
        ablation_train_images=500,
        ablation_epochs=1,
        ablation_hidden_units=8,
        tta_test_images=200,
        speedrun_recipe="tiny",
        speedrun_ablation_train_images=500,
        course_epochs=2,
        deploy_sparsities=(0.5,),
        deploy_finetune_epochs=0.5,
        deploy_runs=20,
    ),
    # meaningful numbers on a laptop CPU in minutes
    "quick": Profile(
        "quick",
        epochs=12,
        train_images=None,
        test_images=None,
        big_model_train_images=10_000,
        big_model_epochs=4,
        ablation_train_images=20_000,
        ablation_epochs=5,
        ablation_hidden_units=32,
        tta_test_images=None,
        speedrun_recipe="speedrun",
        speedrun_ablation_train_images=15_000,
        course_epochs=10,
    ),
    # the course's settings: for a GPU
    "full": Profile(
        "full",
        epochs=30,
        train_images=None,
        test_images=None,
        big_model_train_images=None,
        big_model_epochs=30,
        ablation_train_images=None,
        ablation_epochs=30,
        ablation_hidden_units=64,
        tta_test_images=None,
        speedrun_recipe="flagship",
        speedrun_ablation_train_images=None,
        course_epochs=30,
        deploy_sparsities=(0.3, 0.5, 0.7),
        deploy_finetune_epochs=3.0,
        deploy_runs=500,
    ),
}


def get_profile(name: str) -> Profile:
    """The named profile, or a one-line error listing the choices."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose {', '.join(PROFILES)}")
    return PROFILES[name]


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
    headline: dict[str, Any] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
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
            self._data = load_dataset(self.dataset)
        train = self.profile.train_images if train_images == "profile" else train_images
        test = self.profile.test_images if test_images == "profile" else test_images
        return self._data.subsample(train, test, seed=self.seed)

    def config(self, **overrides: Any):
        """A TrainConfig with this notebook's dataset, seed and device, plus ``overrides``."""

        return TrainConfig(dataset=self.dataset, seed=self.seed, device=self.device, **overrides)

    def train(self, dataset, test: bool = True, **overrides: Any) -> Path:
        """Train into this notebook's runs folder with profiling on; log a line per epoch; return the run folder."""

        cfg = self.config(**{"telemetry": True, **overrides})
        run = fit(cfg, out=self.runs_dir, dataset=dataset, progress=self.interactive, test=test)
        self.runs.append(str(run.relative_to(self.report_dir)))
        return run

    def run_or_train(self, notebook: str, dataset, **overrides: Any) -> Path:
        """The latest run that ``notebook`` (e.g. ``01_ex1_baseline``) wrote into this report; when there is
        none (this notebook run alone), train one here with ``overrides`` instead. Prints which it used."""
        found = find_runs(self.report_dir / notebook)
        run = found[-1] if found else self.train(dataset, **overrides)
        print(f"using {run}" + ("" if found else f" (trained here: {notebook} has no run in this report)"))
        return run

    def deploy_settings(self) -> BenchSettings:
        """How notebook 08 builds and times the deployment variants under this profile."""
        p = self.profile
        return BenchSettings(
            sparsities=p.deploy_sparsities, finetune_epochs=p.deploy_finetune_epochs, runs=p.deploy_runs, seed=self.seed
        )

    def save(self, fig, name: str):
        """Save a figure under ``figures/<notebook>/<name>.png``, remember it, and return it for display."""

        path = save(fig, self.figures_dir / f"{name}.png")
        self.figures.append(str(path.relative_to(self.report_dir)))
        return fig

    def add_figures(self, paths) -> None:
        """Remember figures saved elsewhere (e.g. by ``viz.plot_perf``) for the report index."""
        self.figures += [str(Path(p).resolve().relative_to(self.report_dir)) for p in paths]

    def note(self, text: Note) -> Note:
        """Show a generated paragraph (a :mod:`cifarkit.commentary` result) and remember it for :meth:`takeaways`."""
        self.notes.append(str(text))
        return text

    def takeaways(self) -> Note:
        """ "In this run": the first sentence of every paragraph :meth:`note` showed, as bullets."""
        return in_this_run(self.notes)

    def finish(self, **headline: Any):
        """Write ``summaries/<notebook>.json`` (headline numbers, figures, runs) for the report index, and
        return the headline as a small table (what the notebook's last cell shows)."""
        import pandas as pd

        self.headline.update(headline)
        write_json(
            self.report_dir / "summaries" / f"{self.notebook}.json",
            {
                "notebook": self.notebook,
                "dataset": self.dataset,
                "profile": asdict(self.profile),
                "seed": self.seed,
                "headline": self.headline,
                "figures": self.figures,
                "runs": self.runs,
                "in_this_run": first_sentences(self.notes),
            },
        )
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in self.headline.values()]
        index = pd.Index(list(self.headline), name=f"headline (summaries/{self.notebook}.json)")
        return pd.DataFrame({"value": values}, index=index)


def start(
    notebook: str,
    dataset: str = "cifar10",
    seed: int = 0,
    device: str = "auto",
    profile: str = "quick",
    report_dir: str = "",
    interactive: bool = True,
) -> NotebookRun:
    """Begin a notebook: validate parameters, pick or create the report folder, seed everything.

    Run by hand with ``report_dir=""``, a notebook gets its own ``reports/<timestamp>-<notebook>/``;
    the series runner passes one shared folder to every notebook.
    """

    prof = get_profile(profile)
    resolve_device(device)  # fail now, in one line, rather than in the first training cell
    if report_dir:
        folder = ensure_dir(report_dir, "report folder")
    else:
        root = project_root() or Path.cwd()
        folder = make_run_dir(root / "reports", slug(notebook))
    seed_everything(seed)
    show_whole_tables()
    return NotebookRun(notebook, dataset, seed, device, prof, folder.resolve(), interactive)


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
