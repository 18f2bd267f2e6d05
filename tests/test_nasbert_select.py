"""NAS-BERT's progressive shrinking with buckets (§3.2.2) and lookup-table model selection (§3.3): buckets by
params and latency, halving by loss, and the table's top-k checked against brute-force enumeration."""

import itertools
import json
import math
import random
import zlib

import numpy as np
import pytest

import mosnas.bert.nasbert.table as table_module
from mosnas.bert.nasbert.shrink import BucketStep, assign_buckets, progressive_shrinking, shrink_step
from mosnas.bert.nasbert.table import BlockTable, Candidate, Row, select
from mosnas.errors import ConfigError

# Synthetic ops with known costs: params and latency (ms) of each op.
COST = {
    "identity": (0, 0.0),
    "a": (1, 1.0),
    "b": (2, 2.0),
    "c": (3, 3.0),
    "d": (4, 4.0),
    "slow": (1, 4.0),  # few params, high latency: lands in different buckets
}


def params(path):
    return sum(COST[op][0] for op in path)


def latency(path):
    return sum(COST[op][1] for op in path)


LARGEST = ("d", "d")  # 8 params, 8 ms
PATHS = list(itertools.product(COST, repeat=2))


def test_buckets_follow_the_edges_and_drop_mismatches():
    out = assign_buckets(PATHS, params, latency, LARGEST, num_buckets=4)  # edges 0, 2, 4, 6, 8 (both)
    assert len(out.buckets) == 4
    assert LARGEST in out.buckets[3] and ("identity", "identity") in out.buckets[0]
    expected, dropped = [[], [], [], []], 0
    for path in PATHS:
        bp, bl = max(1, -(-params(path) // 2)), max(1, -(-int(latency(path)) // 2))  # ceil(x / 2), 0 -> 1
        if bp == bl:
            expected[bp - 1].append(path)
        else:
            dropped += 1
    assert out.buckets == expected and out.dropped == dropped > 0
    assert ("slow", "identity") not in sum(out.buckets, [])  # 1 param (bucket 1), 4 ms (bucket 2)
    assert ("a", "a") in out.buckets[0] and ("a", "b") in out.buckets[1]  # 2 is in bucket 1, 3 in bucket 2
    assert sum(map(len, out.buckets)) + out.dropped == len(PATHS)
    # One bucket takes everything; more buckets than paths leave some empty.
    assert assign_buckets(PATHS, params, latency, LARGEST, 1).dropped == 0
    assert [] in assign_buckets([LARGEST], params, latency, LARGEST, 10).buckets


def test_bucket_arguments_are_checked():
    with pytest.raises(ConfigError, match="num_buckets must be >= 1, got 0"):
        assign_buckets(PATHS, params, latency, LARGEST, 0)
    with pytest.raises(ConfigError, match="expected 0..2.0"):
        assign_buckets(PATHS, params, latency, ("a", "a"), 2)  # not the largest
    with pytest.raises(ConfigError, match="positive params and latency"):
        assign_buckets(PATHS, params, latency, ("identity",), 2)


def _buckets(rng, sizes):
    ops = [f"op{i}" for i in range(200)]
    return [[(f"bucket{b}", op) for op in rng.sample(ops, n)] for b, n in enumerate(sizes)]


def _loss(path):
    return zlib.crc32(repr(path).encode()) / 2**32  # fixed per path, in [0, 1)


def test_a_step_removes_the_worst_half_of_the_sampled():
    sizes = [0, 1, 3, 8, 50, 120]
    buckets = _buckets(random.Random(1), sizes)
    new, record = shrink_step(buckets, _loss, sample=40, keep_min=2, rng=random.Random(7))
    # Replay the sampling with the same seed to know which paths were scored.
    replay = random.Random(7)
    for old, kept, step in zip(buckets, new, record):
        assert isinstance(step, BucketStep) and step.before == len(old) and step.after == len(kept)
        if not old:
            assert kept == [] and step == BucketStep(0, 0, 0, 0, None)
            continue
        sampled = [old[i] for i in replay.sample(range(len(old)), min(40, len(old)))]
        assert step.sampled == len(sampled) and step.best_loss == min(map(_loss, sampled))
        assert step.removed == min(len(sampled) // 2, max(0, len(old) - 2)) and step.after >= 1
        removed = set(old) - set(kept)
        assert len(removed) == step.removed and removed <= set(sampled)  # unsampled paths stay
        worst = sorted(sampled, key=_loss)[len(sampled) - step.removed :]
        assert removed == set(worst)
        assert kept == [p for p in old if p not in removed]  # survivors keep their order
    assert [s.after for s in record] == [0, 1, 2, 4, 30, 100]  # 50 - 40 // 2, 120 - 40 // 2
    again, record2 = shrink_step(buckets, _loss, sample=40, keep_min=2, rng=random.Random(7))
    assert again == new and record2 == record
    other, _ = shrink_step(buckets, _loss, sample=40, keep_min=2, rng=random.Random(8))
    assert other != new


def test_ties_and_bad_arguments():
    bucket = [("x", str(i)) for i in range(6)]
    new, _ = shrink_step([bucket], lambda p: 1.0, sample=6, keep_min=1, rng=random.Random(0))
    assert new == [bucket[:3]]  # equal losses: the later paths go
    with pytest.raises(ConfigError, match="sample must be >= 2"):
        shrink_step([bucket], _loss, sample=1, keep_min=1, rng=random.Random(0))
    with pytest.raises(ConfigError, match="keep_min must be >= 1"):
        shrink_step([bucket], _loss, sample=4, keep_min=0, rng=random.Random(0))
    with pytest.raises(ConfigError, match="keep must be >= 1"):
        progressive_shrinking([bucket], lambda e: _loss, sample=4, keep=0, rng=random.Random(0), max_epochs=3)


def test_progressive_shrinking_stops_at_keep_per_bucket():
    buckets = _buckets(random.Random(2), [0, 3, 40, 150])
    epochs = []

    def loss_for_epoch(epoch):
        epochs.append(epoch)
        return lambda p: _loss(p) + epoch  # the supernet "trains" between epochs

    final, records = progressive_shrinking(
        buckets, loss_for_epoch, sample=30, keep=5, rng=random.Random(3), max_epochs=50
    )
    assert [len(b) for b in final] == [0, 3, 5, 5]
    assert epochs == list(range(len(records))) and len(records) > 1
    for rec in records:
        assert all(s.removed <= s.sampled // 2 and (s.after >= 1 or s.before == 0) for s in rec)
        assert all(s.after >= 5 or s.after == s.before for s in rec)  # never below keep by shrinking
    assert all(set(f) <= set(b) for f, b in zip(final, buckets))
    capped, short = progressive_shrinking(
        buckets, loss_for_epoch, sample=30, keep=5, rng=random.Random(3), max_epochs=1
    )
    assert len(short) == 1 and len(capped[3]) == 150 - 15


def _tables(rng, num_blocks=3, num_paths=12, integer=False):
    tables = []
    for b in range(num_blocks):
        rows = []
        for i in range(num_paths):
            if integer:  # few distinct values: many exact ties in the sums
                loss, p, lat = rng.randint(0, 3), rng.randint(1, 4), rng.randint(1, 3)
            else:
                loss, p, lat = rng.random(), rng.uniform(1e5, 1e6), rng.uniform(0.1, 2.0)
            rows.append(Row((f"b{b}", f"op{i:02d}"), loss, p, lat))
        rng.shuffle(rows)  # the tables' row order must not matter
        tables.append(BlockTable(tuple(rows)))
    return tables


def _brute(tables, max_p, max_l, extra_p, extra_l, top):
    archs = []
    for combo in itertools.product(*(t.rows for t in tables)):
        p = sum(r.params for r in combo) + extra_p
        lat = sum(r.latency_ms for r in combo) + extra_l
        if (max_p is None or p <= max_p) and (max_l is None or lat <= max_l):
            loss = sum(r.loss for r in combo)
            archs.append((loss, p, lat, tuple(r.path for r in combo)))
    archs.sort()  # the documented tie-break: loss, params, latency, paths
    return [Candidate(paths, loss, p, lat) for loss, p, lat, paths in archs[:top]]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("integer", [False, True])
def test_select_equals_brute_force(seed, integer):
    rng = random.Random(seed)
    tables = _tables(rng, integer=integer)
    extra_p, extra_l = (10, 1) if integer else (2e6, 3.5)
    sums_p = sorted(sum(r.params for r in c) + extra_p for c in itertools.product(*(t.rows for t in tables)))
    sums_l = sorted(sum(r.latency_ms for r in c) + extra_l for c in itertools.product(*(t.rows for t in tables)))
    n = len(sums_p)
    budgets = [(None, None), (sums_p[n // 2], None), (None, sums_l[n // 3]), (sums_p[n // 4], sums_l[n // 4])]
    budgets.append((sums_p[5], sums_l[-1]))  # tight: only a few archs qualify
    for max_p, max_l in budgets:
        for top in (1, 7, 100):
            got = select(tables, max_p, max_l, extra_params=extra_p, extra_latency_ms=extra_l, top=top)
            want = _brute(tables, max_p, max_l, extra_p, extra_l, top)
            assert got == want, (max_p, max_l, top)
            rows = [{r.path: r for r in t.rows} for t in tables]
            for c in got:
                picked = [rows[i][p] for i, p in enumerate(c.paths)]
                assert c.params == sum(r.params for r in picked) + extra_p
                assert c.latency_ms == sum(r.latency_ms for r in picked) + extra_l
                assert (max_p is None or c.params <= max_p) and (max_l is None or c.latency_ms <= max_l)


def test_select_one_block_and_infeasible_budgets():
    tables = _tables(random.Random(5), num_blocks=1, num_paths=5)
    assert [c.loss for c in select(tables, top=10)] == sorted(r.loss for r in tables[0].rows)
    tables = _tables(random.Random(5), integer=True)  # every path has >= 1 param and >= 1 ms
    min_p = sum(min(r.params for r in t.rows) for t in tables) + 100
    min_l = sum(min(r.latency_ms for r in t.rows) for t in tables) + 0.5
    with pytest.raises(ConfigError, match=f"smallest params of any arch is {min_p:g}.*latency {min_l:g} ms"):
        select(tables, max_params=min_p - 1, extra_params=100, extra_latency_ms=0.5)
    with pytest.raises(ConfigError, match="no arch meets"):
        select(tables, max_latency_ms=min_l - 0.25, extra_params=100, extra_latency_ms=0.5)
    with pytest.raises(ConfigError, match="top must be >= 1"):
        select(tables, top=0)
    with pytest.raises(ConfigError, match="at least one block table"):
        select([])


def _numpy_brute(tables, max_p, max_l, top):
    cols = [np.array([[r.loss, r.params, r.latency_ms] for r in sorted(t.rows)]) for t in tables]
    grids = np.meshgrid(*[np.arange(len(c)) for c in cols], indexing="ij")  # C order = the paths' order
    idx = [g.ravel() for g in grids]
    loss, p, lat = (sum(c[i, k] for c, i in zip(cols, idx)) for k in range(3))
    ok = np.flatnonzero((p <= max_p) & (lat <= max_l))
    ok = ok[np.lexsort((ok, lat[ok], p[ok], loss[ok]))][:top]
    return [tuple(sorted(t.rows)[i[j]].path for t, i in zip(tables, idx)) for j in ok]


def test_select_in_chunks_equals_brute_force(monkeypatch):
    # 4 blocks of 20 paths (160,000 archs); small chunks so the running top-k and the early stop are used.
    monkeypatch.setattr(table_module, "_CHUNK", 200)
    tables = _tables(random.Random(9), num_blocks=4, num_paths=20)
    for max_p, max_l in [(2.0e6, 3.0), (1.5e6, 2.0), (math.inf, math.inf)]:
        for top in (50, 500):
            got = select(tables, max_params=max_p, max_latency_ms=max_l, top=top)
            assert [c.paths for c in got] == _numpy_brute(tables, max_p, max_l, top)


def test_table_round_trips_through_json_and_checks_rows():
    table = _tables(random.Random(4), num_blocks=1)[0]
    again = BlockTable.from_rows(json.loads(json.dumps(table.to_rows())))
    assert again == table and isinstance(again.rows[0].path, tuple)
    with pytest.raises(ConfigError, match="row 0: expected keys"):
        BlockTable.from_rows([{"path": ["a"], "loss": 1.0}])
    with pytest.raises(ConfigError, match="appears twice"):
        BlockTable((Row(("a",), 1, 1, 1), Row(("a",), 2, 2, 2)))
    with pytest.raises(ConfigError, match="must be finite"):
        BlockTable((Row(("a",), float("nan"), 1, 1),))
    with pytest.raises(ConfigError, match="at least one path"):
        BlockTable(())
