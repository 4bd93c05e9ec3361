"""Experiment sweeps: ``cifarkit sweep CONFIG.json --workers K`` runs a grid or list of training configs as
independent ``cifarkit train`` processes, one run folder each, resumable.

CONFIG.json holds ``base`` (train options by their CLI names, e.g. ``"batch-size": 64``) and either
``grid`` (option -> list of values; every combination runs) or ``runs`` (a list of option sets).
Every config is checked by ``train``'s own parser before anything starts. Processes are scheduled by the
standard library's ``concurrent.futures`` (a worker slot per process); on a machine with GPUs each slot
gets its own GPU, on a CPU the cores are split between the slots. Each run writes a normal run folder
under ``OUT/<NN>-<options>-<key>/`` (``key``: a hash of all its options), so notebook 06 and ``analysis``/``comparison`` rank them like any run.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cifarkit.device import usable_cores
from cifarkit.errors import ConfigError, DataError
from cifarkit.runs import ensure_dir, slug, write_json
from cifarkit.tools.settings import Slurm, SweepSettings

MAX_RUNS = 1_000  # a sweep file asking for more is a mistake, refused before its runs are listed in memory


@dataclass(frozen=True)
class SweepRun:
    """One training config of a sweep: its folder name and ``train`` arguments."""

    name: str
    options: dict[str, Any]

    @property
    def key(self) -> str:
        """Every option as one text (sorted): two runs with the same key train the same numbers."""
        return json.dumps(self.options, sort_keys=True, default=str)

    @property
    def folder(self) -> str:
        """Its folder under the sweep's output: the name plus a hash of its :attr:`key`, so that a run whose
        options were edited in the sweep file is a new run, never mistaken for the old one's results."""
        return f"{self.name}-{hashlib.sha1(self.key.encode()).hexdigest()[:6]}"

    def argv(self) -> list[str]:
        """The options as ``cifarkit train`` arguments: ``true`` as ``--flag``, ``false`` as ``--no-flag`` (every
        switch of ``train`` has both), ``null`` left to ``train``'s default."""
        args: list[str] = []
        for key, value in self.options.items():
            flag = key.replace("_", "-")
            if isinstance(value, bool):
                args.append(f"--{flag}" if value else f"--no-{flag}")
            elif value is not None:
                args += [f"--{flag}", str(value)]
        return args


