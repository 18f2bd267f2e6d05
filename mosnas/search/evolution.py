"""Search: HAT's evolutionary search and the random-search baseline, under a budget.

Both are pure functions of (space, fitness, constraints, settings, seed): no model, data or training code
here. Fitness is lower-is-better and is evaluated once per distinct arch (archs are hashable values, so a
dict caches it); constraints are cost functions of the arch with their limits (see `Budget`)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from mosnas.core.space import Arch, Space
from mosnas.errors import BudgetError, ConfigError

CANDIDATES = 50  # ranked archs a search result keeps (fallbacks for a budget that does not hold when measured)
Fitness = Callable[[Arch], float]
Constraint = Callable[[Arch], bool]


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    s = f"{v:.4g}"
    return s if any(c in s for c in ".en") else s + ".0"  # 1.0 reads as a float, not 1


@dataclass(frozen=True)
class Limit:
    """One constraint of a budget: cost(arch) <= limit."""

    name: str
    limit: float
    cost: Callable[[Arch], float]
    unit: str = ""

    def __call__(self, arch: Arch) -> bool:
        return self.cost(arch) <= self.limit

    def describe(self, arch: Arch, label: str) -> str:
        """E.g. 'latency <= 1.0 ms (smallest arch: 3.2 ms)'."""
        return f"{self.name} <= {_fmt(self.limit)}{self.unit} ({label}: {_fmt(self.cost(arch))}{self.unit})"


@dataclass(frozen=True)
class Budget:
    """Upper bounds on predicted latency, parameters, FLOPs and estimated inference memory of an arch; None
    leaves one unbounded. Each bound comes with its cost function (arch -> value), which the model family
    provides."""

    latency_ms: float | None = None
    latency: Callable[[Arch], float] | None = None  # a predictor: arch -> ms (e.g. a LatencyPredictor)
    max_params: int | None = None
    params: Callable[[Arch], int] | None = None  # arch -> parameters of its exported model
    max_flops: int | None = None
    flops: Callable[[Arch], int] | None = None  # arch -> FLOPs of its exported model
    max_memory_mb: float | None = None
    memory: Callable[[Arch], float] | None = None  # arch -> estimated peak inference memory (MiB)

    def constraints(self, space: Space) -> list[Limit]:
        """One Limit per bound that is set, checked for consistency."""
        bounds = [("latency", "latency_ms", "latency", " ms"), ("params", "max_params", "params", "")]
        bounds += [("FLOPs", "max_flops", "flops", ""), ("memory", "max_memory_mb", "memory", " MiB")]
        for _, key, _, _ in bounds:
            v = getattr(self, key)
            if v is not None and not v > 0:
                raise BudgetError(f"budget {key} must be positive, got {v!r}")
        limits = []
        for name, key, cost, unit in bounds:
            if getattr(self, key) is None:
                continue
            if getattr(self, cost) is None:
                what = "a latency predictor" if cost == "latency" else "its cost function"
                raise BudgetError(f"a {name} budget needs {what} (Budget.{cost})")
            limits.append(Limit(name, getattr(self, key), getattr(self, cost), unit))
        return limits


@dataclass
class SearchResult:
    """The best arch found, its fitness, the best fitness per generation (or per evaluation), the cost, and the
    best `CANDIDATES` distinct archs evaluated (all within the budget), best first: the fallbacks when the
    winner, measured, breaks its budget."""

    arch: Arch
    fitness: float
    history: list[float]
    num_evaluations: int  # distinct archs whose fitness was computed
    candidates: list[tuple[Arch, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch.to_dict(),
            "fitness": self.fitness,
            "history": self.history,
            "num_evaluations": self.num_evaluations,
            "candidates": [{"arch": a.to_dict(), "fitness": f} for a, f in self.candidates],
        }


class _Evaluator:
    """Fitness with a cache, and the budget check with a bounded number of tries."""

    def __init__(self, space: Space, fitness: Fitness, constraints: Sequence[Constraint] | Budget | None, tries: int):
        if tries < 1:
            raise ConfigError(f"search: max_tries must be >= 1, got {tries}")
        self.space, self.fitness, self.tries = space, fitness, tries
        if isinstance(constraints, Budget):
            constraints = constraints.constraints(space)
        self.constraints = list(constraints or [])
        self.cache: dict[Arch, float] = {}

    def __call__(self, arch: Arch) -> float:
        if arch not in self.cache:
            self.cache[arch] = float(self.fitness(arch))
        return self.cache[arch]

    def draw(self, make: Callable[[], Arch], what: str = "random samples") -> Arch:
        """The first of `make()`'s archs that meets every constraint; BudgetError if none in `tries`."""
        for _ in range(self.tries):
            arch = make()
            if all(c(arch) for c in self.constraints):
                return arch
        smallest = self.space.smallest()
        limits = [c for c in self.constraints if isinstance(c, Limit)]
        failed = [c.describe(smallest, "smallest arch") for c in limits if not c(smallest)]
        if failed:
            raise BudgetError(f"no architecture in space '{self.space.name}' satisfies {' and '.join(failed)}")
        raise BudgetError(f"no architecture in space '{self.space.name}' met the constraints in {self.tries} {what}")

    def best(self) -> tuple[Arch, float]:
        arch = min(self.cache, key=self.cache.__getitem__)  # ties: the first evaluated
        return arch, self.cache[arch]

    def ranked(self) -> list[tuple[Arch, float]]:
        """The best CANDIDATES evaluated archs, best first (ties: the first evaluated)."""
        return sorted(self.cache.items(), key=lambda kv: kv[1])[:CANDIDATES]


