"""Peak memory of a workload (an exported model's inference): measured, not estimated.

CUDA: `torch.cuda.max_memory_allocated` over one call (the caching allocator's own count of live tensors).
CPU: torch keeps no peak counter there, so one call runs under `torch.profiler` with `profile_memory=True`
and the bytes every operator allocated and freed (its own, not its children's; frees outside any operator
come as `[memory]` events) are summed in start-time order; the peak of that running sum is the activation
peak. Memory an operator allocates and frees before it returns is invisible to this count, so on CPU the
figure is a lower bound on transient peaks (for a beam search they are small: attention scores of one step).
Weights are counted from the model's parameters and buffers."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

MB = 2**20


def weight_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s parameters and buffers, in the dtype they hold now."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ side (kineto) prints a `USDT: ... profiler_start/stop` line per use to fd 2, whatever
    its log level: silenced here (Python exceptions still propagate)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_activation_peak(work: Callable[[], Any]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    deltas = []
    for e in prof.events():
        d = e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        if d:
            deltas.append((e.time_range.start, d))
    live = peak = 0
    for _, d in sorted(deltas, key=lambda x: x[0]):
        live += d
        peak = max(peak, live)
    return peak


def peak_memory(
    model: nn.Module,
    work: Callable[[], Any],
    device: str | torch.device = "cpu",
    warmup: bool = True,
    grad: bool = False,
) -> dict[str, Any]:
    """Peak memory (MiB) of one call of `work` (which runs `model`, already on `device` in its deployed dtype):
    `peak_mb` = `weights_mb` + `activations_mb` (tensors alive at the worst moment of the call beyond the
    weights), and `method` (how it was measured, see the module docstring). With `warmup`, `work` runs once
    first (inference: lazy initialization is not counted); without, the measured call is the first (a
    training step: its gradients and the optimizer's state are allocated in it and counted). `work` runs
    under no_grad unless `grad` (training)."""
    device = torch.device(device)
    weights = weight_bytes(model)
    with torch.enable_grad() if grad else torch.no_grad():
        if warmup:
            work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            work()
            torch.cuda.synchronize(device)
            activations = torch.cuda.max_memory_allocated(device) - base
            method = "torch.cuda.max_memory_allocated over one call"
        else:
            activations = _cpu_activation_peak(work)
            method = "torch.profiler allocations over one call (CPU; intra-operator transients not seen)"
    return {
        "peak_mb": round((weights + activations) / MB, 3),
        "weights_mb": round(weights / MB, 3),
        "activations_mb": round(activations / MB, 3),
        "method": method,
    }
