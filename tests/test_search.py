"""Search: evolution and random search on real archs of the tiny space, under real budgets."""

import dataclasses
import random

import pytest
import torch

from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.errors import BudgetError, ConfigError
from mosnas.latency.measure import LinearPredictor
from mosnas.mt.costs import costs, count_flops, count_parameters
from mosnas.mt.data import ParallelData
from mosnas.mt.space import load_space
from mosnas.mt.task import supernet_fitness
from mosnas.mt.transformer import num_parameters
from mosnas.search.evolution import Budget, evolutionary_search, random_search, rerank
from tests.conftest import ROOT, make_supernet

SMALL = dict(population=20, parents=5, mutations=10, crossovers=10, generations=20, progress=False)


def _distance_to(space, target):
    """A deterministic fitness with a known optimum (0, at `target`'s embedding)."""
    goal = space.embed(target)
    return lambda arch: sum((x - y) ** 2 for x, y in zip(space.embed(arch), goal))


def _params(space, arch) -> int:
    return count_parameters(arch, space.qkv_dim, 100, share_all_embeddings=True)


def _exported_params(space, vocab, **supernet):
    """What the pipeline's params budget counts: the costs of the exported model (the family's `costs`)."""
    return lambda arch: costs(arch, space, vocab, SupernetConfig(**supernet), LatencyConfig())["parameters"]


def test_evolution_finds_the_optimum_and_beats_random(space):
    target = space.sample(random.Random(42))
    fitness = _distance_to(space, target)
    evo = evolutionary_search(space, fitness, seed=0, **SMALL)
    assert evo.fitness == pytest.approx(0.0, abs=1e-12) and space.embed(evo.arch) == space.embed(target)
    assert len(evo.history) == SMALL["generations"]
    assert all(a >= b for a, b in zip(evo.history, evo.history[1:]))  # parents survive: never worse
    rand = random_search(space, fitness, num_evaluations=evo.num_evaluations, seed=0, progress=False)
    assert rand.num_evaluations == evo.num_evaluations
    assert evo.fitness <= rand.fitness


def test_evolution_starts_with_the_smallest_arch(space):
    """A winner is never worse, by the fitness, than the smallest arch (which every budget admits); HAT's all-random
    first population is start_with_smallest=False."""
    smallest = space.smallest()
    fitness = lambda arch: 0.0 if arch == smallest else 1.0 + random.Random(str(arch)).random()
    one = dict(population=3, parents=1, mutations=0, crossovers=0, generations=1, progress=False)
    assert evolutionary_search(space, fitness, seed=3, **one).arch == smallest
    assert evolutionary_search(space, fitness, seed=3, start_with_smallest=False, **one).arch != smallest
    # a constraint the smallest breaks: not seeded (every member of the population meets the constraints)
    not_smallest = lambda arch: arch != smallest
    assert evolutionary_search(space, fitness, [not_smallest], seed=3, **one).arch != smallest


def test_fitness_is_evaluated_once_per_arch(space):
    calls = []
    fitness = _distance_to(space, space.largest())
    counting = lambda arch: calls.append(arch) or fitness(arch)
    result = evolutionary_search(space, counting, seed=1, **SMALL)
    assert len(calls) == len(set(calls)) == result.num_evaluations
    # the initial population plus at most mutations + crossovers new archs per later generation
    assert result.num_evaluations <= SMALL["population"] + (SMALL["generations"] - 1) * 20
    calls.clear()
    rand = random_search(space, counting, num_evaluations=50, seed=1, progress=False)
    assert len(calls) == len(set(calls)) == rand.num_evaluations == 50 == len(rand.history)


def test_seeded_runs_are_reproducible(space):
    fitness = _distance_to(space, space.sample(random.Random(3)))
    a = evolutionary_search(space, fitness, seed=5, **SMALL)
    b = evolutionary_search(space, fitness, seed=5, **SMALL)
    assert a.to_dict() == b.to_dict()
    r1 = random_search(space, fitness, num_evaluations=40, seed=5, progress=False)
    r2 = random_search(space, fitness, num_evaluations=40, seed=5, progress=False)
    assert r1.to_dict() == r2.to_dict()


