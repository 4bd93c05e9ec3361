"""The command line: train, evaluate --json, info, bench --json, and every user-error path."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from cifarkit.config import TrainConfig
from cifarkit.device import resolve_device
from cifarkit.speedrun.recipe import Recipe
from cifarkit.tools.settings import (
    PROFILES,
    AmpCheckSettings,
    DeploySettings,
    EvaluateSettings,
    InputBenchSettings,
    PredictSettings,
    SeriesSettings,
    Slurm,
    SpeedrunSettings,
    TransferSettings,
)

EPOCHS = ("--epochs", "2", "--batch-size", "64", "--val-fraction", "0.2")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cifarkit.cli import main

    out = tmp_path_factory.mktemp("cli")
    assert main(["train", "--model", "ex1", "--dataset", "synthetic", *EPOCHS, "--out", str(out)]) == 0
    (run,) = out.iterdir()
    return run


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_train_prints_epochs_and_run_folder_last(tmp_path, cli):
    code, out, _ = cli("train", "--dataset", "synthetic:classes=3,train=20,test=5", *EPOCHS, "--out", tmp_path)
    lines = out.strip().splitlines()
    assert code == 0
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert Path(lines[-1]).is_dir() and (Path(lines[-1]) / "best.pt").is_file()


def test_evaluate_json_last_line(run_dir, cli):
    code, out, _ = cli("evaluate", run_dir / "best.pt", "--dataset", "synthetic", "--json")
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] == 200
    assert 0 <= result["accuracy"] <= result["top5_accuracy"] <= 1 and result["losses"] > 0
    test = json.loads((run_dir / "test.json").read_text())
    assert result["accuracy"] == pytest.approx(test["accuracy"])  # one name per number: test.json's
    assert not {"top1", "top5", "loss", "testing_time"} & set(result)


def test_info(cli):
    code, out, _ = cli("info", "--json")
    info = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and info["device"] == str(resolve_device("auto")) and "ex1" in info["models"]
    assert info["profiler_backends"]["cpu"] == "ok"


def test_bench_json_reports_three_pipelines_on_one_workload(cli):
    args = ("--dataset", "synthetic", "--steps", "3", "--rounds", "2", "--workers", "0", "--batch-size", "32")
    code, out, _ = cli("input-bench", *args, "--json")
    assert code == 0
    progress, last = out.strip().splitlines()[:-1], out.strip().splitlines()[-1]
    result = json.loads(last)
    # on CUDA/ROCm the step is a CUDA graph, as in `train`, and the loader is timed with an eager step beside it
    assert result["cuda_graphs"] is (resolve_device("auto").type == "cuda")
    pipelines = 4 if result["cuda_graphs"] else 3
    assert sum(line.startswith("round ") for line in progress) == 2 * pipelines  # rounds x pipelines, interleaved
    for key in ("seed_style_img_s", "cifarkit_img_s", "step_limit_img_s"):
        low, high = result["spread"][key]
        assert 0 < low <= result[key] <= high < 1e7, (key, result)  # the median of the rounds
    # a ratio of two timings says nothing stable on a busy machine (it read 5.79 once): its arithmetic only
    assert result["fraction_of_limit"] == pytest.approx(result["cifarkit_img_s"] / result["step_limit_img_s"])
    assert (result["batch_size"], result["steps"], result["rounds"]) == (32, 3, 2)
    # the warm-up steps ran before each timed region, and what they cost is reported beside it
    timed = {"seed_style", "cifarkit", "step_limit", *(["cifarkit_without_graphs"] if result["cuda_graphs"] else [])}
    assert result["warmup_steps"] == 5 and set(result["warmup_seconds"]) == timed
    if result["cuda_graphs"]:
        assert result["graphs_speedup"] == pytest.approx(
            result["cifarkit_img_s"] / result["cifarkit_without_graphs_img_s"]
        )
    assert all(s > 0 for s in result["warmup_seconds"].values())
    assert result["device"] == str(resolve_device("auto"))


def test_help_on_every_verb_lists_its_options(cli):
    """Every verb the parser knows answers --help with its own usage line and each of its options."""
    import argparse

    from cifarkit.cli import build_parser

    parser = build_parser()
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"train", "evaluate", "predict", "series", "speedrun", "plot-perf", "montage"} <= set(verbs.choices)
    for verb, sub in verbs.choices.items():
        code, out, _ = cli(verb, "--help")
        assert code == 0 and f"usage: cifarkit {verb}" in " ".join(out.split()), (verb, out[:200])
        options = [
            o for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--")
        ]
        assert options, verb
        for option in options:
            assert option in out, (verb, option)


@pytest.mark.parametrize(
    "args,needles",
    [
        (("train", "--model", "vgg99", "--dataset", "synthetic"), ("vgg99", "ex1", "resnet18")),
        (("train", "--dataset", "mnist"), ("mnist", "cifar10", "folder:PATH")),
        (("train", "--dataset", "synthetic", "--epochs", "0"), ("--epochs", "an integer >= 1 and <= 10,000")),
        (("train", "--dataset", "synthetic", "--lr", "abc"), ("--lr",)),
        (("train", "--dataset", "synthetic", "--augment", "blur"), ("blur", "crop")),
        (
            ("train", "--dataset", "synthetic", "--val-fraction", "2"),
            ("--val-fraction", "a fraction between 0 and 1, e.g. 0.7"),
        ),
        (("train", "--dataset", "synthetic", "--optimizer", "rmsprop"), ("rmsprop", "adam")),
        (("train", "--dataset", "synthetic", "--device", "cuda:99"), ("cuda:99",)),  # absent on any machine
        (("train", "--dataset", "synthetic", "--device", "tpu"), ("tpu", "auto")),
        (("evaluate", "missing.pt", "--dataset", "synthetic"), ("missing.pt",)),
        (("frobnicate",), ("frobnicate",)),
    ],
)
def test_user_errors_are_one_line(args, needles, cli, tmp_path):
    code, _, err = cli(*args, *(("--out", tmp_path) if args[0] == "train" else ()))
    one_line_error(code, err, *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")
def test_cuda_without_a_gpu_is_one_line(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "synthetic", "--device", "cuda", "--out", tmp_path)
    one_line_error(code, err, "no CUDA/ROCm GPU", "--device auto or cpu")


def test_not_a_checkpoint(tmp_path, cli):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("hello")
    one_line_error(*cli("evaluate", bogus, "--dataset", "synthetic")[::2], "not a", "cifarkit checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    one_line_error(*cli("evaluate", foreign, "--dataset", "synthetic")[::2], "not a cifarkit checkpoint")


def test_checkpoint_for_other_class_count(run_dir, cli):
    code, _, err = cli("evaluate", run_dir / "best.pt", "--dataset", "synthetic:classes=3")
    one_line_error(code, err, "10 classes", "3")


def test_missing_folder_dataset(run_dir, cli, tmp_path):
    code, _, err = cli("evaluate", run_dir / "best.pt", "--dataset", f"folder:{tmp_path / 'none'}")
    one_line_error(code, err, "not found")


def test_evaluate_with_tta_and_all_modes(run_dir, cli):
    code, out, _ = cli("evaluate", run_dir / "best.pt", "--dataset", "synthetic", "--tta", "flip", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["tta"] == "flip"
    code, out, _ = cli("evaluate", run_dir / "best.pt", "--dataset", "synthetic", "--tta", "all", "--json")
    table = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and [m["mode"] for m in table["modes"]][:2] == ["none", "flip"] and table["n"] == 200
    one_line_error(*cli("evaluate", run_dir / "best.pt", "--dataset", "synthetic", "--tta", "zoom")[::2], "zoom")


def test_train_options_are_the_config_fields_with_its_defaults():
    """One declaration per setting: `train` with no options is TrainConfig(), and every option lands in a field."""
    from dataclasses import fields

    from cifarkit.cli import build_parser, config_from_args
    from cifarkit.config import TrainConfig

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train"])) == TrainConfig()
    args = parser.parse_args(
        [
            "train",
            "--lr",
            "0.02",
            "--telemetry",
            "--telemetry-interval",
            "2",
            "--torch-profile",
            "3",
            "--channels-last",
            "on",
            "--cuda-graphs",
            "off",
            "--no-deterministic",
            "--epochs",
            "4",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.lr, cfg.telemetry, cfg.telemetry_interval, cfg.torch_profile_steps) == (0.02, True, 2.0, 3)
    assert (cfg.channels_last, cfg.cuda_graphs, cfg.deterministic, cfg.epochs) == (True, False, False, 4)
    for old in (["--profile"], ["--profile-interval", "2"]):  # the old names answer with the new ones
        with pytest.raises(SystemExit):
            parser.parse_args(["train", *old])
    cli_fields = {f.name for f in fields(TrainConfig) if hasattr(parser.parse_args(["train"]), f.name)}
    assert {f.name for f in fields(TrainConfig)} - cli_fields == {
        "nesterov",
        "crop_padding",
        "cutout_size",
        "model_kwargs",
    }


BAD = {"epochs": 0, "batch_size": 0, "lr": float("nan"), "momentum": 1.0, "weight_decay": -1.0,
       "label_smoothing": 1.0, "crop_padding": -1, "cutout_size": 0, "patience": -1, "val_fraction": 1.0,
       "seed": -1, "image_size": 4, "checkpoint_every": 0, "telemetry_interval": float("inf"),
       "torch_profile_steps": -1, "optimizer": "rmsprop", "scheduler": "step", "monitor": "acc", "amp": "fp8",
       "channels_last": "maybe", "cuda_graphs": "maybe"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_range_is_declared_once_and_checked_in_both_places(name, cli):
    """Each TrainConfig field's range (its argparse ``type``) or set (``choices``) is declared on the field: a bad
    value set in code is refused with the words ``train``'s option uses for it at parse time, before any work."""
    from dataclasses import fields

    from cifarkit.config import TrainConfig, auto_switch, option_of
    from cifarkit.errors import ConfigError

    declared = {f.name: f for f in fields(TrainConfig) if {"type", "choices"} & set(f.metadata)}
    assert set(BAD) == set(declared)  # every declared range is exercised here
    f, value = declared[name], BAD[name]
    if f.metadata.get("type") is auto_switch:  # None, True or False in code; auto, on or off on the command line
        with pytest.raises(ConfigError, match=f"{option_of(f)}: 'maybe' is not True or False"):
            TrainConfig(**{name: value})
        code, _, err = cli("train", "--dataset", "synthetic", option_of(f), value)
        one_line_error(code, err, option_of(f), "'maybe' is not one of auto, on, off")
        return
    if "type" in f.metadata:
        with pytest.raises(argparse.ArgumentTypeError) as said:
            f.metadata["type"](str(value))
        what = str(said.value)
    else:
        what = repr(value)
    with pytest.raises(ConfigError, match=re.escape(what)):
        TrainConfig(**{name: value})
    if "help" in f.metadata or name == "epochs":  # crop_padding and cutout_size have no option
        flag = "--epochs" if name == "epochs" else option_of(f)
        code, _, err = cli("train", "--dataset", "synthetic", flag, str(value))
        one_line_error(code, err, flag, what if "type" in f.metadata else str(value))


