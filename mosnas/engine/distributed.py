"""This process's place in a torchrun job, the collective operations of the training loop, and stop
signals that every rank obeys at the same step."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import torch
import torch.distributed as dist


class StopSignals:
    """SIGINT / SIGTERM become a flag that the loop reads at the end of a step, so every rank of a
    torchrun job stops at the same step (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when not launched by torchrun)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank = dist.get_rank() if self.world > 1 else 0
        local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (e.g. the precision: ranks probing at the same time on shared
        cores could otherwise choose differently and train in different precisions)."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, *flags: bool) -> list[bool]:
        """For each flag, whether it is true on any rank (one all-reduce): every stop decision, and its
        reason, is the same on all ranks."""
        t = self.sum(torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device))
        return [v > 0 for v in t.tolist()]


def sum_gradients(params: list[torch.nn.Parameter], dist_: Distributed) -> None:
    """All-reduce (sum) every gradient in one flat buffer; losses are already divided by the
    global token count, so the sum is the gradient of the whole global batch."""
    grads = [p.grad for p in params if p.grad is not None]
    if dist_.world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