def test_results_meet_the_budget(space):
    # latency from a real (linear) predictor fit on a FLOPs stand-in, plus parameter and FLOPs caps
    rng = random.Random(0)
    samples = [
        {"arch": a.to_dict(), "latency_ms": count_flops(a, space.qkv_dim, 100, 30, 30) / 1e5}
        for a in (space.sample(rng) for _ in range(60))
    ]
    predictor = LinearPredictor(space).fit(samples)
    small, big = _params(space, space.smallest()), _params(space, space.largest())
    budget = Budget(
        latency_ms=sorted(s["latency_ms"] for s in samples)[30],
        latency=predictor,
        max_params=(small + big) // 2,
        params=lambda arch: _params(space, arch),
        max_flops=count_flops(space.largest(), space.qkv_dim, 100, 30, 30) // 2,
        flops=lambda arch: count_flops(arch, space.qkv_dim, 100, 30, 30),
    )
    fitness = _distance_to(space, space.largest())  # pulls toward the budget's edge
    for result in (
        evolutionary_search(space, fitness, budget, seed=0, **SMALL),
        random_search(space, fitness, budget, num_evaluations=100, seed=0, progress=False),
    ):
        arch = space.validate(result.arch)
        assert predictor(arch) <= budget.latency_ms
        assert _params(space, arch) <= budget.max_params
        assert count_flops(arch, space.qkv_dim, 100, 30, 30) <= budget.max_flops
        assert all(c(arch) for c in budget.constraints(space))
    # plain callables work as constraints too
    only_one_decoder_layer = lambda arch: arch.decoder_layers == 1
    result = evolutionary_search(space, fitness, [only_one_decoder_layer], seed=0, **SMALL)
    assert result.arch.decoder_layers == 1


def test_params_budget_counts_what_the_exported_model_holds(space):
    """One shared table, max(e, d) wide, for every arch: the budget's count is the exported model's numel
    and never grows when a width shrinks (HAT's e640/d512 used to count 100.7M, e640/d640 91.4M)."""
    net = make_supernet(space, "shared")
    (params,) = Budget(max_params=1, params=_exported_params(space, 100)).constraints(space)
    rng = random.Random(4)
    for arch in [dataclasses.replace(space.largest(), decoder_embed_dim=16)] + [space.sample(rng) for _ in range(5)]:
        assert params.cost(arch) == num_parameters(net.export(arch))
    hat = load_space(ROOT / "configs" / "spaces" / "hat_wmt14_ende.yaml")
    (params,) = Budget(max_params=1, params=_exported_params(hat, 32000, prenorm=False)).constraints(hat)
    largest = hat.largest()
    assert params.cost(dataclasses.replace(largest, decoder_embed_dim=512)) < params.cost(largest)
    assert params.cost(dataclasses.replace(largest, encoder_embed_dim=512)) < params.cost(largest)


def test_impossible_budget_says_why(space):
    fitness = _distance_to(space, space.largest())
    smallest = _params(space, space.smallest())
    budget = Budget(max_params=1000, params=lambda arch: _params(space, arch))
    with pytest.raises(BudgetError, match=rf"space 'tiny' satisfies params <= 1,000 \(smallest arch: {smallest:,}\)"):
        evolutionary_search(space, fitness, budget, max_tries=200, **SMALL)
    slow = Budget(latency_ms=1.0, latency=lambda arch: 3.2)
    with pytest.raises(BudgetError, match=r"satisfies latency <= 1.0 ms \(smallest arch: 3.2 ms\)"):
        random_search(space, fitness, slow, num_evaluations=5, max_tries=200, progress=False)
    with pytest.raises(BudgetError, match="met the constraints in 200 random samples"):
        random_search(space, fitness, [lambda arch: False], num_evaluations=5, max_tries=200, progress=False)


def test_bad_budgets_and_settings(space):
    fitness = _distance_to(space, space.largest())
    with pytest.raises(BudgetError, match="needs a latency predictor"):
        Budget(latency_ms=5.0).constraints(space)
    with pytest.raises(BudgetError, match=r"FLOPs budget needs its cost function \(Budget.flops\)"):
        Budget(max_flops=10**6).constraints(space)
    with pytest.raises(BudgetError, match="max_params must be positive"):
        Budget(max_params=0, params=lambda arch: _params(space, arch)).constraints(space)
    with pytest.raises(ConfigError, match="parents=30, population=20"):
        evolutionary_search(space, fitness, **(SMALL | {"parents": 30}))
    with pytest.raises(ConfigError, match="max_tries"):
        random_search(space, fitness, num_evaluations=5, max_tries=0, progress=False)
    with pytest.raises(ConfigError, match="mutation_prob"):
        evolutionary_search(space, fitness, mutation_prob=1.5, **SMALL)


