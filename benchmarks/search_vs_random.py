"""Evolutionary vs random search at equal numbers of evaluated archs, per latency budget.

    python benchmarks/search_vs_random.py RUN [--fractions 0.25 0.5 0.75] [--seeds 1 2]

Needs RUN's latency predictor (`mosnas latency RUN` or benchmarks/latency_predictor.py). Fitness is
the supernet's validation NLL (inherited weights) on a fixed validation subset; both searches get
the same number of distinct evaluations. Writes benchmarks/results/search_vs_random.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, write  # noqa: E402

from mosnas.engine.load import load_run  # noqa: E402
from mosnas.hardware import resolve_precision  # noqa: E402
from mosnas.latency.load import load_predictor  # noqa: E402
from mosnas.mt.data import load_parallel  # noqa: E402
from mosnas.mt.task import supernet_fitness  # noqa: E402
from mosnas.search.evolution import Budget, evolutionary_search, random_search  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--valid-sentences", type=int, default=150)
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--generations", type=int, default=8)
    args = ap.parse_args()
    run = load_run(args.run)
    report = json.loads((Path(args.run) / "latency" / "report.json").read_text())
    predictor = load_predictor(
        Path(args.run) / "latency", run.space, run.family.latency_parts
    )  # whichever kind the latency stage kept
    valid, _ = load_parallel(
        run.cfg.data, run.cfg.data.valid, run.tokenizer, args.valid_sentences, seed=run.cfg.search.seed
    )
    precision = resolve_precision(run.cfg.search.precision, "cpu", "search.precision")
    fitness = supernet_fitness(run.net, valid, "cpu", precision.bf16)
    cache: dict = {}
    cached = lambda a: cache[a] if a in cache else cache.setdefault(a, fitness(a))  # shared by both searches
    pop, parents = args.population, max(2, args.population // 5)
    children = (pop - parents) // 2
    rows = []
    lo, hi = report["smallest_ms"], report["largest_ms"]
    for f in args.fractions:
        limit = round(lo + f * (hi - lo), 2)
        budget = Budget(latency_ms=limit, latency=predictor)
        for seed in args.seeds:
            evo = evolutionary_search(
                run.space, cached, budget, pop, parents, children, pop - parents - children, 0.3, args.generations, seed
            )
            rnd = random_search(run.space, cached, budget, evo.num_evaluations, seed)
            rows.append(
                {
                    "budget_ms": limit,
                    "seed": seed,
                    "evaluations": evo.num_evaluations,
                    "evolution_fitness": round(evo.fitness, 4),
                    "random_fitness": round(rnd.fitness, 4),
                    "evolution_arch": evo.arch.to_dict(),
                    "random_arch": rnd.arch.to_dict(),
                }
            )
    meta = {
        **machine(),
        "run": str(args.run),
        "space": run.space.name,
        "valid_sentences": len(valid),
        "population": pop,
        "parents": parents,
        "generations": args.generations,
    }
    wins = sum(r["evolution_fitness"] <= r["random_fitness"] for r in rows)
    md = [
        "# Evolutionary vs random search at equal evaluation counts",
        "",
        f"Run `{args.run}`; fitness = supernet validation NLL on {len(valid)} fixed validation sentences (lower is "
        f"better); evolution: population {pop}, {parents} parents, {args.generations} generations, mutation prob "
        "0.3; random search evaluates the same number of distinct archs under the same predicted-latency budget.",
        "",
        "| budget ms | seed | evaluations | evolutionary | random |",
        "|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['budget_ms']:.2f} | {r['seed']} | {r['evaluations']} | {r['evolution_fitness']:.4f} | "
        f"{r['random_fitness']:.4f} |"
        for r in rows
    ]
    md += ["", f"Evolution found an equal or better arch in {wins} of {len(rows)} searches."]
    write("search_vs_random", meta, rows, md)


if __name__ == "__main__":
    main()