@pytest.mark.parametrize(
    ("argv", "settings", "changed"),
    [
        (["input-bench", "--steps", "7"], InputBenchSettings, {"steps": 7}),
        (["amp-check", "--modes", "off", "fp16"], AmpCheckSettings, {"modes": ("off", "fp16")}),
        (["deploy-bench", "best.pt", "--sparsity", "0.2", "0.4"], DeploySettings, {"sparsities": (0.2, 0.4)}),
        (["sweep", "grid.json", "--slurm-time", "15"], Slurm, {"time_min": 15}),
        (["series", "--profile", "smoke"], SeriesSettings, {"profile": "smoke"}),
        (["speedrun", "--target", "0.8"], SpeedrunSettings, {"target": 0.8}),
        (["train", "--lr", "0.01"], TrainConfig, {"lr": 0.01}),
        (["train", "--torch-profile", "3"], TrainConfig, {"torch_profile_steps": 3}),
        (["evaluate", "best.pt", "--tta", "all"], EvaluateSettings, {"tta": "all"}),
        (["predict", "a.png", "--checkpoint", "best.pt", "--topk", "3"], PredictSettings, {"topk": 3}),
    ],
)
def test_each_commands_options_are_generated_from_its_settings_dataclass(argv, settings, changed):
    """A setting's option, default and help are declared once, on its dataclass field: parsing no option gives
    the dataclass's defaults, an option changes its field alone, and the help quotes the field's default."""
    from dataclasses import fields, replace

    from cifarkit.cli import build_parser, settings_from
    from cifarkit.config import option_of

    parser = build_parser()
    positional = {"deploy-bench": 2, "sweep": 2, "evaluate": 2, "predict": 4}.get(argv[0], 1)  # verb, inputs
    assert settings_from(parser.parse_args(argv[:positional]), settings) == settings()
    assert settings_from(parser.parse_args(argv), settings) == replace(settings(), **changed)
    (name,) = changed
    verb = parser._subparsers._group_actions[0].choices[argv[0]]
    action = next(a for a in verb._actions if a.dest == name)
    assert action.option_strings == [option_of(next(f for f in fields(settings) if f.name == name))]
    default = getattr(settings(), name)
    assert f"(default {' '.join(map(str, default)) if isinstance(default, tuple) else default}" in action.help


