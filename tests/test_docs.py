"""The README and docs/: a README a newcomer reads in ten minutes, links that resolve, and numbers that are the
committed example report's (checked here against its JSON), words about the layers that match the imports."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
EXAMPLE = ROOT / "reports" / "examples" / "cifar10-jpeg-quick"
EPYC = ROOT / "reports" / "examples" / "cifar10-jpeg-quick-epyc"  # the example until 2026-12-07, which docs quote
NUMBER = re.compile(r"(?<![\w.])[+-]?\d[\d,]*(?:\.\d+)?")  # a number as prose writes it: 1,440, +0.6, 75.4


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.read_text().splitlines()) <= 250


def test_the_quickstart_is_the_two_commands_and_ci_runs_the_second():
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.strip().splitlines()]
    assert commands == ["make series", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    missing = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
            missing.append(target)
    assert missing == []


def test_every_docs_page_is_linked_from_the_readme():
    text = README.read_text()
    assert [p.name for p in DOCS if f"docs/{p.name}" not in text] == []


def test_the_readme_names_the_notebooks_that_import_tools():
    """The README says which notebooks call tools/ (it once called tools/ "what a learner can skip" while six
    notebooks imported it); the list is the notebooks' own imports."""
    importing = sorted(p.name[:2] for p in (ROOT / "notebooks").glob("*.ipynb") if "cifarkit.tools" in p.read_text())
    assert f"notebooks ({', '.join(importing)}) call it" in README.read_text()


def flat(text: str) -> str:
    """``text`` with every run of white space (line breaks included) as one space, so a sentence is found
    wherever the Markdown wraps it."""
    return " ".join(text.split())


def page_text(html: Path) -> str:
    """An executed notebook's HTML page as its reader sees the words: tags dropped, white space :func:`flat`."""
    return flat(re.sub(r"<[^>]+>", " ", html.read_text()))


def table_rows(text: str, heading: str) -> list[list[str]]:
    """The body rows of the first Markdown table after ``heading`` (indented in a list item or not), as lists of
    stripped cells."""
    lines = [line.strip() for line in text.split(heading, 1)[1].splitlines()]
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), 0)
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # after the header and its rule


def series_cost(folder: Path, time: str) -> tuple[dict, str]:
    """Check a cost row's ``time`` cell against the report ``folder``'s series.json (the total and each notebook's
    seconds); return that series.json and the precision its EX-1 run resolved to, as the table names it."""
    state = json.loads((folder / "series.json").read_text())
    seconds = {name[:2]: entry["seconds"] for name, entry in state["notebooks"].items()}
    assert f"**{round(sum(seconds.values())):,} s" in time
    for number, s in seconds.items():
        assert f"{number} {round(s):,} s" in time, number
    config = next(folder.glob("01_ex1_baseline/*/config.json"), None)
    if config is None:  # a copy of only series.json and the summaries: 01's own note names its precision
        said = json.loads((folder / "summaries" / "01_ex1_baseline.json").read_text())["in_this_run"]
        return state, next(re.search(r"trained in \*\*(\w+)\*\*", s).group(1) for s in said if "trained in **" in s)
    amp = json.loads(config.read_text())["resolved"]["amp"]
    return state, {"off": "fp32"}.get(amp, amp)


def test_the_cost_table_is_the_committed_examples_own_timing():
    """The README's first cost row is the committed example: each notebook's seconds and the total as its
    series.json records them, and the machine and precision its env and runs name."""
    machine, precision, notebooks, time = table_rows(README.read_text(), "## What the quick series costs")[0]
    state, resolved = series_cost(EXAMPLE, time)
    assert state["env"]["cpu_instruction_set"] in machine and f"{state['env']['cpu_count']}-core" in machine
    assert precision == resolved


def test_the_avx2_row_is_its_own_series_timing():
    """The cost table's second row (a CPU with AVX2 only) is its committed series.json: each notebook's seconds,
    the total, the machine's instruction sets and the kernels PyTorch ran, the precision its runs resolved to and
    the commit."""
    machine, precision, _, time = table_rows(README.read_text(), "## What the quick series costs")[1]
    state, resolved = series_cost(ROOT / "reports" / "examples" / "cifar10-jpeg-quick-avx2", time)
    env = state["env"]
    assert env["cpu_instruction_set"] == env["torch_cpu_kernels"] == "AVX2" and "AVX2 only" in machine
    assert f"{env['cpu_count']}-core" in machine and f"commit `{env['git_commit'][:7]}`" in machine
    assert precision.startswith(resolved)  # "fp32 (`--amp auto` on a CPU without bf16)"


