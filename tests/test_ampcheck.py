"""``cifarkit amp-check``: oneDNN log parsing, the fp32 whitening convolution under bf16, CLI errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from cifarkit.tools import ampcheck
from cifarkit.tools.settings import AmpCheckSettings

FWD = (
    "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx2,forward_training,"
    "src:f32::blocked:acdb::f0 wei:f32::blocked:Acdb8a::f0 bia:f32::blocked:a::f0 dst:f32::blocked:acdb::f0,"
    ",alg:convolution_direct,mb128_ic3oc24_ih32oh31kh2sh1dh0ph0_iw32ow31kw2sw1dw0pw0,0.51"
)
BWD_BF16 = (
    "onednn_verbose,primitive,exec,cpu,convolution,brg_conv_bwd_w:avx512_core_amx,backward_weights,"
    "src_bf16::blocked:acdb::f0 wei_bf16::blocked:abcd::f0 diff_dst_bf16::blocked:acdb::f0,"
    ",alg:convolution_direct,mb64_ic64oc64_ih16oh16kh3sh1dh0ph1_iw16ow16kw3sw1dw0pw1,1.2"
)


def test_parse_onednn_line_reads_direction_implementation_dtype_and_shape():
    assert ampcheck.parse_onednn_line(FWD) == {
        "impl": "brg_conv_fwd:avx2",
        "prop": "forward_training",
        "dtype": "f32",
        "ic": 3,
        "oc": 24,
        "ih": 32,
        "kh": 2,
    }
    row = ampcheck.parse_onednn_line(BWD_BF16)  # older oneDNN spells the data type src_bf16
    assert (row["impl"], row["prop"], row["dtype"], row["ic"], row["kh"]) == (
        "brg_conv_bwd_w:avx512_core_amx",
        "backward_weights",
        "bf16",
        64,
        3,
    )
    assert ampcheck.parse_onednn_line(FWD.replace(",exec,", ",create:cache_miss,")) is None
    assert ampcheck.parse_onednn_line(FWD.replace("convolution", "reorder")) is None
    assert ampcheck.parse_onednn_line("epoch 1 val_accuracy 0.61") is None


def test_summarize_and_whitening_dtypes_count_calls():
    rows = [ampcheck.parse_onednn_line(FWD)] * 2 + [ampcheck.parse_onednn_line(BWD_BF16)]
    assert ampcheck.summarize(rows) == {
        "forward_training brg_conv_fwd:avx2 f32": 2,
        "backward_weights brg_conv_bwd_w:avx512_core_amx bf16": 1,
    }
    assert ampcheck.whitening_dtypes(rows) == ["f32"]


def test_amp_check_times_each_mode_and_keeps_whitening_in_fp32():
    lines = []
    result = ampcheck.run_amp_check(AmpCheckSettings("tiny", ("off", "bf16"), 32, 1), "cpu", log=lines.append)
    assert result["device"] == "cpu" and result["batch_size"] == 32 and set(result["modes"]) == {"off", "bf16"}
    for mode, row in result["modes"].items():
        assert row["img_per_s"] > 0 and row["seconds_per_step"] > 0, mode
        # the profile names the operators that ran the convolutions, forward and backward
        assert any("conv" in name and op["calls"] >= 3 for name, op in row["operators"].items()), mode
    assert lines[0].startswith("amp  off:") and any(line.startswith("amp bf16:") for line in lines)
    if not (torch.backends.mkldnn.is_available() and result["modes"]["off"]["kernels"]):
        pytest.skip("oneDNN logged no convolution kernels on this build; the whitening dtype cannot be read")
    # oneDNN ran the fp32 network; under bf16 autocast the 2x2 whitening conv still gets fp32 tensors
    assert result["modes"]["off"]["whitening_dtypes"] == ["f32"]
    assert result["modes"]["bf16"]["whitening_dtypes"] == ["f32"]


def test_amp_check_cli_json_and_errors(cli):
    code, out, err = cli("amp-check", "--recipe", "tiny", "--device", "cpu", "--modes", "off", "--batch-size", "16")
    assert code == 0 and "img/s" in out
    code, out, _ = cli("amp-check", "--recipe", "tiny", "--device", "cpu", "--modes", "off", "--steps", "1", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["modes"]["off"]["img_per_s"] > 0
    code, _, err = cli("amp-check", "--recipe", "tiny", "--device", "cpu", "--modes", "fp16")
    assert code != 0 and "fp16 needs a GPU" in err
    code, _, err = cli("amp-check", "--recipe", "fastest", "--device", "cpu")
    assert code != 0 and "unknown recipe 'fastest'" in err


def test_amp_check_rejects_zero_steps():
    with pytest.raises(ValueError, match="--steps: 0 must be an integer >= 1"):
        ampcheck.run_amp_check(AmpCheckSettings("tiny", steps=0), "cpu")


@pytest.mark.parametrize("native", [False, True])
def test_amp_check_warns_before_bf16_on_a_cpu_without_native_bf16(monkeypatch, native):
    monkeypatch.setattr(ampcheck, "cpu_supports_bf16", lambda: native)
    lines = []
    result = ampcheck.run_amp_check(AmpCheckSettings("tiny", ("off", "bf16"), 16, 1), "cpu", log=lines.append)
    assert result["native_bf16"] is native
    notes = [i for i, line in enumerate(lines) if line.startswith("note:") and "no native bf16" in line]
    bf16_at = next(i for i, line in enumerate(lines) if line.startswith("amp bf16:"))
    off_at = next(i for i, line in enumerate(lines) if line.startswith("amp  off:"))
    if native:
        assert notes == []
    else:  # said once, after the fp32 timing and before the slow bf16 one
        assert len(notes) == 1 and off_at < notes[0] < bf16_at


def test_profiling_prints_nothing_of_the_profilers_own_on_stderr(tmp_path):
    """On a CUDA build of torch in a machine without a GPU (what plain pip installs on Linux), PyTorch's profiler
    library printed "USDT: profiler_start/stop" and "ERROR: gpuGetDeviceCount failed with code 35" on stderr for
    amp-check and train --torch-profile: a fault where there is none. Both commands run as a user runs them (a
    fresh process, no KINETO_LOG_LEVEL set) and their stderr holds none of kineto's lines."""
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    commands = [
        ["amp-check", "--recipe", "tiny", "--device", "cpu", "--modes", "off", "--steps", "1"],
        ["train", "--dataset", "synthetic:classes=3,train=64,test=16", "--epochs", "1", "--batch-size", "16",
         "--torch-profile", "2", "--device", "cpu", "--out", str(tmp_path)],
    ]  # fmt: skip
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "cifarkit", *args], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        kineto = [line for line in done.stderr.splitlines() if re.match(r"(USDT|ERROR|STAGE|WARNING):\d{4}-", line)]
        assert kineto == [], args[0]
    assert list(tmp_path.glob("*/perf/torch_ops.txt"))  # the profile was taken
