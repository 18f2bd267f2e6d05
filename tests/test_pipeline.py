"""Stages after training: latency, search, fine-tuning and the report, on a tiny trained run."""

import json

import pytest
import torch

from mosnas.config import SearchConfig
from mosnas.engine.load import load_run
from mosnas.mt.data import load_parallel
from mosnas.mt.space import Arch
from mosnas.mt.task import evaluate_loss
from mosnas.pipeline.finetune import finetune
from mosnas.pipeline.latency import latency_stage
from mosnas.pipeline.report import pareto_plot, summary_markdown
from mosnas.pipeline.run import export_and_score
from mosnas.pipeline.search import budgets, search_stage


@pytest.fixture(scope="module")
def run(tiny_run_dir):
    return load_run(tiny_run_dir)


def test_budgets_from_fractions_and_absolute_values():
    sc = SearchConfig(latency_ms=(5.0,), latency_fractions=(0.5,))
    assert budgets(sc, (2.0, 4.0)) == {"latency-5ms": 5.0, "latency-frac0.5": 3.0}
    assert budgets(SearchConfig(latency_fractions=(0.001,)), (4.6881, 9.0)) == {"latency-frac0.001": 4.7}  # rounded up
    assert budgets(SearchConfig(max_params=10_000), None) == {"limits": None}


@pytest.mark.slow
def test_latency_search_export_report(run):
    report = latency_stage(run, run.cfg.latency, progress=False)
    assert report["train_samples"] + report["heldout_samples"] == run.cfg.latency.num_samples
    assert report["largest_ms"] > 0 and report["mlp"]["rmse_ms"] >= 0
    assert (run.run_dir / "latency" / "scatter.png").is_file()
    samples = [json.loads(x) for x in (run.run_dir / "latency" / "samples.jsonl").read_text().splitlines()]
    assert all(s["settings"]["beam"] == run.cfg.latency.beam and s["device"] for s in samples)
    timing = json.loads((run.run_dir / "latency" / "timing.json").read_text())  # decided once, used by every sample
    assert all(s["settings"]["precision"] == timing["precision"]["precision"] for s in samples)
    assert report["precision"] == timing["precision"] and timing["made_from"]["checkpoint"] == run.checkpoint

    # every predictor was fit and scored on the same held-out archs; the chosen one has the lowest MAPE
    assert {"mlp", "linear", "table"} <= set(report) and report["chosen"] in ("mlp", "linear", "table")
    assert report[report["chosen"]]["mape_pct"] == min(report[k]["mape_pct"] for k in ("mlp", "linear", "table"))
    assert report["table"]["measurements"] == report["table_entries"] + min(20, report["train_samples"])
    assert report["noise"]["n"] >= 2 and report["noise"]["rel_std_pct"] >= 0 and report["seconds_per_arch"] > 0
    assert sum(1 for s in samples if s.get("reference")) == report["noise"]["n"]
    from mosnas.pipeline.latency import predictor_of

    predictor = predictor_of(run)[0]  # budgets live in the predictor's span, as in run()
    limit = budgets(
        SearchConfig(latency_fractions=(0.5,)), (predictor(run.space.smallest()), predictor(run.space.largest()))
    ).popitem()[1]
    found = search_stage(run, run.cfg.search, "test-budget", limit, run.cfg.latency, progress=False)
    arch = run.space.validate(Arch.from_dict(found["evolution"]["arch"]))
    assert found["predicted_latency_ms"] <= limit
    cands = found["evolution"]["candidates"]  # ranked feasible archs: the fallbacks
    assert cands[0]["arch"] == found["evolution"]["arch"] and [c["fitness"] for c in cands] == sorted(
        c["fitness"] for c in cands
    )
    assert all(predictor(run.space.arch_from_dict(c["arch"])) <= limit for c in cands)
    assert found["random"]["num_evaluations"] == found["evolution"]["num_evaluations"]
    # The fitness really is the supernet's validation loss of that arch on the fixed subset.
    # (a seeded sample of the validation split, in the precision the search recorded)
    valid, _ = load_parallel(
        run.cfg.data, run.cfg.data.valid, run.tokenizer, run.cfg.search.valid_sentences, seed=run.cfg.search.seed
    )
    bf16 = found["precision"]["precision"] == "bf16"
    assert found["evolution"]["fitness"] == pytest.approx(
        evaluate_loss(run.net, valid, arch, torch.device("cpu"), bf16)
    )

    row = export_and_score(run, arch, run.run_dir / "export" / "test-budget", run.cfg.latency, progress=False)
    assert row["measured_latency_ms"] > 0 and row["parameters"] > 0 and 0 <= row["bleu"] <= 100
    assert row["peak_memory_mb"] > 0
    from mosnas.pipeline.winner import describe_check, hold_budget

    held_arch, out, check = hold_budget(run, found, "test-budget", limit, run.cfg.latency, fallbacks=2)
    assert 1 <= len(check["tried"]) <= 3 and check["tried"][0]["arch"] == found["evolution"]["arch"]
    chosen = check["tried"][check["chosen"]]
    assert held_arch.to_dict() == chosen["arch"] and (out / "latency.json").is_file()
    assert check["held"] == (chosen["measured_ms"] <= check["tolerance_ms"]), check
    # a budget no candidate meets when measured: the fallbacks are tried, the fastest measured is kept, said so
    strict = hold_budget(run, found, "test-strict", chosen["measured_ms"] / 10, run.cfg.latency, fallbacks=2)[2]
    assert not strict["held"] and strict["tried"][0]["export"] == "test-strict"
    measured = [t["measured_ms"] for t in strict["tried"]]
    assert strict["tried"][strict["chosen"]]["measured_ms"] == min(measured) and "none held" in describe_check(strict)
    assert row["model_dir"] == "export/test-budget"  # a row names the folder it scored, relative to the run
    kept = strict["tried"][-1]  # a fallback is scored in (and its row names) the fallback's own folder
    fell = export_and_score(
        run,
        run.space.arch_from_dict(kept["arch"]),
        run.run_dir / "export" / "test-strict-fallback1",
        run.cfg.latency,
        progress=False,
    )
    assert fell["model_dir"] == "export/test-strict-fallback1"
    assert (run.run_dir / fell["model_dir"] / f"eval.{fell['split']}.json").is_file()
    results = {
        "name": "t",
        "generator": "neuron",
        "steps": run.step,
        "latency_predictor": report,
        "note": "A longer run of this recipe: 30 BLEU.",
        "wall_s_this_call": 90.0,
        "stage_s_this_call": {"train": 60.0, "latency": 30.0},
        "results": [
            {
                "name": "test-budget",
                "kind": "search",
                "budget_ms": limit,
                "fitness": 1.0,
                "predicted_latency_ms": found["predicted_latency_ms"],
                "random_search_fitness": 1.1,
                "search_fitness": 0.9,
                "rerank_note": "picked by val BLEU (300 sentences) among 4 archs: 12.30; the smallest arch 11.70",
                **row,
            }
        ],
    }
    md = summary_markdown(results, run.family)
    assert "| test-budget |" in md and "tau" in md and "memory MiB" in md and "nrefs:1" in md
    assert "A longer run of this recipe: 30 BLEU." in md
    assert "Wall time of this call: 1.5 minutes (train 1.0, latency 0.5)." in md
    assert "| test-budget | 0.9000 | 1.1000 |" in md  # the evolution's best fitness beside random search's
    assert "Final pick" in md and "- test-budget: picked by val BLEU (300 sentences) among 4 archs: 12.30" in md
    assert pareto_plot(results, run.run_dir / "p.png", run.family).stat().st_size > 1000


