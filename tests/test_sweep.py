"""sweep: grids and lists of train configs as processes, checked first, one run folder each, resumable."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from cifarkit.cli import build_parser, config_from_args
from cifarkit.errors import ConfigError, DataError
from cifarkit.report.comparison import compare_runs
from cifarkit.tools.settings import Slurm
from cifarkit.tools.sweep import SweepRun, load_sweep, run_sweep, state_of

BASE = {"model": "ex1", "dataset": "synthetic:classes=3,train=12,test=4", "epochs": 1, "batch-size": 16}


def write(tmp_path: Path, spec) -> Path:
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(spec) if not isinstance(spec, str) else spec)
    return path


def test_grid_runs_every_combination_in_a_stable_order(tmp_path):
    runs = load_sweep(write(tmp_path, {"base": BASE, "grid": {"lr": [0.001, 0.01], "optimizer": ["adam", "sgd"]}}))
    assert [r.name for r in runs] == [
        "00-lr-0.001-optimizer-adam",
        "01-lr-0.001-optimizer-sgd",
        "02-lr-0.01-optimizer-adam",
        "03-lr-0.01-optimizer-sgd",
    ]
    assert runs[3].options == {**BASE, "lr": 0.01, "optimizer": "sgd"}
    assert runs[3].argv()[:2] == ["--model", "ex1"] and "--batch-size" in runs[3].argv()
    listed = load_sweep(write(tmp_path, {"base": BASE, "runs": [{"lr": 0.1}, {"telemetry": True}]}))
    assert [r.name for r in listed] == ["00-lr-0.1", "01-telemetry-true"] and listed[1].argv()[-1] == "--telemetry"
    assert SweepRun("x", {"deterministic": False, "image_size": None}).argv() == ["--no-deterministic"]


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("{not json", "is not JSON"),
        ({"base": BASE}, "exactly one of 'grid' or 'runs'"),
        ({"base": BASE, "grid": {"lr": [0.1]}, "runs": [{}]}, "exactly one of"),
        ({"base": BASE, "grid": {"lr": []}}, "non-empty list"),
        ({"base": BASE, "grid": {}}, "at least one option"),  # as 'runs': [] is refused, not one base run
        ({"base": BASE, "runs": []}, "non-empty list of option objects"),
        # the same training twice (a value listed twice): refused before it costs a second run
        ({"base": BASE, "grid": {"lr": [0.001, 0.01, 1e-3]}}, "runs 00-lr-0.001 and 02-lr-0.001 have the same options"),
        ({"base": {**BASE, "lr": 0.01}, "runs": [{}, {"lr": 0.01}]}, "runs 00-base and 01-lr-0.01 have the same"),
        # a grid too large to list: refused from its size before a trillion option sets fill the memory
        (
            {"base": BASE, "grid": {f"o{i}": list(range(10)) for i in range(12)}},
            r"makes 1,000,000,000,000 runs \(10 o0 x",
        ),
        ({"base": BASE, "runs": [{"lr": i + 1} for i in range(1001)]}, "lists 1,001 runs; at most 1,000, so split it"),
    ],
)
def test_bad_sweep_files_are_named(tmp_path, spec, needle):
    with pytest.raises((ConfigError, DataError), match=needle):
        load_sweep(write(tmp_path, spec))


@pytest.mark.parametrize(
    "runs,needle",
    [
        ([{"lr": -1}], "sweep run 01-lr--1: argument --lr: -1 must be a finite number > 0"),
        ([{"colour": "red"}], "sweep run 01-colour-red: unrecognized arguments: --colour red"),
        ([{"out": "x"}], "set by the sweep itself"),
    ],
)
def test_every_config_is_checked_before_anything_runs(tmp_path, cli, runs, needle):
    code, out, err = cli(
        "sweep", write(tmp_path, {"base": BASE, "runs": [{"lr": 0.01}, *runs]}), "--out", tmp_path / "o"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()  # nothing started


def test_sweep_runs_in_parallel_writes_normal_runs_and_resumes(tmp_path, cli):
    config = write(tmp_path, {"base": BASE, "grid": {"lr": [0.001, 0.01]}})
    code, out, err = cli("sweep", config, "--workers", "2", "--out", tmp_path / "o")
    assert code == 0, err
    assert out.strip().splitlines()[-1] == f"2 of 2 run(s) done in {tmp_path / 'o'}"
    table = compare_runs(tmp_path / "o")  # notebook 06 ranks them like any run
    assert len(table) == 2 and sorted(table["run"].str[:2]) == ["00", "01"]
    summary = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["done", "done"] and summary["workers"] == 2
    code, out, _ = cli("sweep", config, "--out", tmp_path / "o")  # again: nothing left to do
    assert code == 0 and out.count("done already") == 2


def test_state_of_a_run_folder(tmp_path):
    assert state_of(tmp_path / "missing") == ("new", None)
    run = tmp_path / "00-x" / "20261123-000000-ex1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    assert state_of(tmp_path / "00-x") == ("new", None)  # stopped before its first checkpoint
    (run / "last.pt").write_bytes(b"")
    assert state_of(tmp_path / "00-x") == ("stopped", run / "last.pt")
    (run / "train.json").write_text("{}")
    assert state_of(tmp_path / "00-x") == ("stopped", run / "last.pt")  # killed before test.json: finish it
    (run / "test.json").write_text("{}")
    assert state_of(tmp_path / "00-x") == ("done", run)


def check_with_train_parser(argv: list[str]):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_slurm_executor_submits_one_job_per_run_through_submitit(tmp_path):
    # submitit's "local" cluster runs the very jobs --executor slurm submits, as local processes
    runs = [{"lr": 0.01}, {"dataset": f"folder:{tmp_path / 'missing'}"}]
    config = write(tmp_path, {"base": BASE, "runs": runs})
    said: list[str] = []
    results = run_sweep(config, tmp_path / "o", check_with_train_parser, 2, said.append, Slurm(cluster="local", cpus=1))
    assert [r["status"] for r in results] == ["done", "failed"] and results[1]["exit"] == 2
    assert Path(results[0]["run"]).parent.name.startswith(results[0]["name"] + "-")
    assert (Path(results[0]["run"]) / "best.pt").is_file()
    failed_log = next((tmp_path / "o").glob("01-*/train.log")).read_text()
    assert "cifarkit train: error:" in failed_log and "Traceback" not in failed_log
    jobs = [p.name for p in (tmp_path / "o" / "slurm").iterdir() if p.name != "%j"]  # %j: submitit's batch folder
    assert len(jobs) == 2 and all(name.isdigit() for name in jobs)  # one job folder per run
    assert said[0].startswith("2 run(s), 2 submitted to local: jobs ")
    again = run_sweep(config, tmp_path / "o", check_with_train_parser, 2, said.append, Slurm(cluster="local", cpus=1))
    assert again[0].get("skipped") and again[1]["status"] == "failed"  # the finished run is not submitted again


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has SLURM")
@pytest.mark.parametrize("workers,said", [(0, "workers: 0 must be an integer >= 1"), (1.5, "'1.5' is not an integer")])
def test_a_callers_worker_count_is_checked_as_the_command_line_checks_it(tmp_path, workers, said):
    """--workers 0 was refused by the command line, but run_sweep(workers=0) reached ThreadPoolExecutor's error."""
    config = write(tmp_path, {"base": BASE, "grid": {"lr": [0.001]}})
    with pytest.raises(ConfigError, match=re.escape(said)):
        run_sweep(config, tmp_path / "o", check_with_train_parser, workers)
    assert not (tmp_path / "o").exists()