def load_sweep(path: str | Path) -> list[SweepRun]:
    """The runs of a sweep file, in a stable order, each named by its index and the options that vary."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"sweep file {path} not found") from None
    except (ValueError, RecursionError) as exc:  # not JSON, not text, or nested beyond reason
        reason = exc if isinstance(exc, ValueError) else "nested too deep"
        raise DataError(f"{path} is not JSON ({reason}); see README 'Sweeps' for the format") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("base", {}), dict):
        raise ConfigError(f"{path}: expected an object with 'base' and 'grid' or 'runs'")
    unknown = set(spec) - {"base", "grid", "runs"}
    if unknown or ("grid" in spec) == ("runs" in spec):
        raise ConfigError(f"{path}: give 'base' and exactly one of 'grid' or 'runs' (found {sorted(spec)})")
    base = spec.get("base", {})
    if "grid" in spec:
        grid = spec["grid"]
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"{path}: 'grid' maps at least one option to a non-empty list of values")
        keys = sorted(grid)
        size = math.prod(len(grid[k]) for k in keys)
        if size > MAX_RUNS:
            sizes = " x ".join(f"{len(grid[k])} {k}" for k in keys)
            raise ConfigError(f"{path}: the grid makes {size:,} runs ({sizes}); at most {MAX_RUNS:,}, so split it")
        variants = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]
    else:
        variants = spec["runs"]
        if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants) or not variants:
            raise ConfigError(f"{path}: 'runs' is a non-empty list of option objects")
        if len(variants) > MAX_RUNS:
            raise ConfigError(f"{path}: 'runs' lists {len(variants):,} runs; at most {MAX_RUNS:,}, so split it")
    runs, seen = [], {}
    for i, variant in enumerate(variants):
        label = "-".join(f"{k}-{json.dumps(v) if isinstance(v, bool) else v}" for k, v in variant.items()) or "base"
        runs.append(SweepRun(f"{i:02d}-{slug(label)}"[:80], {**base, **variant}))
        twin = seen.setdefault(runs[-1].key, runs[-1].name)
        if twin != runs[-1].name:  # a value listed twice: the same training twice, to the last digit
            raise ConfigError(f"{path}: runs {twin} and {runs[-1].name} have the same options; list each once")
    return runs


def check_runs(runs: list[SweepRun], check: Callable[[list[str]], Any]) -> None:
    """Run ``check`` (``train``'s parser and TrainConfig, from the CLI) on every run's arguments: a bad
    option or value stops the sweep before any process starts, in one line naming the run."""
    for run in runs:
        if "out" in run.options or "resume" in run.options:
            raise ConfigError(f"sweep run {run.name}: 'out' and 'resume' are set by the sweep itself")
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                check(run.argv())
        except ConfigError as exc:
            raise ConfigError(f"sweep run {run.name}: {exc}") from None
        except SystemExit:  # argparse's one line, without its "cifarkit train:" prefix
            reason = said.getvalue().strip().split("error: ", 1)[-1]
            raise ConfigError(f"sweep run {run.name}: {reason}") from None


def state_of(folder: Path) -> tuple[str, Path | None]:
    """("done", run) when a finished run is in ``folder``, ("stopped", last.pt) to resume, or ("new", None)."""
    runs = sorted(p.parent for p in folder.glob("*/config.json")) if folder.is_dir() else []
    if not runs:
        return "new", None
    run = runs[-1]
    # train.json and test.json are written when a run ends (also when it diverged: rerunning won't help); a
    # run killed before them still has last.pt, and `train --resume` finishes it (writes the reports)
    if (run / "train.json").is_file() and ((run / "test.json").is_file() or not (run / "last.pt").is_file()):
        return "done", run
    return ("stopped", run / "last.pt") if (run / "last.pt").is_file() else ("new", None)


def slots(workers: int | None) -> list[dict[str, str]]:
    """One environment per worker slot: a GPU each where there are GPUs, else a share of the CPU cores."""
    gpus = torch.cuda.device_count()
    count = workers or max(gpus, 1)
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(count)]
    return [{"CIFARKIT_THREADS": str(max(1, usable_cores() // count))} for _ in range(count)]


def train_process(argv: list[str], folder: str | Path, env: dict[str, str] | None = None) -> int:
    """Run ``cifarkit train ARGV --out FOLDER`` as a process, its output appended to ``FOLDER/train.log``;
    return its exit code. The same function runs in a local worker slot and inside a SLURM job."""
    folder = ensure_dir(folder, "sweep run folder")
    cmd = [sys.executable, "-m", "cifarkit", "train", *argv, "--out", str(folder)]
    with open(folder / "train.log", "a") as stdout:
        return subprocess.run(
            cmd, stdout=stdout, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, preexec_fn=die_with_parent
        ).returncode


def die_with_parent() -> None:
    """In a sweep's ``train`` child, before it starts: on Linux, have the kernel send it SIGTERM when the sweep
    process dies, however it dies (``kill -9`` included), so no trainer is left writing a run folder that a
    rerun would start again. Elsewhere nothing happens (the run folder's lock still keeps two trainers apart)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def submit_all(runs: list[tuple[SweepRun, list[str]]], out: Path, slurm: Slurm, workers: int | None) -> list[Any]:
    """Submit one SLURM job per (run, train argv) with submitit, at most ``workers`` running at a time;
    returns the submitit jobs in the same order."""
    import submitit  # only sweeps sent to a cluster need it

    if slurm.cluster == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--executor slurm needs SLURM's sbatch on PATH; run the sweep on the cluster's login node")
    executor = submitit.AutoExecutor(folder=out / "slurm" / "%j", cluster=slurm.cluster)
    params: dict[str, Any] = {"timeout_min": slurm.time_min, "cpus_per_task": slurm.cpus, "name": out.name}
    if slurm.cluster == "slurm":
        params |= {"slurm_gpus_per_node": slurm.gpus, "slurm_array_parallelism": workers or len(runs)}
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
    executor.update_parameters(**params)
    with executor.batch():  # one job array
        jobs = [executor.submit(train_process, argv, out / run.folder) for run, argv in runs]
    return jobs


def run_sweep(
    config: str | Path,
    out: str | Path,
    check: Callable[[list[str]], Any],
    workers: int | None = None,
    log: Callable[[str], None] = print,
    slurm: Slurm | None = None,
) -> list[dict[str, Any]]:
    """Run every config of ``config`` into ``out`` with ``workers`` processes at a time; finished runs are
    skipped and stopped ones resumed, so rerunning the command completes a sweep. Returns a status per run
    and writes them to ``out/sweep.json``. ``check`` validates one run's ``train`` arguments. With ``slurm``,
    each run is a SLURM job submitted by submitit (an array, ``workers`` at a time) instead of a local process.
    """
    SweepSettings(workers=workers)  # a caller's count held to --workers' own declaration
    runs = load_sweep(config)
    check_runs(runs, check)
    out = ensure_dir(out, "--out folder")
    todo: list[tuple[SweepRun, list[str]]] = []
    results: dict[str, dict[str, Any]] = {}
    for run in runs:
        state, found = state_of(out / run.folder)
        if state == "done":
            log(f"{run.name}: done already ({found})")
            results[run.name] = {"name": run.name, "status": "done", "run": str(found), "skipped": True}
        else:
            todo.append((run, ["--resume", str(found)] if state == "stopped" else run.argv()))

    def finished(run: SweepRun, code: int | None, why: str = "") -> dict[str, Any]:
        folder = out / run.folder
        state, found = state_of(folder)
        status = "done" if code == 0 and state == "done" else "failed"
        log(
            f"{run.name}: {status}"
            + ("" if status == "done" else f" ({why or f'exit {code}'}; see {folder / 'train.log'})")
        )
        return {"name": run.name, "status": status, "run": str(found) if found else None, "exit": code}

    if slurm is not None:
        jobs = submit_all(todo, out, slurm, workers) if todo else []
        log(f"{len(runs)} run(s), {len(todo)} submitted to {slurm.cluster}: jobs {', '.join(j.job_id for j in jobs)}")
        for (run, _), job in zip(todo, jobs, strict=True):
            try:
                results[run.name] = finished(run, job.result())
            except Exception as exc:  # the job was cancelled, timed out or its node failed
                results[run.name] = finished(run, None, f"job {job.job_id}: {str(exc).strip().splitlines()[-1][:200]}")
        used = workers or len(todo)
    else:
        envs = slots(workers)
        free = list(range(len(envs)))
        log(
            f"{len(runs)} run(s), {len(envs)} worker(s): "
            + ", ".join(" ".join(f"{k}={v}" for k, v in e.items()) for e in envs)
        )

        def launch(item: tuple[SweepRun, list[str]]) -> dict[str, Any]:
            run, argv = item
            slot = free.pop()
            try:
                log(f"{run.name}: {'resuming' if argv[:1] == ['--resume'] else 'starting'} on slot {slot}")
                code = train_process(argv, out / run.folder, envs[slot])
            finally:
                free.append(slot)
            return finished(run, code)

        with ThreadPoolExecutor(max_workers=len(envs)) as pool:
            for result in pool.map(launch, todo):
                results[result["name"]] = result
        used = len(envs)
    ordered = [results[run.name] for run in runs]
    write_json(out / "sweep.json", {"config": str(config), "workers": used, "runs": ordered})
    return ordered