def test_each_machine_row_is_its_own_series():
    """docs/results.md's table of the quick series on each machine: every row's total and per-notebook seconds,
    instruction sets, commit and precision are the series.json and runs of the report it links (the README once
    carried three such rows, which moved there)."""
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "## The quick series on each machine")
    assert len(rows) >= 5
    for machine, precision, commit, time, report in rows:
        folder = ROOT / "docs" / re.search(r"\]\(([^)]+)\)", report).group(1)
        state, resolved = series_cost(folder.parent, time)
        env = state["env"]
        assert env["cpu_instruction_set"] in machine and commit == f"`{env['git_commit'][:7]}`", folder.parent.name
        assert precision == resolved, folder.parent.name
    assert any("committed example" in row[4] and "cifar10-jpeg-quick/" in row[4] for row in rows)


def test_the_amx_kernels_and_flagship_in_results_md_are_the_committed_files():
    """The kernels amp-check logged on the Intel CPU with AMX are AMX's bf16 convolutions, as docs/results.md
    says, and its flagship sentence is that machine's flagship.json."""
    folder = ROOT / "reports" / "examples" / "cifar10-jpeg-quick-amx"
    kernels = (folder / "amp-check-flagship.txt").read_text()
    results = flat((ROOT / "docs" / "results.md").read_text())
    assert "brg_conv_fwd:avx10_1_512_amx bf16" in kernels and "brg_conv_fwd:avx10_1_512_amx" in results
    flagship = json.loads((folder / "flagship.json").read_text())
    assert (
        flagship["amp"] == "bf16"
        and (
            f"**{100 * flagship['test_accuracy']:.2f}%** test top-1, {100 * flagship['val_accuracy']:.2f}% validation, in "
            f"{flagship['train_seconds']:.1f} s of training and {flagship['tta_seconds']:.1f} s of TTA"
        )
        in results
    )


def test_every_result_in_the_readme_is_the_committed_examples():
    """Each row of the README's results names the summary key it comes from; its value is that key's."""
    rows = table_rows(README.read_text(), "what it found, each number checked")
    assert len(rows) >= 8
    for _, finding, value, source in rows:
        notebook, key = re.fullmatch(r"`(\d\d_\w+)` `(.+)`", source).groups()
        headline = json.loads((EXAMPLE / "summaries" / f"{notebook}.json").read_text())["headline"]
        want = headline[key]
        shown = value.strip("*")
        if isinstance(want, float):
            assert shown == f"{want:.3f}", (finding, want)
        else:
            assert shown == str(want), (finding, want)


GPU_CHECKS = ROOT / "reports" / "examples" / "h200-gpu-checks"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_gpu_figures_are_the_committed_gpu_checks():
    """docs/gpu.md's H200 table and the README's GPU sentence quote the committed bench, flagship and series
    files: each loader figure, the flagship's per-seed and mean accuracy and time, each notebook's seconds."""
    doc = (ROOT / "docs" / "gpu.md").read_text()
    table = "\n".join(" | ".join(row) for row in table_rows(doc, "<!-- h200-2026-12-04 -->"))
    readme = README.read_text()
    for bench in read_jsonl(GPU_CHECKS / "bench.jsonl"):
        for key in ("cifarkit_img_s", "cifarkit_without_graphs_img_s", "step_limit_img_s"):
            assert f"{round(bench[key]):,}" in table, (bench["batch_size"], key)
        assert f"`fraction_of_limit` **{bench['fraction_of_limit']:.2f}**" in table
        assert f"graphs {bench['graphs_speedup']:.2f}x" in table
    flagship = read_jsonl(GPU_CHECKS / "flagship.jsonl")
    assert len(flagship) == 4 and {run["device"] for run in flagship} == {"cuda"}
    test_mean = sum(run["test_accuracy"] for run in flagship) / 4
    train_mean = sum(run["train_seconds"] for run in flagship) / 4
    assert ", ".join(f"{run['test_accuracy']:.4f}" for run in flagship) in table
    assert ", ".join(f"{run['train_seconds']:.2f}" for run in flagship) in table
    warmups = [run["warmup_seconds"] for run in flagship]
    assert f"warm-up outside the clock {min(warmups):.1f}-{max(warmups):.1f} s" in table
    assert f"({min(warmups):.1f}-{max(warmups):.1f} s of warm-up)" in flat(doc)
    for text in (table, readme):
        assert f"**{100 * test_mean:.2f}%**" in text and f"**{train_mean:.2f} s**" in text
    epochs = [
        b["seconds"] - a["seconds"]
        for run in flagship
        for a, b in zip([{"seconds": 0}, *run["curve"][:-1]], run["curve"], strict=True)
    ]
    assert f"{min(epochs):.2f}-{max(epochs):.2f} s per 44-step epoch" in flat(doc)
    state = json.loads((GPU_CHECKS / "series" / "series.json").read_text())
    finished = {name[:2]: entry["seconds"] for name, entry in state["notebooks"].items() if entry["status"] == "ok"}
    for number, seconds in finished.items():
        assert f"{number} {round(seconds)} s" in table, number
    assert f"({min(finished)}-{max(finished)} took {round(sum(finished.values()))} s)" in readme


