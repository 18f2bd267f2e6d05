"""NAS-BERT's latency lookup table (Xu et al., KDD 2021, §3.3: l(a) ~ sum over the L sublayers of l(a^l), from
a per-op table LT_lat measured once on the target device) and its check against archs measured whole.

Protocol (ours, at CPU scale): one sequence (batch 1) of `seq_len` tokens, a forward pass, `threads` CPU threads,
every workload timed interleaved with the others (mosnas.latency.measure.measure_interleaved: a slow phase of a
shared machine falls on all alike), median of `repeats`. The table holds each op of the space (identity: 0 ms,
as an export leaves it out) and the embeddings; an arch's table latency is the embeddings' plus its ops'. A sum of
per-op times ignores what a whole forward pass shares (cache, thread start-up, Python overhead per module), so
`check_table` measures some archs whole and reports how far the sums are off."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from mosnas.bert.model import BertDenseConfig, BertEmbeddings
from mosnas.bert.nasbert.hf_modeling import DenseSublayer, NasBertConfig, NasBertModel
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.latency.measure import device_info, measure_interleaved

EMBEDDINGS = "embeddings"  # the table's key of the embedding layer (every arch has it)


def _inputs(seq_len: int, vocab_size: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (1, seq_len), generator=g)
    return ids, torch.ones_like(ids), torch.randn(1, seq_len, width, generator=g)


@torch.no_grad()
def op_table(
    space: NasBertSpace,
    vocab_size: int = 30522,
    seq_len: int = 128,
    threads: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    seed: int = 0,
) -> dict[str, Any]:
    """LT_lat: {"ops": {op name: ms}, "embeddings_ms", "protocol": {...}, "device": {...}} for every op of
    `space` (identity 0 ms) on a (1, seq_len, width) input, and the embeddings of `vocab_size` rows. Times in
    milliseconds, the median of `repeats` interleaved rounds after `warmup`."""
    ids, mask, x = _inputs(seq_len, vocab_size, space.width)
    ops = [op for op in space.ops() if op.kind != "identity"]
    modules = [DenseSublayer(op.name, space.width, space.head_dim).eval() for op in ops]
    emb_cfg = BertDenseConfig(vocab_size, space.width, 0, space.width // space.head_dim, 4 * space.width)
    embeddings = BertEmbeddings(emb_cfg).eval()
    works = [lambda m=m: m(x, mask) for m in modules] + [lambda: embeddings(ids, torch.zeros_like(ids))]
    timed = measure_interleaved(works, warmup, repeats, threads=threads, seed=seed)
    table = {op.name: round(t["latency_ms"], 4) for op, t in zip(ops, timed)}
    if "identity" in space.op_names():
        table["identity"] = 0.0
    return {
        "ops": table,
        "embeddings_ms": round(timed[-1]["latency_ms"], 4),
        "protocol": {"batch": 1, "seq_len": seq_len, "threads": threads, "warmup": warmup, "repeats": repeats},
        "device": device_info("cpu", threads),
    }


def path_latency(path: tuple[str, ...], table: dict[str, Any]) -> float:
    """One block's latency (ms) by the table: the sum of its ops' entries. KeyError for an op not in it."""
    return sum(table["ops"][name] for name in path)


def arch_latency(arch: tuple[str, ...], table: dict[str, Any]) -> float:
    """A whole arch's latency (ms) by the table: the embeddings plus every sublayer's op."""
    return table["embeddings_ms"] + path_latency(tuple(arch), table)


@torch.no_grad()
def check_table(
    space: NasBertSpace, archs: list[tuple[str, ...]], table: dict[str, Any], vocab_size: int = 30522, seed: int = 0
) -> dict[str, Any]:
    """Measure each of `archs` whole (a NasBertModel of random weights, the table's protocol, interleaved) and
    set it beside its table latency: per arch `table_ms`, `measured_ms`, `ratio` (measured / table) and
    `spread_pct` (the interquartile range of its own repeats, % of its median: the noise of that measurement);
    overall `mape_pct` (mean |measured - table| / measured), `median_ratio`, and `calibrated_mape_pct`, the
    error left once the sums are scaled by that ratio (a per-device constant: what a whole pass shares)."""
    p = table["protocol"]
    ids, mask, _ = _inputs(p["seq_len"], vocab_size, space.width)
    models = []
    for arch in archs:
        ops = tuple(n for n in space.validate(arch) if n != "identity")
        models.append(
            NasBertModel(
                NasBertConfig(vocab_size=vocab_size, width=space.width, ops=list(ops), head_dim=space.head_dim)
            ).eval()
        )
    works = [lambda m=m: m(ids, mask) for m in models]
    timed = measure_interleaved(works, p["warmup"], p["repeats"], threads=p["threads"], seed=seed)
    rows = []
    for arch, t in zip(archs, timed):
        q = statistics.quantiles(t["times_ms"], n=4) if len(t["times_ms"]) >= 2 else [t["latency_ms"]] * 3
        est = arch_latency(arch, table)
        rows.append(
            {
                "arch": list(arch),
                "table_ms": round(est, 4),
                "measured_ms": round(t["latency_ms"], 4),
                "ratio": round(t["latency_ms"] / est, 4) if est > 0 else None,
                "spread_pct": round(100 * (q[2] - q[0]) / t["latency_ms"], 2),
            }
        )
    errors = [abs(r["measured_ms"] - r["table_ms"]) / r["measured_ms"] for r in rows]
    ratio = statistics.median(r["ratio"] for r in rows)
    scaled = [abs(r["measured_ms"] - ratio * r["table_ms"]) / r["measured_ms"] for r in rows]
    return {
        "archs": rows,
        "mape_pct": round(100 * statistics.fmean(errors), 2),
        "median_ratio": ratio,
        "calibrated_mape_pct": round(100 * statistics.fmean(scaled), 2),  # the sums x median_ratio
        "protocol": p,
    }
