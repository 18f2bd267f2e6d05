"""NAS-BERT's latency lookup table (issue 27): one entry per op (identity 0 ms) and the embeddings, an arch's
table latency is their sum, and archs measured whole are set beside their sums (the difference reported)."""

import random

import pytest

from mosnas.bert.nasbert.latency import arch_latency, check_table, op_table, path_latency
from mosnas.bert.nasbert.space import NasBertSpace

SMALL = NasBertSpace(width=64, sublayers=4, blocks=2, hidden_sizes=(32, 64), head_dim=16)


@pytest.fixture(scope="module")
def table():
    return op_table(SMALL, vocab_size=500, seq_len=32, threads=1, warmup=2, repeats=9)


def test_the_table_has_every_op_and_sums_an_arch(table):
    assert set(table["ops"]) == set(SMALL.op_names()) and table["ops"]["identity"] == 0.0
    assert all(v > 0 for k, v in table["ops"].items() if k != "identity") and table["embeddings_ms"] > 0
    assert table["protocol"] == {"batch": 1, "seq_len": 32, "threads": 1, "warmup": 2, "repeats": 9}
    arch = ("mha64", "identity", "conv5_32", "ffn64")
    blocks = SMALL.split(arch)
    assert arch_latency(arch, table) == pytest.approx(
        table["embeddings_ms"] + sum(path_latency(b, table) for b in blocks)
    )
    assert path_latency(("identity", "identity"), table) == 0.0


def test_archs_measured_whole_are_reported_beside_their_sums(table):
    rng = random.Random(0)
    archs = [sum((SMALL.sample_path(rng) for _ in range(2)), ()) for _ in range(4)] + [SMALL.largest_path() * 2]
    report = check_table(SMALL, archs, table, vocab_size=500)
    rows = report["archs"]
    assert [tuple(r["arch"]) for r in rows] == archs
    for r in rows:
        assert r["table_ms"] == pytest.approx(arch_latency(tuple(r["arch"]), table), abs=1e-3)
        assert r["measured_ms"] > 0 and r["ratio"] == pytest.approx(r["measured_ms"] / r["table_ms"], rel=1e-3)
        assert r["spread_pct"] >= 0
    # the same modules run in both: a sum of per-op times is the whole pass to within a small factor
    assert 1 / 3 < report["median_ratio"] < 3, report
    k = report["median_ratio"]
    left = sum(abs(r["measured_ms"] - k * r["table_ms"]) / r["measured_ms"] for r in rows) / len(rows)
    assert report["calibrated_mape_pct"] == pytest.approx(100 * left, abs=0.01)
