"""Run the numbered notebooks with papermill into one report folder, and write its index."""

from __future__ import annotations

import contextlib
import gc
import html
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cifarkit.data import load_dataset, project_root
from cifarkit.device import env_info, resolve_amp, resolve_device
from cifarkit.errors import CifarkitError, ConfigError, DiskFull
from cifarkit.report.comparison import same_dataset
from cifarkit.report.notebook import summaries
from cifarkit.runs import ensure_dir, make_run_dir, read_json, read_run, write_json, write_text
from cifarkit.tools.settings import SeriesSettings

KERNEL = "python3"


def notebooks_dir() -> Path:
    """The checkout's ``notebooks/`` folder."""

    root = project_root()
    if root is None or not (root / "notebooks").is_dir():
        raise CifarkitError("notebooks/ not found; run the series from a cifarkit checkout (pip install -e .)")
    return root / "notebooks"


def select_notebooks(only: str | None = None) -> list[Path]:
    """The numbered notebooks in order; ``only="00,03"`` keeps those numbers."""
    books = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if only is not None:
        wanted = {w.strip().zfill(2) for w in only.split(",") if w.strip()}
        if not wanted:
            raise CifarkitError(f"--only {only!r} names no notebook; give numbers such as --only 00,03")
        unknown = wanted - {b.name[:2] for b in books}
        if unknown:
            raise CifarkitError(
                f"--only {only}: no notebook numbered {', '.join(sorted(unknown))}; have "
                f"{', '.join(b.name[:2] for b in books)}"
            )
        books = [b for b in books if b.name[:2] in wanted]
    return books


def execute(nb: Path, out: Path, parameters: dict[str, Any], cwd: Path) -> None:
    """Execute one notebook with papermill (kernel ``python3``), without progress widgets.

    The kernel process's own stderr (not the cells' output, which the notebook keeps) goes to
    ``<out>.kernel.log``, kept only when not empty: its start-up warnings and the ZMQError it prints
    when Ctrl-C shuts it down mid-cell stay off the terminal.
    """
    import papermill as pm

    log = out.with_suffix(".kernel.log")
    declared = pm.inspect_notebook(str(nb))  # e.g. amp only where the notebook trains: no unknown-parameter warning
    try:
        with quiet_on_ctrl_c():
            pm.execute_notebook(
                str(nb),
                str(out),
                parameters={k: v for k, v in parameters.items() if k in declared},
                kernel_name=KERNEL,
                cwd=str(cwd),
                progress_bar=False,
                log_output=False,
                request_save_on_cell_execute=True,
                kernel_manager_class=kernel_manager_logging_to(log),
            )
    finally:
        if log.is_file() and not kernel_log_has_news(log):
            log.unlink()


NOISY_LOGGERS = ("papermill", "nbclient", "asyncio", "traitlets")


@contextlib.contextmanager
def quiet_on_ctrl_c() -> Iterator[None]:
    """While a notebook runs, make Ctrl-C a plain KeyboardInterrupt without the noise of the kernel's
    shutdown (a "Kernel died" error and an unretrieved-task traceback from papermill's event loop)."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is not signal.default_int_handler:
        yield  # not ours to handle (a worker thread, or Ctrl-C ignored / handled by the caller)
        return
    loggers = [logging.getLogger(name) for name in NOISY_LOGGERS]
    was_disabled = [logger.disabled for logger in loggers]

    def interrupt(signum: int, frame: object) -> None:
        for logger in loggers:
            logger.disabled = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        gc.collect()  # let the interrupted event-loop tasks go while their complaints are muted
        for logger, disabled in zip(loggers, was_disabled, strict=True):
            logger.disabled = disabled


def kernel_log_has_news(log: Path) -> bool:
    """Whether a kernel log holds more than the kernel's routine start-up warning."""
    routine = "Kernel is running over TCP without encryption"
    return any(line.strip() and routine not in line for line in log.read_text(errors="replace").splitlines())


