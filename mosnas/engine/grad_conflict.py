"""Gradient conflict between the archs of one update (the MoS paper's appendix analysis of weight sharing):
the cosine similarity between the gradients that two archs of the same sandwich step give the supernet.

Per-arch gradients are captured while the task's step runs, without changing it: a tensor hook on every
parameter sees the gradient of each backward before it is accumulated into `.grad` (the hook returns nothing,
so `.grad`, and the optimizer's update, stay exactly as without logging), and a forward pre-hook on the supernet
says which arch the next backward belongs to. This relies on what both tasks do: each arch's forward is
followed by its backward before the next arch's forward (one backward per arch, in the step's order)."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from mosnas.core.space import Arch
from mosnas.errors import TrainingError


def due(every: int, step: int) -> bool:
    """Whether update `step` (0-based, as `step_archs` counts: with `every` a multiple of train.random_every
    each logged update has its random archs) logs gradient conflict; `every` 0 is off."""
    return every > 0 and step % every == 0


def labels(archs: list[tuple[str, Arch]]) -> list[str]:
    """One label per arch of a step: its kind, numbered when the kind repeats (random1, random2, ...)."""
    count, seen = Counter(kind for kind, _ in archs), Counter()
    out = []
    for kind, _ in archs:
        seen[kind] += 1
        out.append(f"{kind}{seen[kind]}" if count[kind] > 1 else kind)
    return out


def overlap_cosine(a: dict[int, Tensor], b: dict[int, Tensor]) -> float | None:
    """Cosine similarity of two gradients {parameter index: grad} over the entries both touched: those where
    both are nonzero. Outside an arch's top-left slices its gradient is exactly zero, so this is the overlap of
    the two archs' slices (an exact zero inside a slice, e.g. the embedding row of a token absent from the
    batch, carries no direction either); entries only one arch trains would only shrink the cosine by the size
    difference. None when the two share no entry. Computed in float64."""
    dot = norm_a = norm_b = torch.zeros((), dtype=torch.float64)
    for i in a.keys() & b.keys():
        both = (a[i] != 0) & (b[i] != 0)
        x, y = a[i][both].double(), b[i][both].double()
        dot, norm_a, norm_b = dot + (x * y).sum(), norm_a + (x * x).sum(), norm_b + (y * y).sum()
    if norm_a == 0 or norm_b == 0:
        return None
    return round(float(dot / (norm_a.sqrt() * norm_b.sqrt())), 6)


class ArchGradients:
    """Context manager around one update's task steps: each arch's gradient of `net`'s parameters, summed over
    the update's micro-batches (this rank's share under DDP), as fp32 copies: one copy of the touched gradient
    per arch of the step while it runs. With `on` False it does nothing (no hooks: zero overhead)."""

    def __init__(self, net: nn.Module, archs: list[tuple[str, Arch]], on: bool = True):
        self.net, self.archs, self.on = net, archs, on
        self.grads: list[dict[int, Tensor]] = [{} for _ in archs]  # per arch: parameter index -> gradient
        self.forwards = 0
        self.handles: list[Any] = []

    def __enter__(self) -> ArchGradients:
        if self.on:
            self.handles.append(self.net.register_forward_pre_hook(self._on_forward))
            for i, p in enumerate(self.net.parameters()):
                if p.requires_grad:
                    self.handles.append(p.register_hook(lambda g, i=i: self._on_grad(i, g)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _on_forward(self, module: nn.Module, inputs: tuple) -> None:
        kind, arch = self.archs[self.forwards % len(self.archs)]
        if inputs[-1] != arch:
            raise TrainingError(
                f"train.grad_conflict_every: forward {self.forwards + 1} of the step ran another arch than "
                f"the step's {kind} arch (the task must run its archs in order, one forward each)"
            )
        self.forwards += 1

    def _on_grad(self, i: int, grad: Tensor) -> None:
        if self.forwards == 0:
            return  # a backward through no supernet forward of this step: nothing to attribute
        store = self.grads[(self.forwards - 1) % len(self.archs)]
        g = grad.detach().float()
        store[i] = store[i] + g if i in store else g.clone()

    def cosines(self) -> dict[str, float | None]:
        """{"<label>-<label>": cosine} for every pair of the step's archs, in the step's order (largest-smallest,
        largest-random, smallest-random, ...; see `labels` and `overlap_cosine`)."""
        names = labels(self.archs)
        pairs = itertools.combinations(range(len(self.archs)), 2)
        return {f"{names[i]}-{names[j]}": overlap_cosine(self.grads[i], self.grads[j]) for i, j in pairs}

    def record(self, step: int) -> dict[str, Any] | None:
        """The train_log record {"step": step, "grad_conflict": {...}}, or None when off or with fewer than two
        archs."""
        if not self.on or len(self.archs) < 2:
            return None
        return {"step": step, "grad_conflict": self.cosines()}
