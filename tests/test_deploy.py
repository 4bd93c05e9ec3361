"""deploy-bench: int8, pruned and ONNX variants are real models, measured side by side, usable by predict."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cifarkit.config import TrainConfig
from cifarkit.data import load_dataset
from cifarkit.errors import CheckpointError, ConfigError
from cifarkit.models import create_model
from cifarkit.predict import Predictor
from cifarkit.report.figures import run_callbacks
from cifarkit.runs import load_checkpoint
from cifarkit.tools.compress import prune_channels, quantize_int8
from cifarkit.tools.deploy import deploy_bench
from cifarkit.tools.settings import DeploySettings
from cifarkit.train import fit
from cifarkit.variants import OnnxModel, model_from_blob, resize_to

from .conftest import CLI_ON_A_SMALL_DISK

DATA = "synthetic:classes=4,train=64,test=32"
FAST = DeploySettings(
    sparsities=(0.5,), finetune_epochs=0.5, calibration_images=64, warmup=1, runs=5, throughput_runs=1
)
COLUMNS = {"variant", "file", "accuracy", "size_mb", "params", "latency_ms_p50", "latency_ms_p95", "throughput_img_s"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("deploy")
    cfg = TrainConfig(
        model="ex1", dataset=DATA, epochs=3, batch_size=32, lr=0.005, device="cpu", val_fraction=0.25, amp="off"
    )  # fp32 on every CPU, so the checkpoint row is named fp32 whatever the machine
    run = fit(cfg, out=out, log=lambda s: None, callbacks=run_callbacks())
    rows = deploy_bench(run / "best.pt", device="cpu", settings=FAST, log=lambda s: None)
    return run, rows


def test_every_variant_is_built_evaluated_and_timed(bench):
    run, rows = bench
    assert [r["variant"] for r in rows] == ["fp32", "int8-static", "pruned-50%", "onnx"]  # an fp32 run's checkpoint
    assert [r["precision"] for r in rows] == ["fp32", "int8", "fp32", "fp32"] and rows[0]["reference"]
    for r in rows:
        assert COLUMNS <= set(r) and r["device"] == "cpu" and Path(r["file"]).is_file(), r
        assert 0 <= r["accuracy"] <= 1 and 0 < r["latency_ms_p50"] <= r["latency_ms_p95"] and r["throughput_img_s"] > 0
        assert r["latency_ms_p25"] <= r["latency_ms_p50"] <= r["latency_ms_p75"] <= r["latency_ms_p95"]  # its spread
        assert 0 < r["throughput_img_s_min"] <= r["throughput_img_s"] <= r["throughput_img_s_max"]
        assert r["warmup_seconds"] > 0  # the warm-up calls, timed apart from the latency and throughput
    by = {r["variant"]: r for r in rows}
    assert sorted(p.name for p in (run / "deploy").iterdir()) == ["int8.pt", "model.onnx", "pruned-50.pt"]
    assert by["pruned-50%"]["params"] < 0.5 * by["fp32"]["params"]  # whole channels gone, not zeroed
    # int8 and ONNX store the same weights (batch norm folded into the convolutions)
    assert 0.9 * by["fp32"]["params"] < by["int8-static"]["params"] <= by["fp32"]["params"]
    assert 0.9 * by["fp32"]["params"] < by["onnx"]["params"] <= by["fp32"]["params"]
    assert all(r["test_images"] == len(load_dataset(DATA).test) for r in rows)
    assert by["int8-static"]["size_mb"] < 0.5 * by["fp32"]["size_mb"]  # int8 weights, a quarter of fp32 plus scales
    assert [r["stored"] for r in rows] == ["fp32", "int8", "fp32", "fp32"]
    test = json.loads((run / "test.json").read_text())
    assert by["fp32"]["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)  # the same evaluation path as test.json
    assert by["onnx"]["accuracy"] == pytest.approx(by["fp32"]["accuracy"], abs=1 / 32)  # same model, other runtime
    for r in rows:  # the paired counts against fp32 on the same device are the accuracy difference, image by image
        ref = next(x for x in rows if x["variant"] == "fp32" and x["device"] == r["device"])
        assert (r["fixed"] - r["broken"]) / r["test_images"] == pytest.approx(r["accuracy"] - ref["accuracy"], abs=2e-4)


def test_variants_load_like_best_pt_and_keep_their_answers(bench):
    run, rows = bench
    deploy = run / "deploy"
    fp32 = model_from_blob(load_checkpoint(run / "best.pt"))
    int8 = Predictor.from_checkpoint(deploy / "int8.pt", "auto")
    assert int8.device.type == "cpu" and int8.amp == "off" and int8.classes == [f"class_{i}" for i in range(4)]
    x = int8.normalizer(load_dataset(DATA).test.images)  # the images it was calibrated for, not noise
    with torch.no_grad():
        agree = (int8.model(x).argmax(1) == fp32(x).argmax(1)).float().mean()
        assert agree >= 0.9 and (int8.model(x) - fp32(x)).abs().max() < 1.0  # rounding, not another model
        assert int8.model(x).dtype == torch.float32  # int8 weights and activations inside, float logits out
    onnx = Predictor.from_checkpoint(deploy / "model.onnx")
    assert torch.allclose(onnx.model(x), fp32(x), atol=1e-4)
    pruned = Predictor.from_checkpoint(deploy / "pruned-50.pt", "cpu")
    assert sum(p.numel() for p in pruned.model.parameters()) < sum(p.numel() for p in fp32.parameters())


@pytest.mark.parametrize("variant", ["int8.pt", "model.onnx", "pruned-50.pt"])
def test_predict_accepts_every_variant(bench, variant, cli, tmp_path):
    from PIL import Image

    run, _ = bench
    Image.new("RGB", (40, 30), "red").save(tmp_path / "red.png")
    code, out, err = cli("predict", tmp_path / "red.png", "--checkpoint", run / "deploy" / variant, "--json")
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["topk"][0]["class"].startswith("class_") and 0 < result["topk"][0]["prob"] <= 1


def test_resize_to_rebuilds_a_pruned_network():
    model = create_model("smallcifarnet", 10).eval()
    pruned = prune_channels(model, 0.5, torch.randn(1, 3, 32, 32), 10)
    fresh = resize_to(create_model("smallcifarnet", 10).eval(), pruned.state_dict())
    fresh.load_state_dict(pruned.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not fresh.training and torch.equal(fresh(x), pruned(x))
    assert sum(p.numel() for p in fresh.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())


def test_a_network_torch_export_cannot_take_is_skipped_in_one_line():
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(3 * 32 * 32, 4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                x = x * 2
            return self.fc(x.flatten(1))

    for model in (Branchy(), create_model("speednet", 4)):  # speednet: an autocast region the x86 quantizer refuses
        with pytest.raises(
            ConfigError, match=r"^\w+ cannot be quantized to int8 \(.*\); its other variants still are$"
        ):
            quantize_int8(model, [torch.randn(4, 3, 32, 32)])


# what an AVX2-only CPU computes, on any x86 CPU: oneDNN held to AVX2 kernels (no VNNI), as it reads its limit at start
WITHOUT_VNNI = """
import sys, torch
from cifarkit.data import load_dataset
from cifarkit.predict import Predictor
from cifarkit.runs import load_checkpoint
from cifarkit.variants import model_from_blob
run, data = sys.argv[1:]
int8 = Predictor.from_checkpoint(f"{run}/deploy/int8.pt", "cpu")
x = int8.normalizer(load_dataset(data).test.images)
with torch.no_grad():
    a, b = int8.model(x), model_from_blob(load_checkpoint(f"{run}/best.pt"))(x)