def kernel_manager_logging_to(log: Path) -> type:
    """A jupyter_client kernel manager whose kernel writes its stderr to ``log`` (Popen's ``stderr``, which
    ``start_kernel`` passes on as documented)."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            with open(log, "ab") as f:  # the kernel keeps its own copy of the descriptor
                await super().start_kernel(**{"stderr": f, **kw})

    return LoggedKernelManager


def failure_text(exc: BaseException) -> str:
    """One line: which cell failed and why."""
    cell = getattr(exc, "cell_index", None)
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    what = f"{ename}: {evalue}" if ename else f"{exc.__class__.__name__}: {exc}"
    where = f"cell {cell}" if cell is not None else "before any cell ran"
    return f"{where}: {' '.join(str(what).split())[:400]}"


def to_html(nb: Path, hide_code: bool = True) -> Path:
    """Render an executed notebook to HTML next to it (code hidden: the report view)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=True, exclude_output_prompt=True)
    node = nbformat.read(nb, as_version=4)
    show_parameters(node)
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": nb.stem}})
    return write_text(nb.with_suffix(".html"), body)


def show_parameters(node: Any) -> None:
    """Put the parameters papermill ran a notebook with in a small Markdown table where its (hidden) parameters
    cell is, so the report page says what to edit for the exercises."""
    import nbformat

    params = node.metadata.get("papermill", {}).get("parameters", {})
    where = next(
        (i for i, c in enumerate(node.cells) if "injected-parameters" in c.get("metadata", {}).get("tags", [])), None
    )
    if not params or where is None:
        return
    rows = "\n".join(f"| `{k}` | `{v!r}` |" for k, v in params.items())
    text = f"**Parameters of this run** (edit them in the parameters cell, or pass them to the series):\n\n| parameter | value |\n| --- | --- |\n{rows}"
    node.cells.insert(where + 1, nbformat.v4.new_markdown_cell(text))


def check_saved_parameters(saved: dict, resume: str | Path) -> None:
    """Every parameter a report's series.json stores, held by :class:`SeriesSettings`' own checks before any
    kernel starts: a value this cifarkit cannot use (an unknown profile or precision, a seed that is not an
    integer, an empty dataset) would fail in every notebook, so it is one line here."""
    try:
        SeriesSettings(
            dataset=saved["dataset"], profile=saved["profile"], amp=saved.get("amp", "auto"), seed=saved["seed"]
        )
    except ConfigError as exc:
        raise CifarkitError(f"--resume {resume}: its series.json says {exc}; start a new report instead") from None


