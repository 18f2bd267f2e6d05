"""Precision follows the hardware: auto picks bf16 only where it is fast, and says why."""

import json
import os
import subprocess
import sys

import pytest

from mosnas.config import load_config
from mosnas.errors import ConfigError
from mosnas.hardware import MIN_BF16_SPEEDUP, choose, cpu_flags, machine, probe, resolve_precision
from tests.conftest import ROOT

NATIVE = {"fp32_gflops": 190.0, "bf16_gflops": 410.0, "bf16_speedup": 2.16}  # AVX-512 BF16, measured here
EMULATED = {"fp32_gflops": 136.0, "bf16_gflops": 1.0, "bf16_speedup": 0.01}  # a 2-core AVX2 VM (the issue)
# oneDNN and ATen limited to AVX2: on a CPU with native bf16 this runs the emulated bf16 path for real
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def test_auto_chooses_by_measured_speed(capsys):
    assert choose("auto", NATIVE, True).name == "bf16"
    slow = choose("auto", EMULATED, False)
    assert slow.name == "fp32" and "not faster" in slow.reason and "1 vs fp32 136 GFLOP/s" in slow.reason
    assert choose("fp32", NATIVE, True).name == "fp32"
    assert capsys.readouterr().err == ""  # no warning when nothing was asked against the hardware


def test_bf16_asked_where_emulated_warns_with_the_slowdown(capsys):
    p = choose("bf16", EMULATED, False, "train.precision")
    assert p.name == "bf16"  # runs as asked ...
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mosnas: warning: train.precision=bf16 is emulated")
    assert "100.0x slower than fp32" in err[0] and "auto would choose fp32" in err[0]  # ... with one line of why


def test_probe_on_this_machine_decides_auto():
    speed = probe("cpu")
    assert speed["fp32_gflops"] > 0 and speed["bf16_gflops"] > 0
    p = resolve_precision("auto", "cpu")
    assert p.name == ("bf16" if speed["bf16_speedup"] >= MIN_BF16_SPEEDUP else "fp32")
    assert p.to_dict()["bf16_speedup"] == speed["bf16_speedup"] and p.reason.startswith("auto:")
    assert resolve_precision("fp32").reason == "asked for fp32"
    with pytest.raises(ConfigError, match="unknown value 'fp16'"):
        resolve_precision("fp16")


def _resolve_in_subprocess(requested: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = (
        "import json; from mosnas.hardware import resolve_precision; "
        f"print(json.dumps(resolve_precision({requested!r}, 'cpu', 'train.precision').to_dict()))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def test_auto_picks_fp32_on_an_avx2_only_cpu():
    # The real emulated kernels (not injected numbers): bf16 runs several times slower than fp32 there.
    out = _resolve_in_subprocess("auto", AVX2_ONLY)
    assert out.returncode == 0, out.stderr
    chosen = json.loads(out.stdout)
    assert chosen["precision"] == "fp32" and chosen["bf16_speedup"] < 1.0, chosen
    asked = _resolve_in_subprocess("bf16", AVX2_ONLY)
    warning = [x for x in asked.stderr.splitlines() if x.startswith("mosnas: warning")]
    assert len(warning) == 1 and "emulated" in warning[0] and "slower than fp32" in warning[0]


def test_every_shipped_config_uses_auto():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        for section in ("train", "latency", "search", "finetune"):
            assert getattr(cfg, section).precision == "auto", f"{path.name}: {section}.precision"


def test_legacy_bf16_key_still_loads(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("train:\n  bf16: true\n")
    assert load_config(old).train.precision == "bf16"
    old.write_text("train:\n  bf16: false\n")
    assert load_config(old).train.precision == "fp32"


def test_run_stores_the_precision_and_why(tiny_run_dir):
    env = json.loads((tiny_run_dir / "environment.json").read_text())
    assert env["precision"]["precision"] in ("fp32", "bf16") and env["precision"]["reason"]
    assert env["cpu_flags"] == cpu_flags() and env["native_bf16"] == machine()["native_bf16"]
    start = json.loads((tiny_run_dir / "train_log.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["precision"] == env["precision"]["precision"]
    assert start["reason"] == env["precision"]["reason"]