def test_the_speedrun_before_and_after_table_is_its_json():
    """docs/results.md's before/after table of the speedrun on the core loop quotes the committed runs."""
    folder = ROOT / "reports" / "examples" / "speedrun-one-loop"
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "<!-- speedrun-one-loop -->")
    assert len(rows) == 2
    versions = ("before", "after", "rerun-0d26764")
    for seed, *cells in rows:
        runs = [json.loads((folder / f"{v}-seed{seed}.json").read_text()) for v in versions]
        assert cells[:3] == [f"{r['val_accuracy']:.4f} / {r['test_accuracy']:.4f}" for r in runs]
        assert cells[3:] == [f"{r['train_seconds']:.1f} s" for r in runs]
        assert all(r["reached_target"] for r in runs)
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "<!-- flagship-one-loop -->")
    assert [row[0] for row in rows] == ["before", "after"]
    for version, val, test, seconds, curve in rows:
        run = json.loads((folder / f"flagship-{version}.json").read_text())
        assert run["recipe"] == "flagship" and run["reached_target"]
        assert [val, test, seconds] == [
            f"{run['val_accuracy']:.4f}",
            f"{run['test_accuracy']:.4f}",
            f"{run['train_seconds']:.1f} s",
        ]
        assert curve == ", ".join(f"{c['val_accuracy']:.4f}" for c in run["curve"])
    readme = flat(README.read_text())
    assert (
        f"flagship reached **{100 * run['test_accuracy']:.2f}%** test top-1 in **{run['train_seconds']:.0f} s**"
        in readme
    )


def deploy_runs(*names: str) -> list[dict[str, dict]]:
    """The committed deploy-bench runs ``reports/examples/int8-pt2e/<name>.jsonl``, each as variant -> row."""
    folder = ROOT / "reports" / "examples" / "int8-pt2e"
    return [
        {r["variant"]: r for r in map(json.loads, (folder / f"{name}.jsonl").read_text().splitlines())}
        for name in names
    ]


def deploy_cells(r: dict, params: bool = True) -> list[str]:
    """A deploy-bench row as the docs' tables round it: accuracy, paired counts, size, (parameters,) latency and
    throughput."""
    return [
        f"{r['accuracy']:.4f}",
        f"{r['fixed']} / {r['broken']}",
        f"{r['size_mb']:.3f} MB",
        *([f"{r['params']:,}"] if params else []),
        f"{r['latency_ms_p50']:.2f} / {r['latency_ms_p95']:.2f} ms",
        f"{r['throughput_img_s']:,.0f} img/s",
    ]


def test_the_int8_table_is_the_committed_deploy_bench_runs():
    """docs/results.md's deployment table, row by row, against the two deploy-bench runs it quotes (FX before,
    torchao PT2E after): accuracy, paired counts, size, parameters, latency and throughput as rounded there."""
    before, after = deploy_runs("before-fx-8dcfef2", "after-pt2e")
    sources = [after["fp32"], before["int8-static"], after["int8-static"], after["pruned-30%"], after["pruned-50%"]]
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "<!-- deploy-int8-pt2e -->")
    assert len(rows) == 6
    for row, r in zip(rows, [*sources, after["onnx"]], strict=True):
        assert row[1:] == deploy_cells(r), row
    results = flat((ROOT / "docs" / "results.md").read_text())
    speedup = after["int8-static"]["throughput_img_s"] / after["fp32"]["throughput_img_s"]
    assert (
        f"same accuracy ({after['int8-static']['accuracy']:.2%} against FX's {before['int8-static']['accuracy']:.2%})"
        in results
        and f"large-batch throughput {speedup:.1f}x fp32's" in results
    )
    for variant in ("fp32", "pruned-30%", "onnx"):  # the other rows did not change with the int8 path
        assert (before[variant]["accuracy"], before[variant]["size_mb"]) == (
            after[variant]["accuracy"],
            after[variant]["size_mb"],
        )


