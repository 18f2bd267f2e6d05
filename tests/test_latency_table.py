"""The per-layer lookup table (NAS-BERT's idea): the layer shapes of an arch, each timed alone, summed and
calibrated on a few whole archs."""

import random

import pytest
import torch

from mosnas import mt
from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.errors import PredictorError
from mosnas.latency.measure import measure_interleaved
from mosnas.latency.predictors import evaluate_predictor
from mosnas.latency.table import TablePredictor

GROUPS = ("base", "encoder", "decoder")


def _synthetic_table(space) -> dict[str, float]:
    """A deterministic stand-in for timed layer shapes: a cost that grows with every dim of the key."""
    table = {}
    for key in mt.space_parts(space):
        dims = [int(x.split("=")[1]) for x in key.split()[1:]]
        table[key] = 0.01 * sum(dims) + (0.5 if key.startswith("dec") else 0.2)
    return table


def test_an_arch_is_made_of_table_keys_of_its_space(space):
    keys = set(mt.space_parts(space))
    rng = random.Random(0)
    for arch in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(30)]:
        parts = mt.latency_parts(arch)
        assert tuple(parts) == GROUPS
        assert len(parts["encoder"]) == arch.encoder_layers and len(parts["decoder"]) == arch.decoder_layers
        assert set(sum(parts.values(), [])) <= keys
    c = space.choices
    decoder = len(c["decoder_embed_dim"]) * len(c["encoder_embed_dim"]) * len(c["decoder_ffn_dim"])
    decoder *= len(c["decoder_self_heads"]) * len(c["decoder_cross_heads"]) * len(c["decoder_span"])
    assert sum(k.startswith("dec ") for k in keys) == decoder  # one entry per decoder layer shape


def test_calibrated_sum_recovers_an_additive_latency(space):
    table = _synthetic_table(space)
    rng = random.Random(1)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(60)))
    plain = TablePredictor(space, mt.latency_parts, table, GROUPS)
    # "measured" = 3 ms of overhead + 1.5x the layers' table times (what timing a layer alone misses)
    samples = [{"arch": a.to_dict(), "latency_ms": 3.0 + 1.5 * sum(plain.sums(a))} for a in archs]
    assert evaluate_predictor(plain, samples)["mape_pct"] > 10  # the plain sum misses the overhead
    fitted = TablePredictor(space, mt.latency_parts, table, GROUPS).fit(samples[:10])  # 10 archs calibrate
    got = evaluate_predictor(fitted, samples[10:])
    assert got["mape_pct"] < 0.5 and got["kendall_tau"] > 0.99, got
    assert fitted.calibration_samples == 10 and all(c >= 0 for c in fitted.coef)


def test_table_round_trips_and_refuses_another_space(space, tmp_path):
    table = _synthetic_table(space)
    samples = [{"arch": a.to_dict(), "latency_ms": 1.0 + a.decoder_layers} for a in (space.smallest(), space.largest())]
    pred = TablePredictor(space, mt.latency_parts, table, GROUPS).fit(samples * 3)
    pred.save(tmp_path / "t")
    loaded = TablePredictor.load(tmp_path / "t", space.schema, mt.latency_parts)
    arch = space.sample(random.Random(3))
    assert loaded(arch) == pytest.approx(pred(arch)) and loaded.table == table
    missing = {k: v for k, v in table.items() if not k.startswith("dec ")}
    with pytest.raises(PredictorError, match="no entry"):
        TablePredictor(space, mt.latency_parts, missing, GROUPS)(arch)
    with pytest.raises(PredictorError, match="not found"):
        TablePredictor.load(tmp_path / "t2", space.schema, mt.latency_parts)


def test_every_layer_shape_is_timed_alone(space):
    lc, cpu = LatencyConfig(src_len=6, tgt_len=4, beam=2), torch.device("cpu")
    keys = [k for k in mt.space_parts(space) if "k=2" in k or k.startswith(("base", "enc"))][:12]
    works = [mt.part_workload(k, space, 100, SupernetConfig(), lc, cpu, torch.float32) for k in keys]
    timed = measure_interleaved(works, warmup=1, repeats=3, threads=1)
    assert all(t["latency_ms"] > 0 for t in timed)
    with pytest.raises(PredictorError, match="not a layer-shape key"):
        mt.part_workload("attn x=1", space, 100, SupernetConfig(), lc, cpu, torch.float32)