@pytest.mark.parametrize(
    ("settings", "bad", "said"),
    [
        (InputBenchSettings, {"batch_size": 0}, "--batch-size: 0 must be an integer >= 1"),
        (AmpCheckSettings, {"steps": 0}, "--steps: 0 must be an integer >= 1"),
        (DeploySettings, {"sparsities": (0.5, 1.5)}, "--sparsity: 1.5 must be a fraction between 0 and 1"),
        (DeploySettings, {"warmup": 0}, "--warmup: 0 must be an integer >= 1"),
        (Slurm, {"time_min": 0}, "--slurm-time: 0 must be an integer >= 1"),
        (SeriesSettings, {"goal": -1.0}, "--goal: -1.0 must be a finite number > 0"),
        (SpeedrunSettings, {"target": 1.5}, "--target: 1.5 must be a fraction between 0 and 1"),
        (SpeedrunSettings, {"seed": -1}, "--seed: -1 must be an integer >= 0"),
        (Slurm, {"gpus": -1}, "--slurm-gpus: -1 must be an integer >= 0"),
        (SeriesSettings, {"profile": "huge"}, "--profile: 'huge' is not one of smoke, quick, full"),
        (AmpCheckSettings, {"modes": ("off", "fp8")}, "--modes: 'fp8' is not one of off, fp16, bf16"),
        (PredictSettings, {"tta": "all"}, "--tta: 'all' is not one of none, flip, 5crop"),  # evaluate's alone
        (EvaluateSettings, {"batch_size": 0}, "--batch-size: 0 must be an integer >= 1"),
        (TransferSettings, {"steps": 0}, "TransferSettings.steps: 0 must be an integer >= 1"),
        (Recipe, {"translate": 9}, "Recipe.translate: 9 must be an integer >= 0 and <= 8"),
        (TrainConfig, {"batch_size": None}, "--batch-size: 'None' is not an integer"),  # only X | None may be unset
        (TrainConfig, {"lr": "abc"}, "--lr: 'abc' is not a number"),
        (TrainConfig, {"seed": "3"}, "--seed: '3' is str; give a number"),  # a value reads back as itself
        (TrainConfig, {"model": 5}, "--model: 5 is int; give text"),
        # a switch holds True or False: the text "False" is true, and would have compiled the model
        (TrainConfig, {"compile": "False"}, "--compile: 'False' is not True or False"),
        (TrainConfig, {"channels_last": 1}, "--channels-last: 1 is not True or False"),
        (SpeedrunSettings, {"baseline": "no"}, "--baseline: 'no' is not True or False"),
        (Recipe, {"lookahead": "yes"}, "Recipe.lookahead: 'yes' is not True or False"),
        (SeriesSettings, {"dataset": " "}, "--dataset: ' ' is blank"),
        (partial(replace, PROFILES["quick"]), {"epochs": 0}, "Profile.epochs: 0 must be an integer >= 1"),
        (partial(replace, PROFILES["smoke"]), {"ablation_val_fraction": 1.5}, "Profile.ablation_val_fraction: 1.5"),
    ],
)
def test_settings_built_in_code_are_held_to_their_options_ranges(settings, bad, said):
    """A settings object made in code (a notebook's profile, a test) is checked by its options' own types, with
    the words the command line uses for the same value: each range is declared once, on the field."""
    from cifarkit.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(said)):
        settings(**bad)


def test_evaluate_and_predict_defaults_are_the_library_functions_own():
    """evaluate's --batch-size and predict's --topk and --tta default to what Predictor and predict_images take
    when a notebook calls them (one constant each, config.EVAL_BATCH_SIZE and config.TOP_K): a default changed in
    one place and not the other fails here."""
    import inspect

    from cifarkit.cli import build_parser
    from cifarkit.predict import Predictor, predict, predict_images

    parser = build_parser()
    evaluate = parser.parse_args(["evaluate", "best.pt"])
    predict_args = parser.parse_args(["predict", "a.png", "--checkpoint", "best.pt"])
    assert inspect.signature(Predictor.evaluate).parameters["batch_size"].default == evaluate.batch_size
    for function in (predict_images, predict):
        assert inspect.signature(function).parameters["topk"].default == predict_args.topk
        assert inspect.signature(function).parameters["tta"].default == predict_args.tta