def test_supernet_loss_as_fitness(space):
    # DESIGN's real fitness: validation loss with inherited weights, end to end on a tiny search
    gen = torch.Generator().manual_seed(0)
    pairs = [torch.randint(4, 100, (n,), generator=gen).tolist() + [3] for n in (5, 7, 6, 4)]
    data = ParallelData(pairs, pairs[::-1], max_tokens=64)
    net = make_supernet(space, "neuron")
    fitness = supernet_fitness(net, data)
    assert fitness(space.smallest()) > 0
    settings = dict(population=4, parents=2, mutations=2, crossovers=2, generations=2, progress=False)
    result = evolutionary_search(space, fitness, seed=0, **settings)
    assert space.validate(result.arch) and result.fitness == fitness(result.arch)


def test_summary_flags_a_searched_subnet_worse_than_the_smallest():
    """The quick start once reported a winner 1.1 BLEU below the smallest arch with no word about it."""
    from mosnas import bert, mt
    from mosnas.pipeline.report import _below_smallest

    rows = [{"name": "smallest", "kind": "reference", "bleu": 20.0}, {"name": "lat-a", "kind": "search", "bleu": 18.9},
            {"name": "lat-b", "kind": "search", "bleu": 21.3}]  # fmt: skip
    notes = [line for line in _below_smallest(rows, mt) if line]
    assert len(notes) == 1 and "lat-a scores 18.90 BLEU" in notes[0] and "20.00" in notes[0]
    assert _below_smallest(rows[:1] + rows[2:], mt) == []
    # a loss (lower is better): the BERT family's distillation loss
    losses = [{"name": "smallest", "kind": "reference", "distill_loss": 2.0},
              {"name": "p-8M", "kind": "search", "distill_loss": 2.5},
              {"name": "p-15M", "kind": "search", "distill_loss": 1.5}]  # fmt: skip
    assert [n for n in _below_smallest(losses, bert) if n][0].startswith("Note: p-8M scores 2.50 distill loss")


def test_rerank_picks_by_the_second_score_among_the_best_candidates_and_the_smallest(space):
    """search.rerank: the `count` best archs by fitness plus the smallest arch are scored again; the highest score
    wins, the fitness breaks ties, the other candidates keep their order behind, and count=0 changes nothing."""
    smallest, largest = space.smallest(), space.largest()
    fitness = _distance_to(space, largest)  # the largest is best by fitness
    result = evolutionary_search(space, fitness, seed=2, **SMALL)
    top = [a for a, _ in result.candidates[:3]]
    assert smallest not in top
    score = {a: float(i) for i, a in enumerate(top)}  # the third-best by fitness scores highest ...
    score[smallest] = 1.5  # ... the smallest between the first two and the third
    picked, rows = rerank(space, result, fitness, score.__getitem__, 3)
    assert picked.arch == top[2] and picked.fitness == fitness(top[2])
    assert [r["score"] for r in rows] == [2.0, 1.5, 1.0, 0.0] and [r["smallest"] for r in rows][1]
    assert [a for a, _ in picked.candidates[:4]] == [top[2], smallest, top[1], top[0]]
    assert [a for a, _ in picked.candidates[4:]] == [a for a, _ in result.candidates[3:] if a != smallest]
    # the smallest wins when it scores highest; a constraint it breaks keeps it out
    score[smallest] = 9.0
    assert rerank(space, result, fitness, score.__getitem__, 3)[0].arch == smallest
    not_smallest = lambda arch: arch != smallest
    assert rerank(space, result, fitness, score.__getitem__, 3, [not_smallest])[0].arch == top[2]
    # ties on the score: the better fitness wins
    flat = lambda arch: 1.0
    assert rerank(space, result, fitness, flat, 3)[0].arch == top[0]
    assert rerank(space, result, fitness, score.__getitem__, 0) == (result, [])