def run_series(
    settings: SeriesSettings | None = None, device: str = "auto", log: Callable[[str], None] = print
) -> tuple[Path, bool]:
    """Execute the series that ``settings`` describe (default: :class:`SeriesSettings`' defaults) on ``device``;
    return (report folder, every notebook succeeded).

    Stops at the first failing notebook (later ones read its runs), keeps what finished, and
    records the failing cell in series.json. ``resume`` re-enters a report folder, with the
    dataset, profile, seed and precision it was started with, and skips notebooks whose status is ``ok``.
    ``dataset`` defaults to ``cifar10`` (on resume: the report's); ``amp`` (the precision of every notebook that
    trains) to ``auto``, which each run resolves and records in its config.json. Ctrl-C records the interrupted
    notebook in series.json and index.md before it stops. ``total_seconds`` in series.json is the wall time
    of every session the report had (a resumed one adds its own to the earlier total).
    """
    settings = settings or SeriesSettings()
    dataset, profile, amp, seed, out, only, resume = (
        getattr(settings, name) for name in ("dataset", "profile", "amp", "seed", "out", "only", "resume")
    )
    dev = resolve_device(device)
    books = select_notebooks(only)
    if resume:
        report = Path(resume)
        if not (report / "series.json").is_file():
            raise CifarkitError(f"--resume {resume}: no series.json there; pass a series report folder")
        state = read_json(report / "series.json")
        saved = state.get("parameters") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or not {"dataset", "profile", "seed"} <= set(saved):
            raise CifarkitError(
                f"--resume {resume}: its series.json records no series parameters; start a new report instead"
            )
        state.setdefault("notebooks", {})
        if dataset is not None and dataset != saved["dataset"]:
            raise CifarkitError(
                f"--resume {resume} was started on --dataset {saved['dataset']}; leave --dataset out (or pass that)"
            )
        if amp is not None and amp != saved.get("amp", "auto"):
            raise CifarkitError(
                f"--resume {resume} was started with --amp {saved.get('amp', 'auto')}; leave --amp out (or pass that)"
            )
        dataset, profile, seed, amp = saved["dataset"], saved["profile"], saved["seed"], saved.get("amp", "auto")
        check_saved_parameters(saved, resume)
    else:
        dataset = dataset or "cifar10"
        ensure_dir(out, "--out folder")
    amp = amp or "auto"
    resolve_amp(amp, dev)  # fp16 on a CPU fails here, in one line, before any kernel starts
    load_dataset(dataset)  # fail in one line before any kernel starts (offline, missing folder...)
    if not resume:
        report = make_run_dir(out, "series")
        state = {"notebooks": {}}
    report = report.resolve()
    ensure_dir(report / "notebooks", "report folder")
    params = {
        "dataset": dataset,
        "seed": seed,
        "device": device,
        "amp": amp,
        "profile": profile,
        "report_dir": str(report),
        "interactive": False,
    }
    state.update(parameters=params, env=env_info(dev), report_dir=str(report))
    write_json(report / "series.json", state)
    t_series = time.perf_counter()
    current: Path | None = None
    try:
        ok = True
        for i, nb in enumerate(books, start=1):
            current = nb
            ok = run_one(nb, f"[{i}/{len(books)}]", report, state, params, t_series, log)
            if not ok:
                break
        current = None
    except DiskFull:  # the index is written if the disk still takes it; series.json already says what failed
        with contextlib.suppress(OSError):
            end_session(report, state, t_series)
        raise
    except KeyboardInterrupt:  # Ctrl-C: record where it stopped, so the index and --resume know
        if current is not None and state["notebooks"].get(current.stem, {}).get("status") != "ok":
            state["notebooks"][current.stem] = {
                "status": "interrupted",
                "error": "stopped by Ctrl-C",
                "notebook": f"notebooks/{current.name}",
            }
        end_session(report, state, t_series)
        log(
            f"interrupted{f' in {current.name}' if current else ''}; what finished is kept: rerun with --resume {report}"
        )
        raise
    end_session(report, state, t_series)
    return report, ok


def end_session(report: Path, state: dict[str, Any], t_series: float) -> None:
    """Add this session's wall time to ``total_seconds`` (a resumed report keeps its earlier sessions'), then
    write series.json and the index, however the session ended."""
    state["total_seconds"] = round(state.get("total_seconds", 0.0) + time.perf_counter() - t_series, 1)
    write_json(report / "series.json", state)
    write_index(report)


def run_one(
    nb: Path, tag: str, report: Path, state: dict, params: dict, t_series: float, log: Callable[[str], None]
) -> bool:
    """Execute one notebook of the series into ``report`` (unless it finished before), record it in
    series.json, and return whether it succeeded."""
    entry = state["notebooks"].get(nb.stem, {})
    if entry.get("status") == "ok":
        log(f"{tag} {nb.name}: done before, skipped")
        return True
    log(f"{tag} {nb.name} ... (series elapsed {time.perf_counter() - t_series:.0f}s)")
    executed = report / "notebooks" / nb.name
    t0 = time.perf_counter()
    try:
        execute(nb, executed, params, nb.parent)
        entry = {"status": "ok"}
    except Exception as exc:  # papermill raises PapermillExecutionError with the cell; kernels can die too
        entry = {"status": "failed", "error": failure_text(exc)}
    entry.update(
        seconds=round(time.perf_counter() - t0, 1), notebook=f"notebooks/{nb.name}", commit=state["env"]["git_commit"]
    )
    if executed.is_file():
        try:
            entry["html"] = str(to_html(executed).relative_to(report))
        except Exception as exc:  # a rendering problem must not hide the result
            entry["html_error"] = failure_text(exc)
            kept = "complete" if entry["status"] == "ok" else "kept as far as it ran"
            log(
                f"{tag} {nb.name}: HTML rendering failed ({entry['html_error']}); the executed notebook is {kept}: {executed}"
            )
    state["notebooks"][nb.stem] = entry
    write_json(report / "series.json", state)
    log(f"{tag} {nb.name}: {entry['status']} in {entry['seconds']:.0f}s")
    if entry["status"] != "ok" and DISK_FULL in entry["error"]:  # a full disk inside a cell: the user's move, said once
        raise DiskFull(
            f"disk full while {nb.name} ran ({entry['error'].split(':')[0]}) in {report}; what finished is kept: free "
            f"some space and rerun with --resume {report}"
        )
    if entry["status"] != "ok":
        log(f"{nb.name} failed at {entry['error']}")
        log(f"what finished is kept; fix it and rerun with --resume {report}")
        return False
    return True