def test_the_int8_avx2_table_is_the_committed_deploy_bench_runs():
    """docs/results.md's int8 rows on a CPU without VNNI against the two deploy-bench runs they quote (8-bit
    activations before, 7-bit now), and the summary sentence on them."""
    before, after = deploy_runs("avx2-8bit-activations", "avx2-7bit-activations")
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "<!-- deploy-int8-avx2 -->")
    for row, r in zip(rows, [after["fp32"], before["int8-static"], after["int8-static"]], strict=True):
        assert row[1:] == deploy_cells(r, params=False), row
    assert before["fp32"]["accuracy"] == after["fp32"]["accuracy"]  # the same checkpoint both times
    results = flat((ROOT / "docs" / "results.md").read_text())
    assert (
        f"{before['int8-static']['accuracy']:.2%} with 8 bits, {after['int8-static']['accuracy']:.2%} with 7" in results
    )


def test_the_exit_status_table_is_the_codes_the_cli_returns():
    """docs/reliability.md's table names exactly the statuses cifarkit.errors defines, and each error type's status
    sits in the row that describes it (a type given a new status, or a new status, shows up here)."""
    from cifarkit import errors

    rows = {int(row[0]): row[2] for row in table_rows((ROOT / "docs" / "reliability.md").read_text(), "exit status")}
    assert set(rows) == {errors.EXIT_USAGE, errors.EXIT_FAILED, errors.EXIT_INTERRUPTED}
    described = {
        errors.TrainingDiverged: "training diverged",
        errors.DiskFull: "a full disk",
        errors.RankLost: "rank of a `torchrun` launch lost",
        errors.DataError: "a missing dataset",
        errors.CheckpointError: "a checkpoint whose class",
        errors.ConfigError: "unknown model",
        errors.OutputError: "an `--out` that cannot be created",
    }
    types = {t for t in vars(errors).values() if isinstance(t, type) and issubclass(t, errors.CifarkitError)}
    assert types - {errors.CifarkitError} == set(described)  # a new error type is placed in the table
    assert {t.__name__: described[t] in rows[t.exit_code] for t in described} == dict.fromkeys(
        (t.__name__ for t in described), True
    )


def test_every_commit_the_text_names_is_in_the_history():
    """Each commit a docs page or the README names (a backticked hash) is in the history of the checkout: a hash
    that an amended or rebased commit left behind points a reader at nothing (one was written, then amended away,
    in one session; a dangling object still answers ``git cat-file``, so ancestry is what is asked)."""
    import subprocess

    shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=ROOT, capture_output=True, text=True)
    if shallow.returncode != 0 or shallow.stdout.strip() != "false":
        pytest.skip("not a git checkout with its whole history")
    pages = [README, *DOCS, *sorted((ROOT / "reports" / "examples").rglob("README.md"))]
    hashes = {h for page in pages for h in re.findall(r"`([0-9a-f]{7,40})`", page.read_text())}
    assert len(hashes) >= 10
    unknown = [
        h
        for h in sorted(hashes)
        if subprocess.run(["git", "merge-base", "--is-ancestor", h, "HEAD"], cwd=ROOT, capture_output=True).returncode
    ]
    assert not unknown, unknown


def is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def test_every_name_the_text_gives_exists():
    """Each ``cifarkit.module.name`` that a docstring, a docs page, the README or a notebook names can be imported
    and looked up, and each ``cifarkit/...py`` or ``tests/...py`` path exists: a rename or a move that left a
    sentence pointing at the old place fails here (a docstring still sent readers to cifarkit.config for a
    settings class that had moved to cifarkit.tools.settings)."""
    texts = [README, *DOCS, *sorted((ROOT / "notebooks").glob("*.ipynb")), *sorted((ROOT / "cifarkit").rglob("*.py"))]
    missing = set()
    for path in texts:
        text = path.read_text()
        for ref in re.findall(r"\bcifarkit(?:\.[A-Za-z_]\w*)+", text):
            parts = ref.split(".")
            depth = next(i for i in range(len(parts), 0, -1) if is_module(".".join(parts[:i])))
            obj = importlib.import_module(".".join(parts[:depth]))
            for name in parts[depth:]:
                obj = getattr(obj, name, missing)
            if obj is missing:
                missing.add((path.name, ref))
        for ref in re.findall(r"\b(?:cifarkit|tests)/[\w/]+\.py\b", text):
            if not (ROOT / ref).exists():
                missing.add((path.name, ref))
    assert sorted(missing) == []


