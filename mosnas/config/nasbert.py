"""The `nasbert:` section of a run config (family: nasbert): NAS-BERT's progressive shrinking with buckets (Xu et
al., KDD 2021, §3.2.2; the paper's numbers scaled down for 2 CPU cores) and how its supernet starts. The teacher,
the sequence length and the held-out text are the `bert:` section's."""

from __future__ import annotations

from dataclasses import dataclass

from mosnas.config.settings import num, one_of


@dataclass(frozen=True)
class NasBertConfig:
    """NAS-BERT (family: nasbert): buckets, shrinking schedule and the supernet's start."""

    buckets: int = num(5, gt=0)  # buckets per block by parameters and latency (the paper: 10)
    bucket_paths: int = num(200, ge=2)  # candidate paths per bucket, sampled once; the paper: E = 2,000
    keep: int = num(5, gt=0)  # shrinking stops at this many paths per bucket (the paper: m = 10)
    warmup_epochs: int = num(3, ge=0)  # epochs before the first shrink (the paper: 3)
    score_sequences: int = num(16, gt=0)  # held-out sequences a shrink scores paths on (the paper: 5 batches)
    pool_draws: int = num(20000, gt=0)  # uniform path draws per block the buckets are filled from
    top: int = num(100, gt=0)  # archs of lowest summed table loss run whole per budget (the paper: T = 100)
    # teacher: the widest MHA/FFN ops start as the teacher's layers | random (the paper: from scratch)
    init: str = one_of("teacher", ("teacher", "random"))
    # the paper's first KD stage for each pick, end to end on data.train (mosnas.bert.nasbert.distill): updates and
    # a wall cap in minutes (0 and 0: none; the export is then the supernet's slices), and its AdamW lr
    distill_steps: int = num(0, ge=0)
    distill_minutes: float = num(0.0, ge=0)
    distill_lr: float = num(1e-4, gt=0)