def test_sweeps_options_come_from_sweep_settings(cli):
    from cifarkit.tools.settings import SweepSettings

    args = build_parser().parse_args(["sweep", "s.json"])
    assert (args.workers, args.out, args.executor) == (SweepSettings.workers, None, SweepSettings.executor)
    code, _, err = cli("sweep", "s.json", "--executor", "pbs")
    assert code == 2 and "argument --executor: invalid choice: 'pbs'" in err and "slurm" in err, err


def test_slurm_executor_without_slurm_fails_in_one_line(tmp_path, cli):
    config = write(tmp_path, {"base": BASE, "grid": {"lr": [0.01]}})
    code, _, err = cli("sweep", config, "--executor", "slurm", "--out", tmp_path / "o")
    assert code == 2 and err.strip().splitlines() == [
        "cifarkit sweep: error: --executor slurm needs SLURM's sbatch on PATH; run the sweep on the cluster's login node"
    ]


def test_each_run_config_carries_every_value_of_its_sweep_file(tmp_path, cli, monkeypatch):
    """A false switch reaches the run (it is not dropped), and the default output folder is the sweep file's own."""
    monkeypatch.chdir(tmp_path)
    spec = {"base": {**BASE, "deterministic": False, "compile": False}, "grid": {"lr": [0.002, 0.02]}}
    config = write(tmp_path, spec)
    code, out, err = cli("sweep", config)
    assert code == 0, err
    out_dir = Path("reports/sweeps/sweep")  # named after sweep.json
    assert out.strip().splitlines()[-1] == f"2 of 2 run(s) done in {out_dir}"
    saved = sorted((json.loads(p.read_text()) for p in out_dir.glob("*/*/config.json")), key=lambda c: c["lr"])
    assert [c["lr"] for c in saved] == [0.002, 0.02]
    for c in saved:
        assert c["deterministic"] is False and c["compile"] is False
        assert (c["model"], c["dataset"], c["epochs"], c["batch_size"]) == ("ex1", BASE["dataset"], 1, 16)