def test_the_amx_comparison_is_both_reports_summaries():
    """docs/results.md's table of the AMX series against the committed example: each value is that report's
    summary headline under the key the row names (fractions to four places), so neither column can drift."""
    text = (ROOT / "docs" / "results.md").read_text()
    rows = table_rows(text, "## 2026-12-06: the quick series on an Intel Xeon with AMX")
    assert len(rows) >= 10
    headlines_are(rows, EPYC, ROOT / "reports" / "examples" / "cifar10-jpeg-quick-amx")


def headlines_are(rows: list[list[str]], *folders: Path) -> None:
    """Each row (notebook number, `key`, then one cell per folder) quotes that report's summary headline under
    the key (fractions to four places)."""
    for number, key, *cells in rows:
        for folder, said in zip(folders, cells, strict=True):
            (summary,) = folder.glob(f"summaries/{number}_*.json")
            value = json.loads(summary.read_text())["headline"][key.strip("`")]
            assert said == (f"{value:.4f}" if isinstance(value, float) else str(value)), (number, key, folder.name)


def test_the_examples_page_names_each_folder_as_its_files_say():
    """reports/examples/README.md lists every folder there, and what it says of each series (its commit, its
    notebooks' seconds, the machine's instruction sets) is that series.json's (the page once described a report
    two regenerations old)."""
    examples = ROOT / "reports" / "examples"
    rows = {
        row[0].split("](")[1].split("/")[0]: row[1]
        for row in table_rows((examples / "README.md").read_text(), "# Example reports")
    }
    assert set(rows) == {p.name for p in examples.iterdir() if p.is_dir()}
    for name in (
        "cifar10-jpeg-quick",
        "cifar10-jpeg-quick-epyc",
        "cifar10-jpeg-quick-avx2",
        "cifar10-jpeg-quick-avx2-kernels",
        "cifar10-jpeg-quick-amx",
        "cifar10-jpeg-03-over-seeds",
        "cifar10-jpeg-02-over-seeds",
        "cifar10-jpeg-quick-amx-over-seeds",
        "cifar10-jpeg-07-over-seeds",
    ):
        state = json.loads((examples / name / "series.json").read_text())
        total = round(sum(entry["seconds"] for entry in state["notebooks"].values()))
        assert f"commit `{state['env']['git_commit'][:7]}`" in rows[name] and f"**{total:,} s**" in rows[name], name
        if not name.endswith("-kernels"):  # that row says how its kernels were held below the machine's
            assert state["env"]["cpu_instruction_set"] in rows[name]
    avx2 = {
        n: json.loads((examples / "cifar10-jpeg-quick-avx2" / "summaries" / f"{n}.json").read_text())
        for n in ("01_ex1_baseline", "08_deploy")
    }
    ex1, int8 = avx2["01_ex1_baseline"]["headline"]["test_accuracy"], avx2["08_deploy"]["headline"]["int8_accuracy"]
    assert (
        f"test top-1 {ex1:.4f}" in rows["cifar10-jpeg-quick-avx2"]
        and f"int8 copy of it {int8:.4f}" in rows["cifar10-jpeg-quick-avx2"]
    )


def test_the_transfer_table_is_the_committed_examples():
    """docs/deployment.md's transfer table is the committed example's 09 summary: each method's mean test top-1 at
    each budget, and the choices the text names (it once quoted a two-seed run of an older budget)."""
    from cifarkit.tools import settings
    from cifarkit.tools.transfer import steps_for

    summary = json.loads((EXAMPLE / "summaries" / "09_transfer.json").read_text())
    headline, profile = summary["headline"], summary["profile"]["transfer"]
    text = (ROOT / "docs" / "deployment.md").read_text()
    rows = table_rows(text, "<!-- transfer-example -->")
    methods = ["EX-1 from scratch", "EX-1 pretrained", "EfficientNet-Lite0 (ImageNet)"]
    assert [int(row[0].replace(",", "")) for row in rows] == profile["labels_per_class"]
    for budget, *cells in rows:
        wanted = [headline[f"test_accuracy[{m}, {budget.replace(',', '')}]"] for m in methods]
        assert cells == [f"{100 * v:.1f}%" for v in wanted], budget
    text = flat(text)  # the sentences below, whatever the line breaks
    powers = {"0.001": "10⁻³", "0.003": "3·10⁻³"}  # the grid's rates as the page writes them
    scratch, pretrained = (headline[f"chosen[{m}]"].split(", lr ") for m in methods[:2])
    assert scratch[0] == pretrained[0] == "trains all layers" and "both EX-1s train all layers" in text
    assert f"from scratch at a learning rate of {powers[scratch[1]]} " in text
    assert f"pretrained at {powers[pretrained[1]]} " in text
    assert f"Lite0 reads {headline['imagenet_input_size']} px input" in text
    assert f"{profile['seeds']} seeds, labels drawn from {profile['pool_per_class']:,} per class" in text
    assert f"{profile['test_images']:,} test images of the vehicles" in text
    quick = settings.PROFILES["quick"].transfer
    assert f"A run takes {quick.steps} steps in quick (batch {quick.batch_size}" in text
    assert f"({steps_for(quick, 1000 * 4)} steps at 1,000 per class)" in text  # four vehicle classes


