"""The BERT family through the engine: distillation training with exact resume of the task's projection, the
search's fitness, bad settings refused before any work, and `mosnas run configs/bert_tiny.yaml` end to end."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from mosnas import bert
from mosnas.config import SearchConfig, load_config
from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.load import load_run
from mosnas.engine.train import train
from mosnas.errors import ConfigError
from mosnas.workspace.run_dir import read_log
from tests.conftest import ROOT

TINY = ROOT / "configs" / "bert_tiny.yaml"


def tiny(tmp_path, *overrides: str):
    return load_config(TINY, [f"out_dir={tmp_path}", "train.precision=fp32", *overrides])


def _last(run_dir):
    ckpt = list_checkpoints(run_dir)[-1]
    return load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "optimizer.safetensors"))


@pytest.mark.slow
def test_the_hidden_projection_trains_and_resumes_exactly(tmp_path):
    """objective=both: the projection is optimized with the supernet, checkpointed as task.* tensors, and a run
    stopped at step 2 and resumed ends bit-identical to one that ran 4 steps at once."""
    whole = train(tiny(tmp_path / "a", "bert.objective=both"), show_progress=False)
    train(tiny(tmp_path / "b", "bert.objective=both", "train.max_steps=2"), show_progress=False)
    resumed = train(tiny(tmp_path / "b", "bert.objective=both"), resume=True, show_progress=False)
    (model_a, opt_a), (model_b, opt_b) = _last(whole), _last(resumed)
    assert model_a.keys() == model_b.keys() and all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    task_keys = sorted(k for k in opt_a if k.startswith("task."))
    assert task_keys == ["task.projection.proj.bias", "task.projection.proj.weight"]
    assert all(torch.equal(opt_a[k], opt_b[k]) for k in task_keys)
    assert not torch.equal(opt_a["task.projection.proj.weight"], torch.eye(384, 32))  # it was trained
    losses = [r["loss_largest"] for r in read_log(whole) if "loss_largest" in r]
    assert losses == [r["loss_largest"] for r in read_log(resumed) if "loss_largest" in r]


@pytest.mark.parametrize("objective", [pytest.param("relations", marks=pytest.mark.slow), "both"])
def test_fitness_is_the_logged_validation_loss_of_the_same_sequences(tmp_path, objective):
    """The search's fitness of an arch is its held-out distillation loss (with `both`, through the projection
    trained with the supernet, read back from the checkpoint): on the same first validation sequences it equals
    what training logged for the largest and smallest archs."""
    run_dir = train(tiny(tmp_path, "data.valid_limit=8", f"bert.objective={objective}"), show_progress=False)
    run = load_run(run_dir)
    fit, about = bert.fitness(run, SearchConfig(valid_sentences=8), torch.device("cpu"), False)
    logged = [r for r in read_log(run_dir) if "valid_loss_largest" in r][-1]
    assert about == {"valid_sequences": 8, "objective": objective}
    assert fit(run.space.largest()) == pytest.approx(logged["valid_loss_largest"], abs=1e-4)
    assert fit(run.space.smallest()) == pytest.approx(logged["valid_loss_smallest"], abs=1e-4)
    assert fit(run.space.largest()) != fit(run.space.smallest())
    # search.rerank's selection score: the same loss on `rerank_sentences` sequences, negated (higher is better)
    sc = SearchConfig(valid_sentences=4, rerank_sentences=8)
    pick, about = bert.selection_score(run, sc, torch.device("cpu"), False)
    assert about == {"rerank_metric": "-distill loss", "rerank_sentences": 8}
    assert pick(run.space.smallest()) == pytest.approx(-fit(run.space.smallest()))


@pytest.mark.parametrize(
    "override, message",
    [
        ("bert.relation_heads=5", "relation_heads=5 must divide"),
        ("data.train=nonesuch", "no text files for split 'nonesuch'"),
        ("glue.tasks=[NOPE]", "no GLUE task 'NOPE'"),
        ("bert.eval_text=missing.txt", "bert.eval_text: file not found"),
    ],
)
def test_bad_settings_are_refused_before_a_run_folder_exists(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny(tmp_path, override), show_progress=False)
    assert not (tmp_path / "bert_tiny").exists()


@pytest.mark.slow
def test_mosnas_run_bert_tiny_end_to_end(tmp_path):
    """train -> search under a parameter budget -> export (a Hugging Face folder) -> held-out loss and GLUE ->
    report; the same command again redoes nothing and returns the same results."""
    import transformers

    from mosnas.pipeline.run import run

    cfg = tiny(tmp_path)
    results = run(cfg, progress=False)
    rows = {r["name"]: r for r in results["results"]}
    assert set(rows) == {"largest", "params-0.8M"}
    found = rows["params-0.8M"]
    assert found["parameters"] <= 800_000 and found["max_params"] == 800_000
    assert found["fitness"] > 0 and found["random_search_fitness"] > 0
    for r in rows.values():
        assert r["distill_loss"] > 0 and set(r["glue"]) == {"SST-2", "STS-B"}
        assert set(r["glue"]["STS-B"]["metrics"]) == {"pearson", "spearman"}
    folder = cfg.run_dir / "export" / "params-0.8M"
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    assert sum(p.numel() for p in model.parameters()) == found["parameters"]
    summary = (cfg.run_dir / "summary.md").read_text(encoding="utf-8")
    assert "| params-0.8M |" in summary and "SST-2 accuracy" in summary
    assert "| teacher |" in summary and "of the teacher" in summary  # the teacher under the same recipe
    stamp = (folder / "glue" / "SST-2" / "result.json").stat().st_mtime_ns
    again = run(cfg, progress=False)
    assert (folder / "glue" / "SST-2" / "result.json").stat().st_mtime_ns == stamp
    strip = lambda res: json.dumps([{k: v for k, v in r.items() if k != "measured_latency_ms"} for r in res["results"]])
    assert strip(again) == strip(results)


def test_autodistil_ranks_every_subnet_of_all_subspaces_and_picks_the_best_under_each_budget():
    """AutoDistil's task-agnostic search (AD sec. 3.3): no routing; the CPU sub-spaces cover the whole space."""
    from mosnas.pipeline.autodistil import all_archs, pick

    boxes = [
        bert.load_space(ROOT / "configs" / "spaces" / f"bert_autodistil_{k}.yaml") for k in ("tiny", "small", "base")
    ]
    whole = bert.load_space(ROOT / "configs" / "spaces" / "bert_minilm.yaml")
    held = [a for box in boxes for a in all_archs(box)]
    assert len(held) == len(set(held)) == len(all_archs(whole)) == 480 and set(held) == set(all_archs(whole))
    ranking = [
        {"subspace": "small", "parameters": 9, "fitness": 1.0},
        {"subspace": "tiny", "parameters": 5, "fitness": 2.0},
    ]
    assert pick(ranking, 10)["subspace"] == "small" and pick(ranking, 8)["subspace"] == "tiny"


