"""The BERT family's per-layer latency lookup table: which layer shapes an arch is made of, and the work of
timing one shape alone under the BERT protocol (one batch of `latency.src_len` tokens; the idea of NAS-BERT,
Xu et al. 2021: time each layer shape once, sum over an arch's layers; mosnas.latency.table calibrates the sum).

An arch's latency splits into two groups of parts:
- `base` (h): the embeddings (word, position and token-type lookups, LayerNorm) and the pooler, once;
- `encoder` (h, a, f): one encoder layer (attention with a heads, FFN of width f) over the sequence, per layer."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import torch

from mosnas.bert.costs import fixed_ids
from mosnas.bert.model import BertDenseConfig, BertEncoder, BertLayer
from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.errors import PredictorError
from mosnas.latency.table import parse_part_key, part_key


def latency_parts(arch: Any) -> dict[str, list[str]]:
    """The table keys `arch`'s latency sums, per group: one base, one per encoder layer (all layers alike)."""
    layer = part_key("layer", h=arch.hidden, a=arch.heads, f=arch.ffn)
    return {"base": [part_key("base", h=arch.hidden)], "encoder": [layer] * arch.layers}


def space_parts(space: Space) -> list[str]:
    """Every key an arch of `space` can use (the table to measure)."""
    c = space.choices
    keys = [part_key("base", h=h) for h in c["hidden"]]
    return keys + [part_key("layer", h=h, a=a, f=f) for h, a, f in itertools.product(c["hidden"], c["heads"], c["ffn"])]


def part_workload(
    key: str,
    space: Space,
    vocab_size: int,
    sn: SupernetConfig,
    lc: LatencyConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[], None]:
    """The work of timing one layer shape alone (BERT's init: the time does not depend on the weights), on
    `device` in `dtype`, for one sequence (batch 1) of `lc.src_len` tokens."""
    kind, v = parse_part_key(key, "BERT")
    if kind not in ("base", "layer") or "h" not in v:
        raise PredictorError(f"not a layer-shape key of the BERT family: {key!r}")
    cfg = BertDenseConfig(vocab_size, v["h"], 0, v.get("a", 1), v.get("f", 1), dropout=0.0, attention_dropout=0.0)
    t = lc.src_len
    if kind == "layer":
        layer = BertLayer(cfg).to(device, dtype).eval()
        x, mask = (
            torch.randn(1, t, v["h"], device=device, dtype=dtype),
            torch.zeros(1, 1, 1, t, device=device, dtype=dtype),
        )
        return torch.no_grad()(lambda: layer(x, mask))
    model = BertEncoder(cfg).to(device, dtype).eval()  # no layers: embeddings and pooler
    ids = fixed_ids(vocab_size, 1, t, device)
    return torch.no_grad()(lambda: model(ids, torch.ones_like(ids)))
