"""Latency: HAT's measurement protocol on real exported models, and predictors fit on exact FLOPs."""

import json
import math
import random

import pytest
import torch

from mosnas.errors import ConfigError, PredictorError
from mosnas.latency.measure import (
    LatencyPredictor,
    LinearPredictor,
    evaluate_predictor,
    measure,
    measure_archs,
    measure_interleaved,
    noise_floor,
    read_samples,
    timing_device,
    workload_precision,
    write_samples,
)
from mosnas.latency.predictors import read_meta
from mosnas.latency.stats import kendall_tau, scatter_plot
from mosnas.mt.costs import count_flops
from mosnas.mt.decode import measure_latency
from tests.conftest import DATA, make_supernet

SETTINGS = dict(src_len=6, tgt_len=4, beam=2, warmup=1, repeats=5)


@pytest.fixture(autouse=True)
def _one_thread():
    # The models here are tiny: extra threads only add synchronization (and crawl on a busy machine).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _flops_samples(space, n: int, seed: int = 0) -> list[dict]:
    """A deterministic stand-in for measured latencies: exact FLOPs, scaled to a few ms."""
    rng = random.Random(seed)
    archs = list(dict.fromkeys(space.sample(rng) for _ in range(n)))
    return [{"arch": a.to_dict(), "latency_ms": count_flops(a, space.qkv_dim, 100, 30, 30) / 1e5} for a in archs]


def test_kendall_tau():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)
    # tau-b with a tie in x: 5 concordant pairs, 0 discordant, 5 and 6 untied pairs
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    with pytest.raises(PredictorError, match="equal-length"):
        kendall_tau([1, 2], [1, 2, 3])


def test_mlp_predictor_learns_flops_and_beats_linear(space):
    samples = _flops_samples(space, 300)
    train, test = samples[:240], samples[240:]
    mlp = LatencyPredictor(space, hidden=64, num_layers=2, seed=0).fit(train, steps=1000)
    linear = LinearPredictor(space).fit(train)
    got, base = evaluate_predictor(mlp, test), evaluate_predictor(linear, test)
    assert set(got) == {"rmse_ms", "mape_pct", "kendall_tau", "num_samples"} and got["num_samples"] == len(test)
    assert got["mape_pct"] < 3.0 and got["kendall_tau"] > 0.9, got
    assert base["mape_pct"] < 10.0, base  # FLOPs are nearly linear in the features: a fair baseline
    assert got["mape_pct"] < base["mape_pct"], (got, base)


def test_predictor_is_seeded_and_round_trips(space, tmp_path):
    samples = _flops_samples(space, 60, seed=1)
    archs = [space.sample(random.Random(2)) for _ in range(10)]
    a = LatencyPredictor(space, hidden=32, num_layers=2, seed=3).fit(samples, steps=100)
    b = LatencyPredictor(space, hidden=32, num_layers=2, seed=3).fit(samples, steps=100)
    assert a.predict(archs) == b.predict(archs)
    a.save(tmp_path / "pred")
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["predictor.json", "predictor.safetensors"]
    loaded = LatencyPredictor.load(tmp_path / "pred", space.schema)
    assert loaded.predict(archs) == a.predict(archs)
    assert loaded.space == space and loaded(archs[0]) == a.predict(archs[:1])[0]


def test_predictor_errors(space, tmp_path):
    with pytest.raises(PredictorError, match="not found"):
        LatencyPredictor.load(tmp_path / "missing", space.schema)
    with pytest.raises(PredictorError, match="latency_ms"):
        LatencyPredictor(space).fit([{"arch": space.smallest().to_dict()}])
    with pytest.raises(PredictorError, match="positive"):
        LinearPredictor(space).fit([{"arch": space.smallest().to_dict(), "latency_ms": 0}])
    with pytest.raises(PredictorError, match="not fitted"):
        LinearPredictor(space).predict([space.smallest()])
    LatencyPredictor(space, hidden=8, num_layers=1).save(tmp_path / "p")
    big = LatencyPredictor(space, hidden=16, num_layers=1)
    meta = json.loads((tmp_path / "p" / "predictor.json").read_text())
    meta["hidden"] = big.hidden  # the description no longer matches the weights
    (tmp_path / "p" / "predictor.json").write_text(json.dumps(meta))
    with pytest.raises(PredictorError, match="does not match"):
        LatencyPredictor.load(tmp_path / "p", space.schema)


def test_measure_latency_records_settings(space):
    model = make_supernet(space, "shared").export(space.smallest())
    torch.set_num_threads(2)
    result = measure_latency(model, threads=1, **SETTINGS)
    assert torch.get_num_threads() == 2  # the caller's setting is restored
    assert result["latency_ms"] > 0 and result["mean_ms"] > 0
    assert len(result["times_ms"]) == SETTINGS["repeats"] and all(t > 0 for t in result["times_ms"])
    assert result["settings"] == {**SETTINGS, "precision": "fp32"}
    dev = result["device"]
    assert dev["device"] == "cpu" and dev["threads"] == 1 and dev["torch"] == torch.__version__ and dev["name"]
    json.dumps(result)  # a sample is plain JSON