def test_a_run_killed_before_its_reports_is_finished_by_resume_and_by_a_sweep_rerun(tmp_path, cli):
    """kill -9 between the last last.pt and train.json/test.json loses nothing: --resume writes them."""
    config = write(tmp_path, {"base": BASE, "runs": [{"lr": 0.003}]})
    out = tmp_path / "o"
    assert cli("sweep", config, "--out", out)[0] == 0
    (run,) = [p.parent for p in out.glob("*/*/config.json")]
    test = json.loads((run / "test.json").read_text())
    (run / "train.json").unlink()
    (run / "test.json").unlink()
    code, out_text, err = cli("sweep", config, "--out", out)  # the rerun finishes it instead of skipping it
    assert code == 0, err
    assert json.loads((run / "test.json").read_text())["accuracy"] == test["accuracy"]
    assert json.loads((run / "train.json").read_text())["epochs_run"] == 1
    (run / "test.json").unlink()
    code, out_text, err = cli("train", "--resume", run / "last.pt")
    assert code == 0 and (run / "test.json").is_file(), err
    code, _, err = cli("train", "--resume", run / "last.pt")  # complete now: nothing to resume
    assert code == 2 and "nothing to resume" in err


def test_an_edited_sweep_reruns_what_changed_and_abbreviations_are_not_options(tmp_path, cli):
    """Runs are keyed by all their options: an edited file is not answered with the old results; and
    an abbreviated key cannot smuggle in --resume (to a run outside the sweep's folder)."""
    config = write(tmp_path, {"base": BASE, "runs": [{"lr": 0.003}]})
    assert cli("sweep", config, "--out", tmp_path / "o")[0] == 0
    config = write(tmp_path, {"base": {**BASE, "batch-size": 8}, "runs": [{"lr": 0.003}]})
    code, out, err = cli("sweep", config, "--out", tmp_path / "o")
    assert code == 0 and "done already" not in out + err, out + err
    saved = sorted(json.loads(p.read_text())["batch_size"] for p in (tmp_path / "o").glob("*/*/config.json"))
    assert saved == [8, 16]  # the old run is kept, the edited one ran
    config = write(tmp_path, {"base": BASE, "runs": [{"res": str(tmp_path / "elsewhere" / "last.pt")}]})
    code, _, err = cli("sweep", config, "--out", tmp_path / "o2")
    assert code == 2 and "unrecognized arguments: --res" in err