def test_the_docs_name_the_notebooks_the_bf16_smoke_series_runs():
    """development.md and notebooks.md say which notebooks the suite runs in bf16: the list test_series runs (the
    development page once named the complement of an older list)."""
    listed = re.search(r'BF16_NOTEBOOKS = "([\d,]+)"', (ROOT / "tests" / "test_series.py").read_text()).group(1)
    numbers = listed.split(",")
    said = ", ".join(numbers[:-1]) + " and " + numbers[-1]
    assert f"then {said} in bf16" in (ROOT / "docs" / "development.md").read_text()
    assert f"in bf16 it runs {said}" in flat((ROOT / "docs" / "notebooks.md").read_text())


def test_each_lesson_result_in_results_md_is_in_its_notebooks_own_pages():
    """docs/results.md's account of the committed example, lesson by lesson: every number a "**NN**" bullet
    gives stands in that notebook's executed page or its summary, and each notebook's seconds are its
    series.json's, so the page cannot drift from the report it describes."""
    text = (ROOT / "docs" / "results.md").read_text()
    section = text[text.index("## 2026-12-04") : text.index("## The series, quick profile")]
    bullets = re.findall(r"^- \*\*(\d\d)\*\*:(.*?)(?=^- \*\*|\Z)", section, re.S | re.M)
    assert [n for n, _ in bullets] == ["02", "03", "04", "07", "09"]
    for number, body in bullets:
        pages = [*EPYC.glob(f"notebooks/{number}_*.html"), *EPYC.glob(f"summaries/{number}_*.json")]
        assert len(pages) == 2, number
        own = " ".join(flat(p.read_text()) for p in pages)
        for value in NUMBER.findall(flat(body)):
            assert value in own, (number, value)
    state = json.loads((EPYC / "series.json").read_text())
    times = ", ".join(f"{name[:2]} {round(entry['seconds']):,} s" for name, entry in state["notebooks"].items())
    total = round(sum(entry["seconds"] for entry in state["notebooks"].values()))
    assert f"{total:,} s of notebooks ({times})" in flat(section)


def test_the_deployment_pages_settings_are_deploy_benchs_defaults():
    """docs/deployment.md states how deploy-bench measures (calls timed, warm-up calls, the throughput batch, the
    calibration images, the fine-tune's learning rate): each is DeploySettings' default, so the page follows
    the code when a default changes."""
    from cifarkit.tools.settings import DeploySettings

    d = DeploySettings()
    text = flat((ROOT / "docs" / "deployment.md").read_text())
    assert f"{d.runs} timed calls after {d.warmup} warm-up calls" in text
    assert f"throughput at batch {d.throughput_batch}." in text
    assert f"ranges from {d.calibration_images} training images" in text
    assert f"(Adam {d.finetune_lr:g}, crop+flip, `--finetune-epochs`)" in text
    from cifarkit.tools.deploy import SPREAD

    for worse, better in SPREAD.values():  # the columns of 08's "about the same" are the code's
        assert f"`{better}`/`{worse}`" in text or f"`{worse}`/`{better}`" in text, (worse, better)
    assert "when neither's spread clears the other's (`deploy.faster`)" in text


def test_the_sweep_limit_in_the_commands_page_is_the_codes():
    from cifarkit.tools.sweep import MAX_RUNS

    assert f"more than {MAX_RUNS:,} runs stops" in flat((ROOT / "docs" / "commands.md").read_text())