# ----------------------------------------------------------------------------- index


DISK_FULL = "No space left on device"  # how a full disk reaches the series: the OSError text of a failed cell


def fmt(value: Any) -> str:
    """Numbers to 4 significant places, fractions as they are; everything else as text."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "not recorded" if value is None else str(value)


def best_run(report: Path, dataset: str | None = None) -> dict[str, Any] | None:
    """Of the report's runs on ``dataset`` (all when None; 09's pretraining on part of the classes is another
    dataset) that were evaluated on test (each notebook's chosen model), the one with the highest validation
    top-1: the choice is made on validation, as every choice in the series; its test top-1 only reports.
    Without any tested run: the best on validation, test top-1 None."""
    best = None
    runs = [read_run(p.parent) for p in sorted(report.glob("*/*/train.json"))]
    runs = [r for r in runs if dataset is None or same_dataset(r.config.get("dataset"), dataset)]
    for run in [r for r in runs if r.test] or runs:
        val = run.train.get("best_val_accuracy")
        if val is None or (best is not None and val <= best["val_accuracy"]):
            continue
        best = {
            "run": str(run.path.relative_to(report)),
            "val_accuracy": val,
            "test_accuracy": run.test.get("accuracy"),
            "model": run.config.get("model"),
        }
    return best


def notebook_seconds(state: dict[str, Any]) -> float:
    """What the notebooks as the report holds them took: each one's last run, without the sessions' rendering
    and without runs a rerun replaced (those stay in ``total_seconds``)."""
    return round(sum(e.get("seconds", 0.0) for e in state.get("notebooks", {}).values()), 1)


QUICK_GOAL_SECONDS = 1800  # the quick series fits one sitting on a 2-core AVX2 laptop-class CPU


def machine_text(env: dict, bold: bool = False) -> str:
    """The machine a report ran on, as its index and time table name it: device, its name and, on a CPU, the
    instruction sets that decide its speed and whether bf16 is native (``cpu (AMD EPYC ...; AVX2)``)."""
    device = f"**{env.get('device')}**" if bold else str(env.get("device"))
    isa = f"; {env['cpu_instruction_set']}" if env.get("cpu_instruction_set") and env.get("device") == "cpu" else ""
    return f"{device} ({env.get('device_name')}{isa})"


def time_table(report: Path, goal: float = QUICK_GOAL_SECONDS) -> str:
    """Each notebook's time and the whole series' beside ``goal`` (seconds of notebooks, as the index counts
    them), on the machine the report names: what ``make bench-series`` prints."""
    state = read_json(Path(report) / "series.json")
    env, params = state.get("env", {}), state.get("parameters", {})
    lines = [
        f"{params.get('profile')} series on {params.get('dataset')}, {machine_text(env)}, {env.get('cpu_count')} "
        f"cores, amp {params.get('amp', 'auto')}:"
    ]
    for name, entry in state.get("notebooks", {}).items():
        lines.append(f"  {name:<24} {entry.get('status', '?'):<8} {entry.get('seconds', 0.0):>8,.0f} s")
    total = notebook_seconds(state)
    verdict = "met" if total <= goal else "not met"
    lines.append(
        f"  {'all notebooks':<33} {total:>8,.0f} s ({total / 60:.1f} min); goal {goal:,.0f} s on this machine: {verdict}"
    )
    return "\n".join(lines)


def findings(report: Path, state: dict[str, Any]) -> list[str]:
    """The index's three opening lines: the best model and its test top-1, the notebooks' time and device, and
    what failed, was interrupted or did not run."""
    env, p = state.get("env", {}), state["parameters"]
    best = best_run(report, p.get("dataset"))
    if best is None:
        first = "No training run finished, so there is no best model yet."
    else:
        test = (
            "not evaluated on test" if best["test_accuracy"] is None else f"test top-1 **{best['test_accuracy']:.4f}**"
        )
        first = (
            f"Best model on validation: `{best['model']}` ({best['run']}), validation top-1 "
            f"{best['val_accuracy']:.4f}, {test}."
        )
    second = (
        f"Its notebooks took {fmt(notebook_seconds(state))} s on {machine_text(env, bold=True)}, profile "
        f"{p['profile']}, dataset {p['dataset']}."
    )
    entries = state.get("notebooks", {})
    not_ok = [
        f"{stem} {e.get('status')}" + (f" ({e['error']})" if e.get("error") else "")
        for stem, e in entries.items()
        if e.get("status") != "ok"
    ]
    skipped = [b.stem for b in select_notebooks() if b.stem not in entries]
    third = f"All {len(entries)} notebooks ran." if not not_ok else "Not finished: " + "; ".join(not_ok) + "."
    if skipped:
        third += f" Not run in this report: {', '.join(skipped)}."
    return [first, second + precision_text(report), third]


def precision_text(report: Path) -> str:
    """What the report's runs computed in, from their config.json, and what is known of its effect: a run in a
    reduced precision says that no fp32 twin was measured here (a sentence comparing the two needs one)."""
    runs = (path.parent for path in report.glob("*/*/config.json"))
    used = sorted({read_run(run).config.get("resolved", {}).get("amp") or "off" for run in runs})
    if not used:
        return ""
    names = ", ".join({"off": "fp32"}.get(amp, amp) for amp in used)
    if used == ["off"]:
        return f" Its runs computed in {names}."
    return (
        f" Its runs computed in {names}; no fp32 twin was run in this report, so how much the reduced precision "
        "moved these numbers or their speed was not measured here (`cifarkit amp-check`, or `--amp off`, measures it)."
    )


def index_rows(report: Path) -> list[dict[str, Any]]:
    """One row per notebook: status, time, headline numbers and links."""

    state = read_json(report / "series.json")
    sums = summaries(report)
    rows = []
    for stem, entry in state.get("notebooks", {}).items():
        s = sums.get(stem, {})
        rows.append(
            {
                "notebook": stem,
                "status": entry.get("status"),
                "seconds": entry.get("seconds"),
                "error": entry.get("error"),
                "html": entry.get("html"),
                "ipynb": entry.get("notebook"),
                "html_error": entry.get("html_error"),
                "headline": s.get("headline", {}),
                "figures": s.get("figures", []),
                "runs": s.get("runs", []),
            }
        )
    return rows


def link(report: Path, label: str, path: str | None) -> str:
    """A Markdown link to ``path`` (relative to the report) where that file exists, else ``label`` as plain text
    (a report copied without its large files still has no broken links)."""
    if not path:
        return ""
    return f"[{label}]({path})" if (report / path).exists() else f"{label} (not in this copy)"


def commits_text(state: dict[str, Any]) -> str:
    """The code that ran the notebooks: ``commit `abc``` when it was one, else each commit with the notebooks it
    ran (a resumed report can mix them; a notebook run before commits were recorded is "not recorded")."""

    def label(commit: str | None) -> str:
        return f"`{commit}`" if commit else "not recorded"

    env_commit = state.get("env", {}).get("git_commit")
    recorded = any("commit" in e for e in state["notebooks"].values())
    by_commit: dict[str, list[str]] = {}
    for name, entry in state["notebooks"].items():
        by_commit.setdefault(label(entry.get("commit") if recorded else env_commit), []).append(name[:2])
    if len(by_commit) > 1:
        return "commits " + "; ".join(f"{c} ({', '.join(books)})" for c, books in by_commit.items())
    return f"commit {next(iter(by_commit), label(env_commit))}"  # no notebook yet: the session's own


# what a report folder holds that a committed copy may leave out (see reports/examples/README.md)
LARGE_FILES = {
    "checkpoints (`best.pt`, `last.pt`)": "*/*/*.pt",
    "executed notebooks (`.ipynb`)": "notebooks/*.ipynb",
    "telemetry logs (`perf/`)": "*/*/perf",
    "TensorBoard events (`tensorboard/`)": "*/*/tensorboard",
}


def left_out_line(report: Path) -> list[str]:
    """One line naming the kinds of file listed above that this folder lacks although it holds runs (a copy
    that left the large files out), so a reader knows they are not lost; none for a complete folder."""
    if not any(report.glob("*/*/train.json")):
        return []
    missing = [what for what, pattern in LARGE_FILES.items() if not any(report.glob(pattern))]
    return [f"- Not in this copy: {', '.join(missing)}; run the series to get them."] if missing else []


def write_index(report: Path) -> tuple[Path, Path]:
    """index.md and index.html: findings, parameters, environment, and a table of every notebook's results
    with links to the files that exist."""
    state = read_json(report / "series.json")
    p, env = state["parameters"], state.get("env", {})
    rows = index_rows(report)
    md = [
        f"# cifarkit series report `{report.name}`",
        "",
        *(f"{line}  " for line in findings(report, state)),
        "",
        f"Dataset **{p['dataset']}**, profile **{p['profile']}**, seed {p['seed']}, device "
        f"{machine_text(env, bold=True)}, torch {env.get('torch')}, {commits_text(state)}.",
        f"Wall time of every session of this report, rendering and reruns included: {fmt(state.get('total_seconds'))} "
        "s. Parameters, versions and per-notebook status: [series.json](series.json).",
        "",
        "| notebook | status | time (s) | headline | notebook files |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for r in rows:
        headline = "; ".join(f"{k}: {fmt(v)}" for k, v in r["headline"].items()) or (r["error"] or "")
        links = " · ".join(
            link(report, label, path) for label, path in (("html", r["html"]), ("ipynb", r["ipynb"])) if path
        )
        if r["html_error"]:
            links += f" (no HTML page: rendering failed at {r['html_error']})"
        md.append(f"| {r['notebook']} | {r['status']} | {fmt(r['seconds'])} | {headline.replace('|', '/')} | {links} |")
    md += ["", "## Figures and run folders", ""]
    for r in rows:
        if r["figures"] or r["runs"]:
            md.append(
                f"**{r['notebook']}**: "
                + ", ".join(
                    [link(report, Path(f).stem, f) for f in r["figures"]]
                    + [f"run {link(report, Path(x).name, x)}" for x in r["runs"]]
                )
            )
            md.append("")
    md += [
        "## How to read this folder",
        "",
        "- `notebooks/NN_*.html`: each executed notebook as a page (code hidden); `.ipynb`: with code and outputs.",
        "- `NN_*/<run>/`: one training run: `config.json`, `env.json`, `train.json` (per-epoch lists),",
        "  `test.json` (test metrics), `metrics.jsonl`, `best.pt`, `figures/`, `perf/*.jsonl` (hardware telemetry),",
        "  `tensorboard/` (event files: `tensorboard --logdir` this folder).",
        "- `figures/NN_*/`: the figures each notebook drew; `summaries/`: the headline numbers above as JSON.",
        "- Fractions (accuracy, top-5) are in [0, 1]. Models were chosen on the validation split, never on test.",
        *left_out_line(report),
    ]
    md_path = write_text(report / "index.md", "\n".join(md) + "\n")
    html_path = write_text(report / "index.html", markdown_to_html("\n".join(md), report.name))
    return md_path, html_path


def markdown_to_html(text: str, title: str) -> str:
    """index.md as a standalone HTML page, rendered by mistune (the Markdown library nbconvert already uses)."""
    import mistune

    body = mistune.create_markdown(plugins=["table"])(text)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