def test_autodistil_refuses_a_budget_below_every_subnet_before_any_work(tmp_path):
    from mosnas.pipeline.autodistil import run_autodistil

    cfg = load_config(
        ROOT / "configs" / "bert_autodistil.yaml", [f"out_dir={tmp_path}", "search.params_budgets=[1000000]"]
    )
    spaces = [str(ROOT / "configs" / "spaces" / f"bert_autodistil_{k}.yaml") for k in ("tiny", "base")]
    with pytest.raises(ConfigError, match="params budget 1,000,000 is below the smallest subnet of every sub-space"):
        run_autodistil(cfg, spaces, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_autodistil_trains_one_shared_supernet_per_subspace_and_searches_the_right_one(tmp_path):
    from mosnas.pipeline.autodistil import run_autodistil

    spaces = []
    for name, layers, hidden in (("low", "[1]", "[16, 24]"), ("high", "[2]", "[24, 32]")):
        spaces.append(tmp_path / f"bert_tiny_{name}.yaml")
        spaces[-1].write_text(f"name: {name}\nlayers: {layers}\nhidden: {hidden}\nheads: [2, 4]\nffn: [32, 64]\n")
    cfg = tiny(tmp_path, "supernet.generator=shared", "glue.tasks=[]", "search.params_budgets=[600000,900000]")
    results = run_autodistil(cfg, [str(s) for s in spaces], progress=False)
    searched = [r for r in results["results"] if r["kind"] == "search"]
    ranking = json.loads((tmp_path / "bert_tiny" / "ranking.json").read_text())["subnets"]
    assert {r["subspace"] for r in ranking} == {"low", "high"} and len(
        ranking
    ) == 16  # 2 x (2 hidden x 2 heads x 2 ffn)
    for row in searched:  # the best subnet of both sub-spaces under the budget, exported from its own supernet
        best = min((r for r in ranking if r["parameters"] <= row["max_params"]), key=lambda r: r["fitness"])
        assert (
            row["subspace"] == best["subspace"]
            and row["arch"] == best["arch"]
            and row["parameters"] <= row["max_params"]
        )
    assert [r["max_params"] for r in searched] == [600000, 900000]
    assert (tmp_path / "bert_tiny-low" / "checkpoints").is_dir() and (tmp_path / "bert_tiny-high").is_dir()
    assert searched[1]["name"] in (tmp_path / "bert_tiny" / "summary.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_two_torchrun_ranks_equal_one_process_accumulating_both_shares(tmp_path):
    """DDP: 2 ranks, each on its share of the global batch, end where one process accumulating the same two
    batches (update_freq=2) ends, the task's projection included (no dropout, fp32)."""
    import os
    import subprocess
    import sys

    same = ["supernet.dropout=0", "supernet.attention_dropout=0", "bert.objective=both", "train.max_steps=2"]
    same += ["train.precision=fp32"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mosnas"]
    cmd += ["train", str(TINY), f"out_dir={tmp_path / 'ddp'}", *same, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    train(load_config(TINY, [f"out_dir={tmp_path / 'one'}", *same, "train.update_freq=2"]), show_progress=False)
    (model_d, opt_d), (model_1, opt_1) = _last(tmp_path / "ddp" / "bert_tiny"), _last(tmp_path / "one" / "bert_tiny")
    for name in model_1:
        torch.testing.assert_close(model_d[name], model_1[name], rtol=1e-5, atol=1e-6, msg=name)
    for name in ("task.projection.proj.weight", "task.projection.proj.bias"):
        torch.testing.assert_close(opt_d[name], opt_1[name], rtol=1e-5, atol=1e-6, msg=name)
    assert read_log(tmp_path / "ddp" / "bert_tiny")[0]["world_size"] == 2


def _step_gradients(tmp_path, generator: str, objective: str) -> dict[str, torch.Tensor]:
    """The gradients of one sandwich step of distillation (largest, smallest, one random arch) on a real batch:
    every trainable tensor of the supernet and of the task (its projection), summed over the step's archs."""
    from mosnas.engine.load import build_supernet
    from mosnas.engine.schedule import archs_of
    from mosnas.hardware import resolve_precision

    cfg = tiny(tmp_path, f"supernet.generator={generator}", f"bert.objective={objective}")
    space = bert.load_space(cfg.supernet.space)
    task = bert.task(cfg, cfg.run_dir, space, None, torch.device("cpu"), resolve_precision("fp32"))
    net = build_supernet(space, task.vocab_size, cfg)
    batch = task.collate(task.batches(0)[0])
    task.step(net, batch, archs_of(cfg.train, space, 0, None), torch.tensor(float(task.count(batch))))
    own = dict(task.module.named_parameters(prefix="task")) if task.module is not None else {}
    return {n: p.grad for n, p in {**dict(net.named_parameters()), **own}.items() if p.requires_grad}


@pytest.mark.parametrize(
    "generator", [*(pytest.param(g, marks=pytest.mark.slow) for g in ("shared", "layer", "kshot")), "neuron"]
)
def test_the_default_objective_gives_every_trainable_tensor_a_gradient(tmp_path, generator):
    """bert.objective=full (the default): relations + final hidden states + pooled output. After one step every
    tensor a student uses has a non-zero gradient, each MoS expert and router included; the relations alone
    leave the top layer's FFN (its experts) and the pooler untrained, the fault this objective closes."""
    from mosnas.config import BertConfig

    assert BertConfig().objective == "full"
    grads = _step_gradients(tmp_path, generator, "full")
    dead = sorted(n for n, g in grads.items() if g is None or not g.abs().sum() > 0)
    assert not dead, f"no gradient: {dead}"
    assert generator == "shared" or any("router" in n for n in grads)
    relations = _step_gradients(tmp_path / "relations", generator, "relations")
    untrained = sorted(n for n, g in relations.items() if g is None or not g.abs().sum() > 0)
    top = max(int(m.group(1)) for n in relations if (m := re.search(r"layer(?:__|\.)(\d+)", n)))
    assert any("pooler" in n for n in untrained), untrained
    assert any(f"__layer__{top}__intermediate" in n for n in untrained), untrained  # the top FFN never trains
