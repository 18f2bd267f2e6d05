"""The study's fixed arch set, and what training costs: pure functions of the space, the archs' costs and the
training schedule (no model, no data)."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence

from mosnas.core.space import Arch, Space
from mosnas.engine.schedule import step_archs
from mosnas.errors import ConfigError


def arch_key(arch: Arch) -> str:
    """A short name of an arch by its content ('arch-' + 8 hex digits), as `mosnas export` names inline archs."""
    return "arch-" + hashlib.sha256(arch.to_json().encode()).hexdigest()[:8]


def spanning_archs(space: Space, cost: Callable[[Arch], float], count: int, seed: int, pool: int) -> list[Arch]:
    """`count` distinct archs that span the space by `cost` (e.g. parameters), cheapest first: the smallest
    and the largest arch, and for each of the `count - 2` evenly spaced costs between theirs the arch of a
    seeded pool of `pool` random archs closest to it (ties: the first drawn). Deterministic for a seed.
    Raises ConfigError when the pool holds too few distinct archs."""
    lo, hi = space.smallest(), space.largest()
    rng = random.Random(seed)
    drawn = list(dict.fromkeys(space.sample(rng) for _ in range(pool)))
    left = [a for a in drawn if a not in (lo, hi)]
    if count > 2 + len(left):
        raise ConfigError(f"study: archs.count={count} needs more distinct archs than a pool of {pool} gave")
    c_lo, c_hi = cost(lo), cost(hi)
    costs = {a: cost(a) for a in left}
    chosen = [lo, hi]
    for i in range(1, count - 1):
        target = c_lo + (c_hi - c_lo) * i / (count - 1)
        best = min(range(len(left)), key=lambda j: abs(costs[left[j]] - target))  # min keeps the first of ties
        chosen.append(left.pop(best))
    return sorted(chosen, key=lambda a: (cost(a), a.to_json()))


def random_archs(space: Space, cost: Callable[[Arch], float], count: int, seed: int) -> list[Arch]:
    """`count` distinct seeded uniform archs of the space (HAT's protocol), cheapest first."""
    rng, found = random.Random(seed), []
    for _ in range(1000 * count):
        arch = space.sample(rng)
        if arch not in found:
            found.append(arch)
        if len(found) == count:
            return sorted(found, key=lambda a: (cost(a), a.to_json()))
    raise ConfigError(f"study: the space has fewer than archs.count={count} distinct archs")


def budget_limit(low: float, high: float, fraction: float) -> float:
    """The cost limit of a budget `fraction` between the cheapest (0) and the dearest (1) arch."""
    return low + fraction * (high - low)


def supernet_pair_flops(
    space: Space,
    flops: Callable[[Arch], float],
    steps: int,
    sampling: str,
    num_random: int,
    seed: int,
    random_every: int = 1,
    random_from: int = 0,
) -> float:
    """Training FLOPs of `steps` supernet updates per training pair of a batch: every arch the step trains
    (mosnas.engine.schedule.step_archs: the same archs the loop trained), forward and backward (3 x the forward
    FLOPs `flops(arch)` of one pair; the usual estimate, Kaplan et al. 2020). Generating MoS weights is
    O(parameters) per step and left out."""
    total = 0.0
    for step in range(steps):
        for _, arch in step_archs(space, sampling, num_random, seed, step, None, random_every, random_from):
            total += 3 * flops(arch)
    return total


def matched_steps(wall_steps: float, flops_steps: float, every: int, max_checks: int) -> dict[str, int]:
    """The steps of a compute-matched control, rounded up to a common grain so that one run of the control is
    validated exactly at both: `wall` (the same wall time), `flops` (the same FLOPs), `every` (the grain:
    a multiple of `every`, coarse enough for at most `max_checks` validations), `steps` (the larger one)."""
    if min(wall_steps, flops_steps) < 0 or every < 1 or max_checks < 1:
        raise ConfigError(f"matched_steps: bad input {wall_steps}, {flops_steps}, {every}, {max_checks}")
    top = max(wall_steps, flops_steps, 1)
    grain = every * max(1, math.ceil(top / (max_checks * every)))
    wall, flops = (max(grain, grain * math.ceil(s / grain)) for s in (wall_steps, flops_steps))
    return {"wall": wall, "flops": flops, "every": grain, "steps": max(wall, flops)}


def reach(curve: Sequence[dict], key: str, target: float) -> int | None:
    """The first step of a validation `curve` whose `key` is >= `target` (None when none is)."""
    for record in sorted((r for r in curve if key in r), key=lambda r: r["step"]):
        if record[key] >= target:
            return int(record["step"])
    return None


def log_points(log: Sequence[dict]) -> list[tuple[int, float]]:
    """(step, training seconds on the loop's own clock) of a run's log records that carry `elapsed_s`, by step."""
    return sorted((int(r["step"]), float(r["elapsed_s"])) for r in log if "elapsed_s" in r)


def elapsed_at(log: Sequence[dict], step: int) -> float:
    """Training seconds (the loop's own clock) after `step` updates, from a run's log records (`elapsed_s`),
    interpolated linearly between logged steps (0 at step 0)."""
    points = [(0, 0.0)] + log_points(log)
    for (s0, t0), (s1, t1) in zip(points, points[1:]):
        if s0 <= step <= s1:
            return t0 + (t1 - t0) * (step - s0) / max(s1 - s0, 1)
    last_step, last_t = points[-1]
    return last_t * step / last_step if last_step else 0.0