def test_the_verdicts_over_seeds_table_is_the_committed_03():
    """docs/results.md's table of 03's calibration and learning-rate verdicts per seed quotes the committed 03
    page's own paragraphs: each seed's ECE change and interval, each seed's fixed/broken, each verdict."""
    folder = ROOT / "reports" / "examples" / "cifar10-jpeg-03-over-seeds"
    page = page_text(folder / "notebooks" / "03_augmentation.html")
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "03's calibration and learning-rate verdicts)")
    ece, lr = rows
    for seed, cell in enumerate(ece[1:3]):
        change, low, high = re.fullmatch(r"(\S+ points) \((\S+) to (\S+)\)", cell).groups()
        assert f"{change} at seed {seed} (95% bootstrap interval {low} to {high})" in page, cell
    assert "it raised the calibration error beyond the images' luck at every seed" in page and ece[3] == (
        "raised at every seed"
    )
    assert f"fixed/broken per seed {lr[1]}, {lr[2]}, of 2,400 images" in page
    assert "the suggestion hurt at every seed, beyond noise" in page and lr[3] == "hurt at every seed"
    summary = json.loads((folder / "summaries" / "03_augmentation.json").read_text())
    assert f"lr {summary['headline']['lr_suggested']:.2g}" in lr[0]
    text = flat((ROOT / "docs" / "results.md").read_text())
    means = re.search(r"Mean validation top-1 with the suggestion (\S+) against the recipe's ([\d.]+%)", text).groups()
    assert f"averages {means[0]} against the recipe's {means[1]}" in page
    state = json.loads((folder / "series.json").read_text())
    seconds = state["notebooks"]["03_augmentation"]["seconds"]
    assert f"Commit `{state['env']['git_commit'][:7]}`" in text and f"**{seconds:.0f} s** for 03" in text


def test_the_02_over_seeds_table_is_the_committed_02():
    """docs/results.md's per-seed table of 02 quotes the committed 02 page: each seed's fixed/broken counts and
    whether that seed's paired test is beyond noise, the means and the verdict over seeds, and the run's time."""
    from cifarkit.report.stats import paired_is_noise

    folder = ROOT / "reports" / "examples" / "cifar10-jpeg-02-over-seeds"
    page = page_text(folder / "notebooks" / "02_ex2_bigger_model.html")
    text = (ROOT / "docs" / "results.md").read_text()
    rows = table_rows(text, "02 had the same flaw")
    assert f"fixed/broken per seed {', '.join(r[1] for r in rows)}, paired test" in page
    for seed, (named, counts, said) in enumerate(rows):
        fixed, broken = map(int, counts.split("/"))
        assert named == str(seed) and said == ("within noise" if paired_is_noise(fixed, broken) else "beyond noise")
    headline = json.loads((folder / "summaries" / "02_ex2_bigger_model.json").read_text())["headline"]
    said = flat(text)
    ex2, ref = (f"{100 * headline[k]:.1f}%" for k in ("ex2_val_accuracy", "ref_val_accuracy"))
    assert f"ex2 averages {ex2} and smallcifarnet {ref}" in page and f"paired test: {headline['verdict']})" in page
    assert f"Mean validation top-1 {ex2} (EX-2) against {ref}: **{headline['verdict']}**" in said
    state = json.loads((folder / "series.json").read_text())
    seconds = state["notebooks"]["02_ex2_bigger_model"]["seconds"]
    assert f"`{state['env']['git_commit'][:7]}`, same machine, alone: **{seconds:.0f} s** for 02" in said


def test_the_series_over_seeds_is_compared_with_the_earlier_amx_series_as_their_files_say():
    """docs/results.md compares the quick series after 02 and 03 began to judge over seeds with the earlier one
    on the same machine: its total, its commit and each notebook's before/after seconds are the two series.json's."""
    examples = ROOT / "reports" / "examples"
    before, after = (
        json.loads((examples / name / "series.json").read_text())
        for name in ("cifar10-jpeg-quick-amx", "cifar10-jpeg-quick-amx-over-seeds")
    )
    text = flat((ROOT / "docs" / "results.md").read_text())
    total = round(sum(e["seconds"] for e in after["notebooks"].values()))
    assert f"The whole quick series at commit `{after['env']['git_commit'][:7]}`" in text
    assert f"**{total:,} s** of notebooks against 712 s at `a122c80`" in text
    for name, words in (("02", "rose from"), ("01", "fell from"), ("07", "fell from")):
        key = next(k for k in after["notebooks"] if k.startswith(name))
        was, now = (round(state["notebooks"][key]["seconds"]) for state in (before, after))
        assert f"{words} {was} s to {now} s" in text, (name, was, now)


