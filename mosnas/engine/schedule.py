"""What the training loop trains when: the archs of each step (sandwich rule) and the learning rate of
each update."""

from __future__ import annotations

import math
import random
from typing import Any

from mosnas.core.space import Arch, Space


def step_archs(
    space: Space,
    sampling: str,
    num_random: int,
    seed: int,
    step: int,
    fixed: Arch | None = None,
    random_every: int = 1,
    random_from: int = 0,
) -> list[tuple[str, Arch]]:
    """The archs trained at `step`; seeded by the step alone, so every rank and a resumed run agree.

    Sandwich rule (BigNAS / the MoS paper, Sec. 3): the largest, the smallest and `num_random` random archs
    per step; with `random_every` k > 1 the random archs join only every k-th step (steps 0, k, 2k, ...),
    a cheaper sandwich (1 + 0.5/k of the largest-plus-smallest cost for one random arch), and only from step
    `random_from` on (a late sandwich: the two ends alone first, the archs between once the shared weights are
    good). `alternate`: the largest every step, beside the smallest on even steps and one random arch on odd
    ones (the cost of a two-arch step; the smallest gets half the updates and the archs between the other half)."""
    rng = random.Random(seed * 1_000_003 + step)
    if sampling == "sandwich":
        extra = num_random if step >= random_from and step % random_every == 0 else 0
        return [("largest", space.largest()), ("smallest", space.smallest())] + [
            ("random", space.sample(rng)) for _ in range(extra)
        ]
    if sampling == "alternate":
        return [("largest", space.largest())] + [
            ("smallest", space.smallest()) if step % 2 == 0 else ("random", space.sample(rng))
        ]
    if sampling == "uniform":
        return [("random", space.sample(rng))]
    assert fixed is not None
    return [("fixed", fixed)]


def archs_of(tc: Any, space: Space, step: int, fixed: Arch | None = None) -> list[tuple[str, Arch]]:
    """`step_archs` with the settings of a TrainConfig `tc` (sampling, num_random, seed, random_every/from)."""
    return step_archs(space, tc.sampling, tc.num_random, tc.seed, step, fixed, tc.random_every, tc.random_from)


def lr_lambda(warmup: int, schedule: str = "inverse_sqrt", max_steps: int = 0, min_ratio: float = 0.0):
    """The learning-rate factor of each update: linear warm-up to the peak over `warmup` updates, then
    inverse square root decay (fairseq's inverse_sqrt) or a half cosine down to `min_ratio` of the peak at
    `max_steps` (HAT's recipe; fairseq's cosine with one period, no restarts).

    LambdaLR calls f(k) for the (k+1)-th update (k = 0 at construction), so f counts updates from 1:
    the first update runs at lr/warmup, the `warmup`-th at the peak."""

    def f(k: int) -> float:
        n = k + 1
        if warmup > 0 and n < warmup:
            return n / warmup
        if schedule == "cosine":
            span = max(max_steps - warmup, 1)
            progress = min(max(n - warmup, 0) / span, 1.0)
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return math.sqrt(warmup / n) if warmup > 0 else 1.0

    return f
