"""What machine this is, and which precision is fast on it (DESIGN §11: never assume the hardware).

Some CPUs run bf16 matrix products natively (AVX-512 BF16, AMX) and about twice as fast as fp32;
others (AVX2-only AMD Zen 2/3, Intel before Cooper Lake, many cloud VMs) emulate them, measured at
1 GFLOP/s against 136 GFLOP/s in fp32 on a 2-core AVX2 VM. `precision: auto` therefore decides by a
short timing probe on the device itself (and reports the CPU's capability beside it): bf16 only where
a bf16 matmul is clearly faster than fp32, else fp32.
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mosnas.errors import ConfigError

# CPU flags that decide matmul speed by precision; recorded with runs and benchmarks.
FLAGS_OF_INTEREST = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
# auto picks bf16 when a bf16 matmul is at least this much faster than fp32 (native: ~2x; emulated: < 0.2x)
MIN_BF16_SPEEDUP = 1.2


def _cpuinfo(field: str) -> str | None:
    """The value of the first `field` line of /proc/cpuinfo (None where there is no such file or line)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> list[str]:
    """The CPU feature flags of interest that this machine has (from /proc/cpuinfo; [] where unknown)."""
    have = set((_cpuinfo("flags") or "").split())
    return [f for f in FLAGS_OF_INTEREST if f in have]


def cpu_name() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def native_bf16_cpu() -> bool:
    """Whether oneDNN reports native bf16 support on this CPU (what torch's CPU bf16 kernels use)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=4)
def probe(device: str = "cpu", rounds: int = 7) -> dict[str, float]:
    """fp32 and bf16 throughput (GFLOP/s) of a 256 x 256 x 256 matmul on `device`; well under a second.

    Rounds alternate fp32 and bf16 products and keep each one's fastest, so a load that comes and
    goes on a shared machine hits both alike; on a CPU it runs on one thread, because the question is
    the kernel's speed per core (an emulated bf16 kernel also ignores extra threads) and OpenMP
    threads competing with another process for the cores would measure the competition instead.
    Cached per device: a process probes once. 256 keeps an emulated bf16 product at ~30 ms."""
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    size = 256
    pairs = {
        dt: (torch.randn(size, size, device=dev).to(dt), torch.randn(size, size, device=dev).to(dt))
        for dt in (torch.float32, torch.bfloat16)
    }
    best = {dt: float("inf") for dt in pairs}
    threads = torch.get_num_threads()
    try:
        if dev.type == "cpu":
            torch.set_num_threads(1)
        for a, b in pairs.values():  # warm-up: first-call dispatch and allocation
            F.linear(a, b)
        for _ in range(rounds):
            for dt, (a, b) in pairs.items():
                sync()
                t = time.perf_counter()
                F.linear(a, b)
                sync()
                best[dt] = min(best[dt], time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    fp32, bf16 = (2 * size**3 / best[dt] / 1e9 for dt in (torch.float32, torch.bfloat16))
    return {"fp32_gflops": round(fp32, 1), "bf16_gflops": round(bf16, 1), "bf16_speedup": round(bf16 / fp32, 2)}


@dataclass(frozen=True)
class Precision:
    """The precision a stage runs in, and why it was chosen."""

    name: str  # "fp32" | "bf16"
    requested: str  # "auto" | "fp32" | "bf16"
    reason: str
    probe: dict[str, float] = field(default_factory=dict)

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.name, "requested": self.requested, "reason": self.reason, **self.probe}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Precision:
        """The inverse of `to_dict`."""
        rest = {k: v for k, v in raw.items() if k not in ("precision", "requested", "reason")}
        return cls(raw["precision"], raw["requested"], raw["reason"], rest)

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


def _warn(message: str) -> None:
    print(f"mosnas: warning: {message}", file=sys.stderr)


def resolve_precision(requested: str, device: torch.device | str = "cpu", setting: str = "precision") -> Precision:
    """The precision to run in for a `requested` setting (auto | fp32 | bf16) on `device`.

    auto: bf16 on CUDA devices that support it; on a CPU, bf16 only when a timing probe shows a bf16
    matmul at least MIN_BF16_SPEEDUP times faster than fp32 (native bf16), else fp32. An explicit bf16
    where it is emulated runs as asked, with a one-line warning giving the measured slowdown.
    Raises ConfigError for an unknown setting or bf16 on a CUDA device without bf16."""
    if requested not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"{setting}: unknown value {requested!r}; expected one of auto, fp32, bf16")
    dev = torch.device(device)
    if requested == "fp32":
        return Precision("fp32", requested, "asked for fp32")
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        if requested == "bf16" and not ok:
            name = torch.cuda.get_device_name(dev)
            raise ConfigError(f"{setting}=bf16: {name} has no bf16 support; use auto or fp32")
        if ok:
            return Precision("bf16", requested, f"{'asked for bf16' if requested == 'bf16' else 'auto'}: CUDA bf16")
        return Precision("fp32", requested, "auto: this CUDA device has no bf16")
    return choose(requested, probe(str(dev)), native_bf16_cpu(), setting)


def choose(requested: str, speed: dict[str, float], native: bool, setting: str = "precision") -> Precision:
    """The CPU decision of `resolve_precision`, from a probe's `speed` ({fp32,bf16}_gflops, bf16_speedup)
    and oneDNN's `native` bf16 flag (reported; the measured speed decides)."""
    measured = (
        f"bf16 matmul {speed['bf16_gflops']:g} vs fp32 {speed['fp32_gflops']:g} GFLOP/s "
        f"({speed['bf16_speedup']:g}x), oneDNN native bf16: {'yes' if native else 'no'}"
    )
    if requested == "fp32":
        return Precision("fp32", requested, "asked for fp32", speed)
    if requested == "bf16":
        if speed["bf16_speedup"] < 1.0:
            _warn(
                f"{setting}=bf16 is emulated on this CPU: a bf16 matmul ran {1 / speed['bf16_speedup']:.1f}x "
                f"slower than fp32 ({speed['bf16_gflops']:g} vs {speed['fp32_gflops']:g} GFLOP/s); "
                f"{setting}=auto would choose fp32"
            )
        return Precision("bf16", requested, f"asked for bf16; {measured}", speed)
    if speed["bf16_speedup"] >= MIN_BF16_SPEEDUP:
        return Precision("bf16", requested, f"auto: native bf16, {measured}", speed)
    return Precision("fp32", requested, f"auto: bf16 is not faster here, {measured}", speed)


def machine() -> dict[str, Any]:
    """The machine a run or benchmark ran on: CPU model, flags of interest, cores, GPU."""
    import os

    return {
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "native_bf16": native_bf16_cpu(),
        "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