print(int8.model.kernels, float((a - b).abs().max()), float((a.argmax(1) == b.argmax(1)).float().mean()))
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA limit is x86's")
def test_int8_keeps_its_answers_on_a_cpu_without_vnni(bench):
    """Without VNNI, oneDNN multiplies uint8 by int8 in pairs whose sums saturate at 16 bits: 8-bit activations
    lost 1.8 points of EX-1's accuracy on an AVX2 CPU. The int8 file, run on AVX2 kernels whatever this CPU has,
    stays within int8's rounding of fp32 (logits 2.5 apart before activations took 7 bits)."""
    run, _ = bench
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_VNNI, str(run), DATA], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    kernels, apart, agree = done.stdout.split()
    assert kernels == "oneDNN" and float(apart) < 1.0 and float(agree) >= 0.9, done.stdout


def test_int8_runs_without_onednn_kernels_and_gives_the_same_answers(bench, monkeypatch):
    import torch._inductor.fx_passes.freezing_patterns as freezing

    run, _ = bench
    blob = load_checkpoint(run / "deploy" / "int8.pt")
    lowered = model_from_blob(blob)

    def no_onednn(*args, **kwargs):  # what a CPU without oneDNN's int8 kernels (an ARM Mac) meets
        raise RuntimeError("onednn::qconv_pointwise is not available")

    monkeypatch.setattr(freezing, "freezing_passes", no_onednn)
    reference = model_from_blob(blob)
    assert (lowered.kernels, reference.kernels) == ("oneDNN", "reference")
    x = Predictor.from_checkpoint(run / "best.pt", "cpu").normalizer(load_dataset(DATA).test.images)
    with torch.no_grad():
        fast, slow, fp32 = lowered(x), reference(x), model_from_blob(load_checkpoint(run / "best.pt"))(x)
    # the same int8 arithmetic, other kernels: they differ only where a requantization rounds a tie the other
    # way (a few hundredths), far below what int8 itself costs against fp32, and never in the answer
    kernels, rounding = (fast - slow).abs().max(), (slow - fp32).abs().max()
    assert kernels < rounding / 10 and torch.equal(fast.argmax(1), slow.argmax(1))
    # activations use 7 bits, so CPUs without VNNI (whose uint8 x int8 pairs saturate at 16 bits) agree too
    quantize = reference.graph.graph.find_nodes(
        op="call_function", target=torch.ops.quantized_decomposed.quantize_per_tensor.default
    )
    assert quantize and {node.args[3:5] for node in quantize} == {(0, 127)}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b.update(int8_method="dynamic"), "int8 method 'dynamic' is not the one this cifarkit builds"),
        (lambda b: b["state_dict"].pop("features.0.weight"), "features.0.weight is missing or extra"),
        (lambda b: b["state_dict"].update({"features.0.weight": b["state_dict"]["features.0.weight"].float()}),
         "a weight is not int8"),
    ],
)  # fmt: skip
def test_a_tampered_int8_file_is_refused_in_one_line(bench, tmp_path, cli, edit, message):
    run, _ = bench
    blob = load_checkpoint(run / "deploy" / "int8.pt")
    edit(blob)
    torch.save(blob, tmp_path / "int8.pt")
    (tmp_path / "img.png").write_bytes((run / "figures" / "loss.png").read_bytes())
    code, _, err = cli("predict", tmp_path / "img.png", "--checkpoint", tmp_path / "int8.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err and "deploy-bench" in err, err


def test_weights_of_another_shape_are_refused_in_one_line(bench, tmp_path, cli):
    run, _ = bench
    blob = load_checkpoint(run / "deploy" / "pruned-50.pt")
    blob.pop("variant")  # pruned weights presented as the full-size model
    torch.save(blob, tmp_path / "mixed.pt")
    (tmp_path / "img.png").write_bytes((run / "figures" / "loss.png").read_bytes())
    code, _, err = cli("predict", tmp_path / "img.png", "--checkpoint", tmp_path / "mixed.pt")
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "the checkpoint of model ex1 gives" in err
        and "where the network has" in err
    ), err