def test_the_07_over_seeds_table_is_the_committed_07():
    """docs/results.md's per-seed table of 07's pieces quotes the committed 07 page's ablation tables: each seed's
    change of validation top-1 with a piece switched off, whether it is beyond noise, and the verdict over seeds."""
    from cifarkit.report.stats import HELPED, HURT, verdict_over_seeds

    folder = ROOT / "reports" / "examples" / "cifar10-jpeg-07-over-seeds"
    page = page_text(folder / "notebooks" / "07_speedrun.html")
    text = (ROOT / "docs" / "results.md").read_text()
    rows = table_rows(text, "07's ablation of the speedrun's pieces had the same flaw")
    assert len(rows) == 7
    for piece, *cells, verdict in rows:
        seeds = re.findall(rf"- {re.escape(piece)} \S+ (\S+) \d+ \d+ \S+ (True|False)", page)
        assert len(seeds) == len(cells) == 2, piece
        for cell, (delta, within) in zip(cells, seeds, strict=True):
            assert cell == f"{100 * float(delta):+.1f}" + ("" if within == "True" else " (beyond noise)"), piece
        said = verdict_over_seeds([(-float(d), w == "False") for d, w in seeds])
        assert verdict == {HELPED: "earns its place", HURT: "does not pay"}.get(said, said), piece
    state = json.loads((folder / "series.json").read_text())
    seconds = state["notebooks"]["07_speedrun"]["seconds"]
    assert f"commit `{state['env']['git_commit'][:7]}`, same machine, alone: **{seconds:.0f} s** for 07" in flat(text)


def test_the_regenerated_example_is_compared_with_the_previous_one_as_their_summaries_say():
    """docs/results.md's table of what moved when the example report was regenerated: each value is that report's
    summary headline under the key the row names (fractions to four places), and the table names both commits."""
    text = (ROOT / "docs" / "results.md").read_text()
    rows = table_rows(text, "**The example report, regenerated")
    assert len(rows) >= 10
    headlines_are(rows, EPYC, EXAMPLE)
    header = text.split("**The example report, regenerated", 1)[1].split("| --- |", 1)[0]
    for folder in (EPYC, EXAMPLE):
        assert f"`{json.loads((folder / 'series.json').read_text())['env']['git_commit'][:7]}`" in header


def test_the_regenerated_examples_prose_quotes_only_numbers_its_two_reports_show():
    """The paragraph under that table says what moved in words; every number it gives (commit hashes aside) stands
    in one of the two reports' executed pages or summaries, so the prose cannot drift from the tested table."""
    text = (ROOT / "docs" / "results.md").read_text()
    section = text[text.index("**The example report, regenerated") : text.index("## 2026-12-06 (later)")]
    prose = [p for p in section.split("\n\n")[1:] if not p.lstrip().startswith("|")]
    said = re.sub(r"`[0-9a-f]{7}`", "", flat(" ".join(prose)))
    own = " ".join(
        flat(p.read_text())
        for folder in (EXAMPLE, EPYC)
        for p in [*folder.glob("notebooks/*.html"), *folder.glob("summaries/*.json")]
    )
    numbers = NUMBER.findall(said)
    assert len(numbers) >= 5 and [n for n in numbers if n not in own] == []


def test_the_avx2_kernel_cost_of_the_second_seeds_is_both_series():
    """docs/results.md's table of what the second seeds cost with kernels held to AVX2: each notebook's seconds
    before and after are the two committed series.json (each at the commit its column names, its runs on AVX2
    kernels in fp32), the added seconds their difference, and the README quotes the total."""
    folder = ROOT / "reports" / "examples" / "avx2-kernels-added-seeds"
    rows = table_rows((ROOT / "docs" / "results.md").read_text(), "<!-- avx2-kernels-added-seeds -->")
    states = {p.name: json.loads((p / "series.json").read_text()) for p in sorted(folder.iterdir())}
    assert list(states) == ["a122c80", "b121235"]
    for commit, state in states.items():
        assert state["env"]["git_commit"].startswith(commit) and state["env"]["torch_cpu_kernels"] == "AVX2"
        assert state["parameters"]["amp"] == "off"
    seconds = {c: {n[:2]: e["seconds"] for n, e in s["notebooks"].items()} for c, s in states.items()}
    before, after = seconds["a122c80"], seconds["b121235"]
    for number, old, new, added in rows[:-1]:
        n = number[:2]
        assert (old, new, added) == (
            f"{round(before[n])} s",
            f"{round(after[n])} s",
            f"+{round(after[n] - before[n])} s",
        )
    total = round(sum(after.values()) - sum(before.values()))
    assert rows[-1][1:] == [f"{round(sum(before.values())):,} s", f"{round(sum(after.values())):,} s", f"+{total} s"]
    assert f"they cost {total} s with kernels held to AVX2" in flat(README.read_text())