def test_measure_times_any_workload():
    """The timing protocol knows no model: a family hands it the work of one sample."""
    calls = []
    result = measure(lambda: calls.append(1), warmup=2, repeats=10, threads=1)
    assert len(calls) == 12 and len(result["times_ms"]) == 10  # warm-ups are run, not timed
    assert 0 <= result["latency_ms"] and result["device"]["device"] == "cpu" and result["device"]["threads"] == 1
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        measure(lambda: None, repeats=0)


def test_measure_latency_in_bf16_records_it(space):
    model = make_supernet(space, "shared").export(space.smallest())
    result = measure_latency(model, threads=1, dtype=torch.bfloat16, **SETTINGS)
    assert result["settings"]["precision"] == "bf16" and result["latency_ms"] > 0
    assert next(model.parameters()).dtype == torch.bfloat16  # the model ran in the precision recorded


def test_timing_device_is_a_setting():
    assert timing_device("cpu") == torch.device("cpu")
    assert timing_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no such CUDA device"):
            timing_device("cuda:0")
    with pytest.raises(ConfigError, match="unknown device"):
        timing_device("tpu-ish")


def test_measure_archs_interleaved_feed_a_predictor(space, tmp_path):
    from mosnas import mt
    from mosnas.config import LatencyConfig

    net = make_supernet(space, "neuron")
    archs = [space.smallest(), space.largest(), space.sample(random.Random(4))]
    lc = LatencyConfig(src_len=6, tgt_len=4, beam=2)
    work = lambda model: mt.workload(model, lc, torch.device("cpu"), torch.float32)
    timing = {"warmup": 1, "repeats": 3, "device": "cpu", "threads": 1}
    samples = measure_archs(net, archs, work, timing, reference=archs[2], interleave=2, progress=False)
    # groups of 2 archs, each followed by the reference arch timed with them
    assert [s.get("reference", False) for s in samples] == [False, False, True, False, True]
    assert [s["arch"] for s in samples if not s.get("reference")] == [a.to_dict() for a in archs]
    assert all(len(s["times_ms"]) == 3 and s["latency_ms"] > 0 and s["cost_s"] > 0 for s in samples)
    assert samples[0]["device"]["threads"] == 1
    write_samples(samples, tmp_path / "latency.jsonl")
    assert read_samples(tmp_path / "latency.jsonl") == samples
    pred = LinearPredictor(space).fit(samples)
    assert len(pred.predict(archs)) == 3
    png = scatter_plot([s["latency_ms"] for s in samples], pred.predict(archs + archs[2:] * 2), tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interleaved_rounds_run_every_work_in_a_seeded_order():
    order = []
    works = [lambda i=i: order.append(i) for i in range(4)]
    timed = measure_interleaved(works, warmup=1, repeats=3, threads=1, seed=5)
    assert len(order) == 16 and all(sorted(order[r * 4 : r * 4 + 4]) == [0, 1, 2, 3] for r in range(4))
    assert [len(t["times_ms"]) for t in timed] == [3, 3, 3, 3]  # warm-up rounds are not timed
    again = []
    measure_interleaved([lambda i=i: again.append(i) for i in range(4)], warmup=1, repeats=3, threads=1, seed=5)
    assert again == order  # seeded
    assert len({tuple(order[r * 4 : r * 4 + 4]) for r in range(4)}) > 1  # a fresh order each round
    with pytest.raises(ConfigError, match="repeats must be >= 1"):
        measure_interleaved(works, repeats=0)


def test_noise_floor_is_the_spread_of_one_arch_remeasured():
    floor = noise_floor([100.0, 102.0, 98.0, 100.0])
    assert floor["n"] == 4 and floor["median_ms"] == 100.0
    assert floor["mape_pct"] == pytest.approx(1.0) and floor["range_pct"] == pytest.approx(4.0)
    assert floor["rel_std_pct"] == pytest.approx(1.633, abs=1e-3)
    assert noise_floor([5.0])["rel_std_pct"] is None
    with pytest.raises(PredictorError):
        noise_floor([])


def test_peak_memory_of_an_exported_model_is_measured(space):
    from mosnas import mt
    from mosnas.config import LatencyConfig, SupernetConfig
    from mosnas.mt.costs import costs

    lc, cpu = LatencyConfig(src_len=8, tgt_len=6, beam=2), torch.device("cpu")
    small, large = (make_supernet(space, "shared").export(a) for a in (space.smallest(), space.largest()))
    m_small, m_large = mt.memory(small, lc, cpu, torch.float32), mt.memory(large, lc, cpu, torch.float32)
    params = sum(p.numel() for p in large.parameters())
    assert m_large["weights_mb"] == pytest.approx(params * 4 / 2**20, rel=0.01)
    assert m_large["activations_mb"] > 0 and m_large["peak_mb"] > m_small["peak_mb"]
    assert "profiler" in m_large["method"]
    estimate = costs(space.largest(), space, 100, SupernetConfig(), lc)["memory_mb"]
    assert 0.5 < estimate / m_large["peak_mb"] < 2.0, (estimate, m_large)  # the search limit's estimate is close


def test_linear_predictor_round_trips(space, tmp_path):
    samples = _flops_samples(space, 40, seed=3)
    archs = [space.sample(random.Random(7)) for _ in range(5)]
    lin = LinearPredictor(space).fit(samples)
    lin.save(tmp_path / "lin")
    assert LinearPredictor.load(tmp_path / "lin", space.schema).predict(archs) == pytest.approx(lin.predict(archs))
    with pytest.raises(PredictorError, match="not 'mlp'"):
        read_meta(tmp_path / "lin", "mlp")


def test_auto_latency_precision_is_decided_by_the_workload():
    calls = []

    def time_in(ms_fp32, ms_bf16):
        def f(dtype):
            calls.append(dtype)
            return ms_bf16 if dtype == torch.bfloat16 else ms_fp32

        return f

    cpu = torch.device("cpu")
    assert workload_precision("fp32", cpu, 1, time_in(10, 5)).name == "fp32" and not calls  # asked: never timed
    auto = workload_precision("auto", cpu, 1, time_in(158.5, 174.7))
    if auto.probe.get("bf16_speedup", 0) >= 1.2:  # a CPU whose matmul probe favours bf16: the workload decides
        assert auto.name == "fp32" and "174.70 ms in bf16 vs 158.50 ms in fp32" in auto.reason
        assert workload_precision("auto", cpu, 1, time_in(10.0, 6.0)).name == "bf16"
    else:  # emulated bf16 is ruled out by the probe alone, without timing the workload in it
        assert auto.name == "fp32" and not calls


def test_zero_latency_threads_mean_one(space):
    from mosnas import mt
    from mosnas.config import LatencyConfig

    model = make_supernet(space, "shared").export(space.smallest())
    lc = LatencyConfig(threads=0, src_len=6, tgt_len=6, beam=2, warmup=0, repeats=2)
    sample = mt.time_model(model, lc, torch.device("cpu"), torch.float32)
    assert sample["latency_ms"] > 0 and sample["device"]["threads"] == 1


@pytest.mark.slow
def test_latency_dataset_fit_and_search_with_another_devices_predictor(tiny_run_dir, tmp_path, capsys):
    """`mosnas latency RUN --dataset` writes a portable dataset; `--fit` turns it (or HAT's) into a predictor
    that `mosnas search --predictor` uses; a memory limit no arch meets is one line."""
    from mosnas.cli.main import main
    from mosnas.latency.datasets import read_dataset

    dataset, pred = tmp_path / "lat.csv", tmp_path / "pred"
    assert main(["latency", str(tiny_run_dir), "--dataset", str(dataset), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "table " in out and "chosen:" in out and "noise floor" in out
    data = read_dataset(dataset)
    assert data["rows"] == 12 and data["source"] == "mosnas" and (data["y"] > 0).all()
    assert main(["latency", "--fit", str(dataset), "--out", str(pred)]) == 0
    assert (pred / "predictor.json").is_file() and "chosen:" in capsys.readouterr().out
    assert main(["search", str(tiny_run_dir), "--latency-ms", "1e6", "--predictor", str(pred), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "another device's" in out and "peak memory" in out
    assert main(["search", str(tiny_run_dir), "--max-memory-mb", "0.001", "--quiet"]) == 2
    assert "memory <= " in capsys.readouterr().err
    assert main(["search", str(tiny_run_dir), "--predictor", str(pred), "--quiet"]) == 2  # no --latency-ms


def test_training_peak_memory_grows_with_the_generators_experts(space, spm_model):
    """The supernet's training peak (one sandwich step + AdamW's first step) per generator: the mixture
    generators hold 2 experts, so their weights, gradients and optimizer state weigh more than shared's."""
    from mosnas.config import DataConfig
    from mosnas.engine.schedule import step_archs
    from mosnas.latency.memory import peak_memory
    from mosnas.mt.data import load_parallel
    from mosnas.mt.task import train_step

    data, _ = load_parallel(DataConfig(dir=str(DATA)), "train", spm_model.processor, limit=64)
    batch, cpu = data.collate(data.batches(0)[0]), torch.device("cpu")
    peaks = {}
    for gen in ("shared", "neuron"):
        net = make_supernet(space, gen, vocab=spm_model.vocab)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

        def step(net=net, opt=opt) -> None:
            train_step(net, batch, step_archs(space, "sandwich", 1, 1, 0), 0.1, 0.0, cpu, False)
            opt.step()

        peaks[gen] = peak_memory(net, step, cpu, warmup=False, grad=True)
        # gradients and AdamW's two moments alone are 3x the weights
        assert peaks[gen]["activations_mb"] > 2.9 * peaks[gen]["weights_mb"], peaks[gen]
    assert peaks["neuron"]["peak_mb"] > peaks["shared"]["peak_mb"]