def test_a_full_disk_while_building_leaves_the_variants_folder_as_it_was(bench, on_small_disk):
    """A real full disk (a tmpfs with room for the int8 and pruned variants but not the ONNX export, in a private
    mount namespace): the command says "disk full" in one line, and the variants folder holds what it held before,
    with nothing half-written beside it."""
    run, _ = bench
    built = run / "deploy"
    kib = (built / "int8.pt").stat().st_size // 1024 + (built / "pruned-50.pt").stat().st_size // 1024 + 32
    assert (built / "model.onnx").stat().st_size > kib * 1024  # the export cannot fit, even alone
    args = ["deploy-bench", str(run / "best.pt"), "--out", "{disk}/deploy", "--sparsity", "0.5",
            "--finetune-epochs", "0.5", "--runs", "2", "--warmup", "1", "--device", "cpu"]  # fmt: skip
    old = {"deploy/int8.pt": "the previous int8 variant"}
    done = on_small_disk(CLI_ON_A_SMALL_DISK, kib=kib, args=(json.dumps(args), json.dumps(old)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    err = result["err"].strip()
    assert result["code"] == 1 and len(err.splitlines()) == 1 and "disk full while writing" in err, err
    # the write that failed, by the name it would have had in --out (not its hidden staging copy)
    assert err.endswith("deploy/model.onnx; free some space and run the command again") and ".variants-" not in err, err
    assert result["files"] == {"deploy/int8.pt": len(old["deploy/int8.pt"])}, result["files"]


def test_pruning_without_torch_pruning_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # as if it were not installed
    model = create_model("ex1", 4)
    with pytest.raises(ConfigError, match="pip install torch-pruning"):
        prune_channels(model, 0.5, torch.zeros(1, 3, 32, 32), 4)


def test_bad_inputs_are_one_line(tmp_path, cli):
    with pytest.raises(ConfigError, match="--sparsity"):
        DeploySettings(sparsities=(1.5,))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        OnnxModel(tmp_path / "junk.onnx")
    code, _, err = cli("deploy-bench", tmp_path / "missing.pt")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.pt" in err
    code, _, err = cli("deploy-bench", tmp_path / "missing.pt", "--sparsity", "2")
    assert code == 2 and "between 0 and 1" in err


def deployment_rows(checkpoint: str = "fp32"):
    import pandas as pd

    return pd.DataFrame(
        [
            {"variant": checkpoint, "accuracy": 0.75, "size_mb": 0.2, "latency_ms_p50": 1.0, "latency_ms_p95": 1.5,
             "throughput_img_s": 4000.0, "precision": checkpoint, "reference": True},
            {"variant": "int8-static", "accuracy": 0.748, "size_mb": 0.05, "latency_ms_p50": 2.0, "latency_ms_p95": 2.5,
             "throughput_img_s": 8000.0, "precision": "int8", "reference": False},
            {"variant": "onnx", "accuracy": 0.75, "size_mb": 0.2, "latency_ms_p50": 0.25, "latency_ms_p95": 0.3,
             "throughput_img_s": 2000.0, "precision": "fp32", "reference": False},
        ]
    ).assign(device="cpu", threads=2, test_images=10000, throughput_batch=256).pipe(spread)  # fmt: skip


def spread(rows, share: float = 0.1):
    """Each speed's measured spread, ``share`` either side of it: the middle half of the batch-1 calls and the
    slowest and fastest large-batch call."""
    return rows.assign(
        latency_ms_p25=rows["latency_ms_p50"] * (1 - share),
        latency_ms_p75=rows["latency_ms_p50"] * (1 + share),
        throughput_img_s_min=rows["throughput_img_s"] * (1 - share),
        throughput_img_s_max=rows["throughput_img_s"] * (1 + share),
    )


def test_deployment_commentary_compares_with_the_checkpoint_on_the_cpu():
    from cifarkit.report import commentary

    rows = deployment_rows()
    note = commentary.deployment(rows)
    assert (
        "the checkpoint, computing in **fp32**, answers one image in **1.00 ms** (median; 95th percentile 1.50 ms)"
        in note
    )
    assert "4,000 images/s at batch 256" in note
    assert (
        "`int8-static`: 2.0x slower at batch 1, 2.0x more images/s at batch 256, 4.0x smaller on disk, -0.2 points of "
        "test top-1 (within noise)." in note
    )
    assert (
        "`onnx`: 4.0x faster at batch 1, 2.0x fewer images/s at batch 256, about the same on disk, +0.0 points" in note
    )
    assert "across precisions" not in note  # fp32 against fp32
    # on the same 10,000 images the paired test sees int8 lose 20 images and fix none: beyond noise
    paired = commentary.deployment(rows.assign(fixed=[0, 0, 0], broken=[0, 20, 0]))
    assert "-0.2 points of test top-1." in paired and "-0.2 points of test top-1 (within noise)" not in paired
    # ONNX is fastest at batch 1 and int8 at batch 256: the finding carries both, not batch 1 alone
    assert commentary.findings([note]) == [
        "On the CPU the fastest at batch 1 is `onnx` (0.25 ms, test top-1 75.0%) and the highest throughput at "
        "batch 256 is `int8-static` (8,000 images/s, test top-1 74.8%); the fp32 checkpoint: 1.00 ms, 4,000 "
        "images/s, 75.0%."
    ]


def test_deployment_names_one_fastest_variant_only_beyond_the_measured_spread():
    """08 named one variant fastest although the runner-up was 1% behind, then called speeds within a fixed 5%
    "about the same" whatever the timings' own spread: a variant leads only where its spread clears the next."""
    from cifarkit.report import commentary
    from cifarkit.tools.deploy import headline

    times = {"latency_ms_p50": [1.0, 0.26, 0.25], "throughput_img_s": [4000.0, 8000.0, 7900.0]}
    rows = spread(deployment_rows().assign(**times))  # 10% either side: the 4% and 1% gaps are inside it
    finding = commentary.deployment(rows).finding
    assert "the fastest at batch 1 are `onnx` (0.25 ms, test top-1 75.0%) and `int8-static` (0.26 ms" in finding
    assert "the highest throughput at batch 256 are `int8-static` (8,000 images/s" in finding
    assert "and `onnx` (7,900 images/s, test top-1 75.0%), about the same;" in finding
    top = headline(rows.to_dict("records"))
    assert (
        top["fastest_on_cpu"] == "onnx and int8-static" and top["highest_throughput_on_cpu"] == "int8-static and onnx"
    )
    apart = headline(spread(rows.assign(latency_ms_p50=[1.0, 0.4, 0.25])).to_dict("records"))
    assert apart["fastest_on_cpu"] == "onnx" and headline([])["fastest_on_cpu"] is None
    steady = spread(deployment_rows().assign(**times), share=0.001)  # steady timings rank even a 1% gap
    top = headline(steady.to_dict("records"))
    assert (top["fastest_on_cpu"], top["highest_throughput_on_cpu"]) == ("onnx", "int8-static")
    near = commentary.deployment(steady.assign(latency_ms_p50=[1.0, 1.05, 0.25]).pipe(spread))
    assert "`int8-static`: about the same at batch 1" in near  # 5% slower, inside a 10% spread
    unmeasured = deployment_rows().drop(columns=["latency_ms_p25", "latency_ms_p75"]).to_dict("records")
    assert headline(unmeasured)["fastest_on_cpu"] == "onnx and fp32"  # no spread: cannot rank


def test_a_bf16_checkpoint_is_named_bf16_and_onnx_is_compared_across_precisions():
    """08 labelled a bf16 run's checkpoint row "fp32" and called ONNX "the same fp32 network"."""
    from cifarkit.report import commentary

    note = commentary.deployment(deployment_rows("bf16"))
    assert "computing in **bf16**" in note and "fp32 checkpoint" not in note
    assert "(it computes in fp32, the checkpoint in bf16: a comparison across precisions)." in note
    assert "int8-static`: 2.0x slower" in note and "int8, the checkpoint" not in note  # int8 is its own variant


def test_a_size_is_named_by_the_dtype_stored_not_the_one_computed_in():
    """08 said "the checkpoint (bf16)" of a file of fp32 weights that ran under bf16 autocast."""
    from torch import nn

    from cifarkit.tools.deploy import stored_dtype

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert stored_dtype(net) == "fp32"
    assert stored_dtype(net.to(torch.bfloat16)) == "bf16"


def test_int8_without_torchao_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="^int8 variants need torchao.*: pip install torchao$"):
        quantize_int8(create_model("ex1", 4), [torch.randn(4, 3, 32, 32)])