def test_finetune_starts_from_inherited_weights(run, tmp_path):
    arch = run.space.smallest()
    model_dir = tmp_path / "m"
    export_and_score(run, arch, model_dir, run.cfg.latency, progress=False)
    _, curve = finetune(
        run.cfg, model_dir, tmp_path / "ft", "inherited", steps=2, valid_every=1, valid_bleu=4, progress=False
    )
    _, scratch = finetune(
        run.cfg,
        model_dir,
        tmp_path / "ft",
        "scratch",
        steps=2,
        valid_every=1,
        valid_bleu=4,
        scratch=True,
        progress=False,
    )
    assert [r["step"] for r in curve] == [0, 1, 2] and all("valid_bleu" in r for r in curve)
    valid, _ = load_parallel(run.cfg.data, run.cfg.data.valid, run.tokenizer, run.cfg.data.valid_limit)
    inherited = evaluate_loss(run.net, valid, arch, torch.device("cpu"))
    assert curve[0]["valid_nll_fixed"] == pytest.approx(inherited, abs=1e-4)  # step 0 = the supernet's subnet
    assert scratch[0]["valid_nll_fixed"] > curve[0]["valid_nll_fixed"]


def test_search_rerank_picks_by_validation_bleu(run):
    """search.rerank: the best candidates by the supernet's loss and the smallest arch are decoded on a seeded
    validation sample; the highest BLEU wins and leads the fallbacks; the summary says how it was picked."""
    from dataclasses import replace

    from mosnas.mt.evaluate import evaluate_model

    sc = replace(run.cfg.search, rerank=2, rerank_sentences=12, population=6, parents=2, generations=2)
    found = search_stage(run, sc, "test-rerank", None, run.cfg.latency, progress=False)
    rows = found["rerank"]
    assert 2 <= len(rows) <= 3 and sum(r["smallest"] for r in rows) == 1  # + the smallest, unless among the best 2
    assert found["rerank_metric"] == "val BLEU" and found["rerank_sentences"] == 12
    for r in rows:  # each score is the exported subnet's BLEU on the sample, as `mosnas evaluate` would decode it
        model = run.net.export(run.space.arch_from_dict(r["arch"]))
        bleu = evaluate_model(model, run.tokenizer, run.cfg.data, "val", run.cfg.decode, 12, progress=False)["bleu"]
        assert r["score"] == pytest.approx(bleu)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert found["evolution"]["arch"] == rows[0]["arch"] == found["evolution"]["candidates"][0]["arch"]
    assert found["evolution"]["fitness"] == rows[0]["fitness"]
    assert found["evolution_best_fitness"] == min(c["fitness"] for c in found["evolution"]["candidates"])
    from mosnas.pipeline.search import rerank_note as _rerank_note

    note = _rerank_note(found)
    assert note.startswith(f"picked by val BLEU (12 sentences) among {len(rows)} archs: {rows[0]['score']:.2f}")
    assert f"the smallest arch {next(r['score'] for r in rows if r['smallest']):.2f}" in note
