"""Command line: ``python -m cifarkit <verb>``; every verb has ``--help``; user mistakes exit 2 in one line.

The parser needs only :mod:`cifarkit.config`, :mod:`cifarkit.errors` and :mod:`cifarkit.tools.settings` (no torch),
so ``--help`` answers at once; each verb imports what it runs when it runs (the one module allowed to import inside
functions)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from cifarkit.config import (
    DATASET_HELP,
    DEVICE_HELP,
    MONTAGE_COLS,
    TrainConfig,
    epochs_type,
    option_of,
    positive_int,
)
from cifarkit.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CifarkitError,
    DataError,
    os_error_line,
    out_of_memory_line,
    printable,
    rank_tag,
)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem (no usage dump), and options are taken
    only as spelled in full (``--res`` is not ``--resume``: a sweep file's keys reach ``train`` as written)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


class Renamed(argparse.Action):
    """An option that was renamed: using it is a usage error naming the new option (no silent alias)."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object, option: str | None = None):
        parser.error(
            f"{option} is now {self.new} (hardware telemetry); 'profile' names only the work size of "
            "`cifarkit series --profile smoke|quick|full`"
        )


def print_json_line(obj: dict) -> None:
    """The machine-readable last line of a ``--json`` command."""
    print(json.dumps(obj, default=str))


# ----------------------------------------------------------------------------- verbs


def config_from_args(args: argparse.Namespace):
    """The :class:`~cifarkit.config.TrainConfig` of a parsed ``train`` command: every option whose ``dest`` is a TrainConfig field
    goes in as it is (see :func:`add_train_options`), so no setting is listed twice."""
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    values["epochs"] = args.epochs or TrainConfig.epochs
    return TrainConfig(**values)


def cmd_train(args: argparse.Namespace) -> int:
    from cifarkit.report.figures import run_callbacks
    from cifarkit.resume import resume_config
    from cifarkit.runs import ensure_dir
    from cifarkit.tools import distributed
    from cifarkit.train import fit

    cfg = config_from_args(args)
    if args.resume:  # a run continues on its own device and length (fit reads the rest of its config)
        saved = resume_config(args.resume)
        cfg = cfg.with_(device=saved["device"], epochs=args.epochs or saved["epochs"])
    else:
        ensure_dir(args.out, "--out folder")  # before minutes of data loading, not after
    with distributed.session(cfg.device) as dist:  # one process, or a rank of a torchrun launch
        run_dir = fit(
            cfg, out=args.out, data_dir=args.data_dir, resume=args.resume, callbacks=run_callbacks(), dist=dist
        )
        if dist.is_main:
            print(run_dir)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cifarkit.data import load_dataset
    from cifarkit.predict import Predictor
    from cifarkit.report.analysis import evaluation_text, tta_text
    from cifarkit.tools.settings import EvaluateSettings

    settings = settings_from(args, EvaluateSettings)
    predictor = Predictor.from_checkpoint(args.checkpoint, args.device)
    dataset = predictor.check_dataset(load_dataset(args.dataset, args.data_dir, image_size=predictor.data_size))
    split = dataset.split(settings.split)
    if settings.tta == "all":
        rows = predictor.compare_tta(split, settings.tta_average, settings.batch_size)
        result = {k: rows[0][k] for k in ("accuracy", "top5_accuracy", "losses", "n")}  # the plain pass's, as test.json
        result.update(split=settings.split, modes=rows)
        print(tta_text(rows))
    else:
        result = predictor.evaluate(split, settings.tta, settings.tta_average, settings.batch_size)
        result.update(split=settings.split, dataset=args.dataset, checkpoint=str(args.checkpoint), tta=settings.tta)
        print(evaluation_text(result))
    if args.json:
        print_json_line(result)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cifarkit.predict import Predictor, expand_paths, predict_images
    from cifarkit.tools.settings import PredictSettings

    settings = settings_from(args, PredictSettings)
    predictor = Predictor.from_checkpoint(args.checkpoint, args.device)
    paths = expand_paths(args.paths)
    if not paths:
        raise DataError("no image files found in the given paths (PNG, JPEG, WebP, BMP, GIF files or folders of them)")
    results = predict_images(predictor, paths, settings.tta, settings.topk, settings.tta_average)
    for r in results:
        if args.json:
            print_json_line(r)
        elif "error" in r:
            print(f"{printable(r['path'])}: error: {printable(r['error'])}", file=sys.stderr)
        else:
            print(
                f"{printable(r['path'])}: " + ", ".join(f"{printable(e['class'])} {e['prob']:.3f}" for e in r["topk"])
            )
    failed = sum("error" in r for r in results)
    if failed:
        print(f"cifarkit predict: {failed} of {len(results)} file(s) could not be read", file=sys.stderr)
    return EXIT_FAILED if failed else 0


