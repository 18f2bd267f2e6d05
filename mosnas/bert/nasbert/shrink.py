"""NAS-BERT's progressive shrinking with buckets (Xu et al., KDD 2021, arXiv 2105.14444, §3.2.2).

A block's candidate path is a tuple of op names, e.g. ("mha256", "ffn1024", "conv5_192", "identity"). Paths are
put into B buckets by params and latency (`assign_buckets`), so that shrinking, which removes the paths of highest
loss, cannot wipe out the small paths (they have the higher loss) and leave only large ones. Each shrinking epoch
samples E paths per bucket, scores them on a validation batch and removes the worse half (`shrink_step`), until
m paths are left per bucket (`progressive_shrinking`).

The paper's numbers: B = 10 buckets, E = 2000 sampled paths per bucket, R = E / 2 removed, stop at m = 10 per
bucket, after 3 warm-up epochs of supernet training without shrinking. The warm-up, and the supernet's training
between shrinking epochs, are the caller's: these functions only pick which paths survive."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mosnas.errors import ConfigError, TrainingError

Path = tuple[str, ...]


@dataclass(frozen=True)
class Buckets:
    """Paths per bucket (index 0 is bucket 1, the smallest) and how many paths no bucket took."""

    buckets: list[list[Path]]
    dropped: int


@dataclass(frozen=True)
class BucketStep:
    """What one shrinking step did to one bucket: path counts before and after, how many were sampled and
    removed, and the lowest loss among the sampled (None for an empty bucket)."""

    before: int
    sampled: int
    removed: int
    after: int
    best_loss: float | None


def _bucket_of(value: float, edges: list[float]) -> int:
    """The bucket b (1..B) with edges[b-1] < value <= edges[b]; 0 goes to bucket 1."""
    return max(1, bisect.bisect_left(edges, value))


def assign_buckets(
    paths: Sequence[Path],
    params: Callable[[Path], float],
    latency: Callable[[Path], float],
    largest: Path,
    num_buckets: int,
) -> Buckets:
    """Put each path into one of `num_buckets` buckets (NAS-BERT §3.2.2): with p_b = (b/B) p(largest) and
    l_b = (b/B) l(largest), path a is in bucket b iff p_{b-1} < p(a) <= p_b and l_{b-1} < l(a) <= l_b.

    The top edge is inclusive, so `largest` itself lands in bucket B; a path of 0 params or 0 latency (an
    identity-only path has both) counts as in bucket 1 for that quantity. A path whose params bucket differs
    from its latency bucket is dropped, as the paper does, and counted in `dropped`. Buckets may be empty.
    Paths keep their input order within a bucket. Units are the caller's (e.g. params as a count, latency in
    ms); only ratios to `largest` matter.

    Raises ConfigError for num_buckets < 1, a non-positive p(largest) or l(largest), or a path whose params or
    latency is negative, not finite or above the largest path's."""
    if num_buckets < 1:
        raise ConfigError(f"num_buckets must be >= 1, got {num_buckets}")
    p_max, l_max = float(params(largest)), float(latency(largest))
    if not (math.isfinite(p_max) and p_max > 0 and math.isfinite(l_max) and l_max > 0):
        raise ConfigError(f"the largest path {largest} needs positive params and latency, got {p_max}, {l_max}")
    p_edges = [(b / num_buckets) * p_max for b in range(num_buckets + 1)]
    l_edges = [(b / num_buckets) * l_max for b in range(num_buckets + 1)]
    buckets: list[list[Path]] = [[] for _ in range(num_buckets)]
    dropped = 0
    for path in paths:
        p, lat = float(params(path)), float(latency(path))
        if not (0 <= p <= p_max and 0 <= lat <= l_max):  # also false for NaN
            raise ConfigError(
                f"path {path} has params {p} and latency {lat}; expected 0..{p_max} and 0..{l_max} "
                f"(those of the largest path {largest})"
            )
        b = _bucket_of(p, p_edges)
        if b == _bucket_of(lat, l_edges):
            buckets[b - 1].append(tuple(path))
        else:
            dropped += 1
    return Buckets(buckets, dropped)


def _as_lists(buckets: Buckets | Sequence[Sequence[Path]]) -> list[list[Path]]:
    return [list(b) for b in (buckets.buckets if isinstance(buckets, Buckets) else buckets)]


def shrink_step(
    buckets: Buckets | Sequence[Sequence[Path]],
    loss: Callable[[Path], float],
    sample: int,
    keep_min: int,
    rng: random.Random,
) -> tuple[list[list[Path]], list[BucketStep]]:
    """One shrinking epoch (NAS-BERT §3.2.2): in each bucket sample E = min(sample, size) paths with `rng`,
    score them by `loss` (lower is better) and remove the R = E // 2 of highest loss, but never so many that
    fewer than max(keep_min, 1) remain. Unsampled paths stay. Among equal losses the path later in its bucket
    goes first. Returns the new buckets (survivors in their old order) and one BucketStep per bucket; the same
    rng state gives the same result.

    Raises ConfigError for sample < 2 or keep_min < 1, TrainingError for a loss that is not finite."""
    if sample < 2:
        raise ConfigError(f"sample must be >= 2 paths per bucket, got {sample}")
    if keep_min < 1:
        raise ConfigError(f"keep_min must be >= 1 path per bucket, got {keep_min}")
    new, record = [], []
    for bucket in _as_lists(buckets):
        n = len(bucket)
        if n == 0:
            new.append([])
            record.append(BucketStep(0, 0, 0, 0, None))
            continue
        picked = rng.sample(range(n), min(sample, n))
        scores = {}
        for i in picked:
            value = float(loss(bucket[i]))
            if not math.isfinite(value):
                raise TrainingError(f"the loss of path {bucket[i]} is {value}; the supernet may have diverged")
            scores[i] = value
        ranked = sorted(picked, key=lambda i: (scores[i], i))  # best first
        num_removed = min(len(picked) // 2, max(0, n - keep_min))
        gone = set(ranked[len(ranked) - num_removed :])
        new.append([p for i, p in enumerate(bucket) if i not in gone])
        record.append(BucketStep(n, len(picked), num_removed, n - num_removed, scores[ranked[0]]))
    return new, record


def progressive_shrinking(
    buckets: Buckets | Sequence[Sequence[Path]],
    loss_for_epoch: Callable[[int], Callable[[Path], float]],
    sample: int,
    keep: int,
    rng: random.Random,
    max_epochs: int,
) -> tuple[list[list[Path]], list[list[BucketStep]]]:
    """Apply `shrink_step` once per epoch 0, 1, ... until every bucket holds <= `keep` paths (the paper's m) or
    `max_epochs` steps were taken. `loss_for_epoch(epoch)` returns that epoch's loss function; the caller trains
    the supernet before handing it (and does the warm-up epochs before calling this). Returns the final buckets
    and each epoch's per-bucket records; the buckets are left with >= `keep` paths where they had more.

    Raises ConfigError for sample < 2, keep < 1 or max_epochs < 1, TrainingError for a loss not finite."""
    if keep < 1:
        raise ConfigError(f"keep must be >= 1 path per bucket, got {keep}")
    if max_epochs < 1:
        raise ConfigError(f"max_epochs must be >= 1, got {max_epochs}")
    if sample < 2:
        raise ConfigError(f"sample must be >= 2 paths per bucket, got {sample}")
    current, records = _as_lists(buckets), []
    for epoch in range(max_epochs):
        if all(len(b) <= keep for b in current):
            break
        current, record = shrink_step(current, loss_for_epoch(epoch), sample, keep, rng)
        records.append(record)
    return current, records