def evolutionary_search(
    space: Space,
    fitness: Fitness,
    constraints: Sequence[Constraint] | Budget | None = None,
    population: int = 125,
    parents: int = 25,
    mutations: int = 50,
    crossovers: int = 50,
    mutation_prob: float = 0.3,
    generations: int = 30,
    seed: int = 0,
    max_tries: int = 10000,
    progress: bool = True,
    start_with_smallest: bool = True,
) -> SearchResult:
    """HAT's evolution: keep the best `parents`, add `mutations` mutants and `crossovers` children, repeat.

    Candidates that break a constraint are rejected and redrawn (BudgetError after `max_tries` in a row). With
    `start_with_smallest` the first population holds the space's smallest arch (when it meets the constraints)
    beside `population - 1` random ones, so the winner is never worse, by the supernet's own fitness, than the
    arch every budget admits (HAT's first population is all random: `start_with_smallest=False`)."""
    if not 1 <= parents <= population or min(mutations, crossovers) < 0 or generations < 1:
        raise ConfigError(
            f"search: need 1 <= parents <= population, mutations and crossovers >= 0 and generations >= 1, got "
            f"parents={parents}, population={population}, mutations={mutations}, crossovers={crossovers}, "
            f"generations={generations}"
        )
    if not 0.0 <= mutation_prob <= 1.0:
        raise ConfigError(f"search: mutation_prob must be in [0, 1], got {mutation_prob}")
    rng = random.Random(seed)
    ev = _Evaluator(space, fitness, constraints, max_tries)
    pop = [ev.draw(lambda: space.sample(rng)) for _ in range(population)]
    if start_with_smallest and all(c(space.smallest()) for c in ev.constraints):
        pop[0] = space.smallest()
    history: list[float] = []
    bar = tqdm(range(generations), desc="evolution", disable=not progress, dynamic_ncols=True)
    for gen in bar:
        top = sorted(dict.fromkeys(pop), key=ev)[:parents]  # distinct archs, best first
        history.append(ev(top[0]))
        bar.set_postfix(best=f"{history[-1]:.4f}", evaluated=len(ev.cache))
        if gen == generations - 1:
            break
        pop = top + _breed(space, ev, top, rng, mutations, crossovers, mutation_prob)
    arch, best = ev.best()
    return SearchResult(arch, best, history, len(ev.cache), ev.ranked())


def _breed(
    space: Space, ev: _Evaluator, top: list[Arch], rng: random.Random, mutations: int, crossovers: int, prob: float
) -> list[Arch]:
    mutant = lambda: space.mutate(rng.choice(top), rng, prob)
    child = lambda: space.crossover(rng.choice(top), rng.choice(top), rng)
    mutants = [ev.draw(mutant, "mutations") for _ in range(mutations)]
    return mutants + [ev.draw(child, "crossovers") for _ in range(crossovers)]


def random_search(
    space: Space,
    fitness: Fitness,
    constraints: Sequence[Constraint] | Budget | None = None,
    num_evaluations: int = 3125,
    seed: int = 0,
    max_tries: int = 10000,
    progress: bool = True,
) -> SearchResult:
    """The baseline: evaluate `num_evaluations` distinct random archs that meet the constraints.

    Stops early if `max_tries` draws in a row repeat archs already seen (a small space is exhausted)."""
    if num_evaluations < 1:
        raise ConfigError(f"search: num_evaluations must be >= 1, got {num_evaluations}")
    rng = random.Random(seed)
    ev = _Evaluator(space, fitness, constraints, max_tries)
    history: list[float] = []
    repeats = 0
    with tqdm(total=num_evaluations, desc="random search", disable=not progress, dynamic_ncols=True) as bar:
        while len(ev.cache) < num_evaluations and repeats < max_tries:
            arch = ev.draw(lambda: space.sample(rng))
            if arch in ev.cache:
                repeats += 1
                continue
            repeats = 0
            score = ev(arch)
            history.append(min(score, history[-1]) if history else score)
            bar.update(1)
    arch, best = ev.best()
    return SearchResult(arch, best, history, len(ev.cache), ev.ranked())


def rerank(
    space: Space,
    result: SearchResult,
    fitness: Fitness,
    score: Callable[[Arch], float],
    count: int,
    constraints: Sequence[Constraint] | Budget | None = None,
) -> tuple[SearchResult, list[dict[str, Any]]]:
    """The final pick by a second, costlier measure: the `count` best distinct candidates of `result` (by the
    fitness) and the space's smallest arch (when it meets the constraints) are scored by `score` (higher is
    better, e.g. validation BLEU with beam search, what the user reports, where the fitness is a loss), and the
    highest score wins (ties: the better fitness). HAT picks by the fitness alone (`count` = 0: unchanged).

    Returns the result with its candidates re-ordered (the scored ones first, best score first; the rest as they
    were) and one row per scored arch: arch dict, fitness, score, and whether it is the smallest arch."""
    if count < 1:
        return result, []
    if isinstance(constraints, Budget):
        constraints = constraints.constraints(space)
    pool = [a for a, _ in result.candidates[:count]] or [result.arch]
    smallest = space.smallest()
    if smallest not in pool and all(c(smallest) for c in constraints or []):
        pool.append(smallest)
    known = dict(result.candidates)
    fit = {a: known[a] if a in known else float(fitness(a)) for a in pool}
    scores = {a: float(score(a)) for a in pool}
    order = sorted(pool, key=lambda a: (-scores[a], fit[a]))
    rows = [{"arch": a.to_dict(), "fitness": fit[a], "score": scores[a], "smallest": a == smallest} for a in order]
    candidates = [(a, fit[a]) for a in order] + [(a, f) for a, f in result.candidates if a not in scores]
    return SearchResult(order[0], fit[order[0]], result.history, result.num_evaluations, candidates), rows