def cmd_plot_perf(args: argparse.Namespace) -> int:
    from cifarkit.report.figures import perf_report

    print(perf_report(args.logs, args.out))
    return 0


def cmd_montage(args: argparse.Namespace) -> int:
    from cifarkit.report.figures import montage_folder

    print(montage_folder(args.folder, args.out, args.cols))
    return 0


def cmd_series(args: argparse.Namespace) -> int:
    from cifarkit.report.series import run_series, time_table
    from cifarkit.tools.settings import SeriesSettings

    settings = settings_from(args, SeriesSettings)
    report, ok = run_series(settings, args.device)
    print(f"report: {report / 'index.md'}")
    if settings.goal is not None:
        print(time_table(report, settings.goal))
    print(report)
    return 0 if ok else EXIT_FAILED


def cmd_info(args: argparse.Namespace) -> int:
    from cifarkit.device import env_info, resolve_device
    from cifarkit.models import list_models
    from cifarkit.tools.telemetry import available_backends

    info = env_info(resolve_device("auto"))
    info["profiler_backends"] = available_backends()
    info["models"] = list_models()
    if args.json:
        print_json_line(info)
    else:
        for key, value in info.items():
            print(f"{key:>18}: {value}")
    return 0


def cmd_input_bench(args: argparse.Namespace) -> int:
    from cifarkit.tools.inputbench import run_bench
    from cifarkit.tools.settings import InputBenchSettings

    result = run_bench(settings_from(args, InputBenchSettings), args.dataset, args.data_dir, args.device, log=print)
    if args.json:
        print_json_line(result)
    return 0


def cmd_amp_check(args: argparse.Namespace) -> int:
    from cifarkit.tools.ampcheck import run_amp_check
    from cifarkit.tools.settings import AmpCheckSettings

    result = run_amp_check(settings_from(args, AmpCheckSettings), args.device)
    if args.json:
        print_json_line(result)
    return 0


def cmd_speedrun(args: argparse.Namespace) -> int:
    from cifarkit.speedrun.recipe import run_speedrun
    from cifarkit.tools.settings import SpeedrunSettings

    settings = asdict(settings_from(args, SpeedrunSettings))  # checked there, passed on by name
    summary = run_speedrun(args.dataset, **settings, device=args.device, data_dir=args.data_dir)
    if args.json:
        print_json_line(summary)
    return 0


def cmd_deploy_bench(args: argparse.Namespace) -> int:
    from cifarkit.tools.deploy import deploy_bench
    from cifarkit.tools.deploy import table as deploy_table
    from cifarkit.tools.settings import DeploySettings

    settings = settings_from(args, DeploySettings)
    log = (lambda line: print(line, file=sys.stderr)) if args.json else print
    rows = deploy_bench(args.checkpoint, args.dataset, args.out, args.device, settings, args.data_dir, log=log)
    if args.json:
        for row in rows:
            print_json_line(row)
    else:
        print(deploy_table(rows, settings))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from cifarkit.tools.settings import Slurm, SweepSettings
    from cifarkit.tools.sweep import run_sweep

    parser = build_parser()

    def config(argv: list[str]) -> TrainConfig:  # a run's options, read as train reads them
        return config_from_args(parser.parse_args(["train", *argv]))

    sweep = settings_from(args, SweepSettings)
    out = sweep.out or str(Path("reports") / "sweeps" / Path(args.config).stem)
    slurm = settings_from(args, Slurm) if sweep.executor == "slurm" else None
    results = run_sweep(args.config, out, config, sweep.workers, slurm=slurm)
    failed = [r["name"] for r in results if r["status"] != "done"]
    print(
        f"{len(results) - len(failed)} of {len(results)} run(s) done in {out}"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return EXIT_FAILED if failed else 0


# ----------------------------------------------------------------------------- parser


def add_device(p: argparse.ArgumentParser) -> None:
    """The ``--device`` option every verb that computes shares."""
    p.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto: cuda, then mps, then cpu)")


def add_common(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument(
            "--dataset",
            default=TrainConfig.dataset,
            help=f"dataset spec: {DATASET_HELP} (default {TrainConfig.dataset})",
        )
    p.add_argument(
        "--data-dir",
        default=None,
        help="where datasets and caches live (default: ./data of the checkout, or $CIFARKIT_DATA)",
    )
    add_device(p)


def add_json(p: argparse.ArgumentParser, help: str) -> None:
    """``--json``: what a verb prints for programs instead of people."""
    p.add_argument("--json", action="store_true", help=help)


def add_train_options(t: argparse.ArgumentParser) -> None:
    """``train``'s options: one per :func:`~cifarkit.config.setting` field of :class:`~cifarkit.config.TrainConfig`
    (its default, help and range from the field), and those a run takes in other forms (dataset, device, the
    epochs a resume may extend, where to write, what to resume)."""
    add_settings(t, TrainConfig)
    add_common(t)
    t.add_argument(
        "--epochs",
        type=epochs_type,
        default=None,
        help=f"epochs (default {TrainConfig.epochs}; with --resume: the run's own)",
    )
    t.add_argument("--out", default="reports/runs", help="parent folder of the run folder (default reports/runs)")
    t.add_argument(
        "--resume",
        metavar="CKPT",
        help="continue from a run's last.pt (its saved settings are used; --epochs may extend a run without a scheduler)",
    )
    for old, new in (("--profile", "--telemetry"), ("--profile-interval", "--telemetry-interval")):
        t.add_argument(old, action=Renamed, nargs=0 if new == "--telemetry" else None, help=argparse.SUPPRESS, new=new)


def build_parser() -> Parser:
    """Every verb's options: ``train``'s from :class:`~cifarkit.config.TrainConfig`, the tools' from their
    settings dataclasses (:mod:`cifarkit.tools.settings`); declared here are only what a verb reads or writes
    (checkpoints, images, logs, folders, --dataset, --device, --json), montage's --cols, and the form ``train``
    gives TrainConfig's epochs (:func:`add_train_options`)."""
    from cifarkit.tools import settings

    parser = Parser(
        prog="cifarkit",
        description="CIFAR-10/100 experiments: train, evaluate, predict, profile, run the notebook series.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    sub.required = True

    t = sub.add_parser("train", help="train a model; prints a line per epoch and the run folder last")
    add_train_options(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset split")
    e.add_argument("checkpoint", help="a run's best.pt")
    add_common(e)
    add_settings(e, settings.EvaluateSettings)
    add_json(e, "last stdout line: one JSON object with test.json's names (accuracy, top5_accuracy, losses, n, ...)")
    e.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="versions, chosen device, accelerators and profiler backends found")
    add_json(i, "one JSON object")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("input-bench", help="input pipeline throughput: seed-style vs cifarkit loader vs step limit")
    add_common(b)
    add_settings(b, settings.InputBenchSettings)
    add_json(b, "last stdout line: one JSON object with the rates and ratios")
    b.set_defaults(func=cmd_input_bench)

    se = sub.add_parser("series", help="run the notebook series headless into one report folder")
    add_settings(se, settings.SeriesSettings)
    add_device(se)
    se.set_defaults(func=cmd_series)

    sr = sub.add_parser(
        "speedrun", help="the fast recipe: train, check on test with TTA, time it (vs the course recipe)"
    )
    add_common(sr)
    add_settings(sr, settings.SpeedrunSettings)
    add_json(sr, "last stdout line: one JSON object (seconds, val/test top-1, curve, ...)")
    sr.set_defaults(func=cmd_speedrun)

    ac = sub.add_parser(
        "amp-check", help="fp32 vs mixed precision: img/s of a recipe's training step and the kernels that ran it"
    )
    add_device(ac)
    add_settings(ac, settings.AmpCheckSettings)
    add_json(ac, "last stdout line: one JSON object (img/s, kernels per mode)")
    ac.set_defaults(func=cmd_amp_check)

    db = sub.add_parser(
        "deploy-bench", help="int8, pruned and ONNX variants of a checkpoint: accuracy, size, latency side by side"
    )
    db.add_argument("checkpoint", help="a run's best.pt")
    db.add_argument("--dataset", default=None, help=f"dataset spec: {DATASET_HELP} (default: the checkpoint's own)")
    add_common(db, dataset=False)
    db.add_argument("--out", default=None, help="folder for the variants (default: deploy/ beside the checkpoint)")
    add_settings(db, settings.DeploySettings)
    add_json(db, "one JSON line per variant and device (stdout)")
    db.set_defaults(func=cmd_deploy_bench)

    sw = sub.add_parser("sweep", help="run a grid or list of training configs as parallel processes (resumable)")
    sw.add_argument(
        "config", help='JSON: {"base": {...}, "grid": {"lr": [0.001, 0.01]}} or {"base": {...}, "runs": [...]}'
    )
    add_settings(sw, settings.SweepSettings)
    add_settings(sw, settings.Slurm)
    sw.set_defaults(func=cmd_sweep)

    pp = sub.add_parser("plot-perf", help="figures and a summary table from profiler JSONL logs")
    pp.add_argument("logs", nargs="+", metavar="LOG", help="perf/*.jsonl files or folders holding them")
    pp.add_argument("--out", required=True, help="folder for the PNGs, summary.csv and summary.md")
    pp.set_defaults(func=cmd_plot_perf)

    mo = sub.add_parser("montage", help="stitch the PNGs of a folder into one grid image")
    mo.add_argument("folder")
    mo.add_argument("--cols", type=positive_int, default=MONTAGE_COLS, help=f"figures per row (default {MONTAGE_COLS})")
    mo.add_argument("--out", required=True, help="output PNG")
    mo.set_defaults(func=cmd_montage)

    pr = sub.add_parser("predict", help="top-k classes of image files (PNG, JPEG, WebP, BMP, GIF; any size)")
    pr.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    pr.add_argument("--checkpoint", required=True, help="a run's best.pt")
    add_device(pr)
    add_settings(pr, settings.PredictSettings)
    add_json(pr, 'one JSON object per input: {"path", "topk"} or {"path", "error"}')
    pr.set_defaults(func=cmd_predict)
    return parser


def add_settings(p: argparse.ArgumentParser, settings: type) -> None:
    """One option per :func:`~cifarkit.config.setting` field with help of the dataclass ``settings``: its flag,
    type, choices, help and default come from the field, so each is written once."""
    for f in fields(settings):
        if "help" not in f.metadata:
            continue  # a setting with no option: profiles and code set it
        extra = {k: v for k, v in f.metadata.items() if k not in ("help", "flag")}
        if not {"choices", "action", "metavar"} & set(extra):
            extra["metavar"] = option_of(f)[2:].replace("-", "_").upper()
        shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        p.add_argument(
            option_of(f), dest=f.name, default=f.default, help=f.metadata["help"].format(default=shown), **extra
        )


def settings_from(args: argparse.Namespace, settings: type) -> Any:
    """The ``settings`` dataclass built from the options :func:`add_settings` made (lists become tuples)."""
    values = {f.name: getattr(args, f.name) for f in fields(settings) if "help" in f.metadata}
    return settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    try:
        parser = build_parser()
        args, unknown = parser.parse_known_args(argv)
    except KeyboardInterrupt:  # Ctrl-C in the first tenth of a second, while the options are built
        print("cifarkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if unknown:  # said by the verb, like its other usage errors
        parser.prog = f"{parser.prog} {args.verb}"
        parser.error(f"unrecognized arguments: {printable(' '.join(unknown))}")
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning
        try:
            return int(args.func(args) or 0)
        except CifarkitError as exc:
            print(f"cifarkit {args.verb}{rank_tag()}: error: {printable(exc)}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            print(f"cifarkit {args.verb}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except FileNotFoundError as exc:
            print(f"cifarkit {args.verb}: error: {exc.filename or exc}: file not found", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # a full disk, a read-only mount, a path through a regular file
            print(f"cifarkit {args.verb}: error: {os_error_line(exc)}", file=sys.stderr)
            return EXIT_FAILED
        except (RuntimeError, MemoryError) as exc:  # a batch or a model too big for this machine's memory
            if (line := out_of_memory_line(exc)) is None:
                raise
            print(f"cifarkit {args.verb}{rank_tag()}: error: {line}", file=sys.stderr)
            return EXIT_FAILED


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """The CLI prints a warning as one ``warning:`` line (no source line under it), each text once
    (a log read twice, for samples and for events, warns once)."""
    text = f"warning: {message}"
    if text not in _WARNED:
        _WARNED.add(text)
        print(text, file=file or sys.stderr)


_WARNED: set[str] = set()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
