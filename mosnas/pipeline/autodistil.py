"""AutoDistil (Xu et al., NeurIPS 2022) as a configuration of the engine, not a fork: the search space is split into
K sub-spaces (tiny / small / base), one supernet is trained per sub-space with the same distillation (AutoDistil's
weight sharing is the `shared` generator; the K supernets share the distillation budget of one), and the
task-agnostic search ranks every subnet of all K sub-spaces together by its held-out distillation loss, the best
under each parameter budget winning (AD sec. 3.3: no routing to one sub-space, no retraining).

    mosnas autodistil CONFIG SPACE [SPACE ...] [key=value ...]

Every sub-space is an ordinary run of CONFIG (`runs/<name>-<space>`, with supernet.space=SPACE), so training,
resume, export, evaluation and GLUE are the pipeline's. The ranking (`runs/<name>/ranking.json`: each subnet's
sub-space, arch, parameters and fitness) is reused while its sub-runs' checkpoints and the search settings hold;
each budget's winner is exported from its own supernet (`runs/<name>-<space>/export/params-<N>M`) and scored like
any pipeline row. The combined table is `runs/<name>/summary.md` and `results.json`."""

from __future__ import annotations

import itertools
import tempfile
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import yaml

from mosnas.config import Config
from mosnas.core.space import Space
from mosnas.engine.load import LoadedRun, load_run
from mosnas.engine.run_folder import check_inputs
from mosnas.errors import ArchError, ConfigError
from mosnas.family import family_of
from mosnas.hardware import resolve_precision
from mosnas.pipeline.report import summary_markdown
from mosnas.pipeline.run import export_and_score, run
from mosnas.workspace.records import fresh, made_from, read_json, write_json


def short_name(cfg: Config, space: str | Path) -> str:
    """A sub-space's name in results: its file's stem less the config's name (bert_autodistil_tiny -> tiny)."""
    return Path(space).stem.removeprefix(cfg.name + "_")


def sub_run(cfg: Config, space: str | Path) -> Config:
    """The run of `cfg` on one sub-space (`runs/<name>-<sub-space>`): trained and scored at `eval.archs` only (the
    budgets are searched across all sub-spaces at once)."""
    name = f"{cfg.name}-{short_name(cfg, space)}"
    sn = replace(cfg.supernet, space=str(Path(space).resolve()))
    sc = replace(cfg.search, params_budgets=(), latency_ms=(), latency_fractions=(), max_params=0)
    return replace(cfg, name=name, supernet=sn, search=sc)


def all_archs(space: Space) -> list[Any]:
    """Every arch of a homogeneous space (one value per dimension: BERT's), in the order of its lists."""
    schema = space.schema
    if schema.stacks or schema.per_layer:
        raise ConfigError(f"AutoDistil ranks every subnet: space '{space.name}' has per-layer choices (not BERT's)")
    out = []
    for values in itertools.product(*(getattr(space, d) for d in schema.globals)):
        try:
            out.append(space.validate(schema.arch(**dict(zip(schema.globals, values)))))
        except ArchError:
            continue  # e.g. a hidden size its head count does not divide
    return out


def _vocab(sub: Config) -> int:
    """The vocabulary size of a sub-run before it exists (the family reads it from the run's config)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(sub.to_dict()), encoding="utf-8")
        return family_of(sub.family).vocab(Path(tmp))[1]


def check_budgets(cfg: Config, subs: dict[str, Config]) -> None:
    """Every sub-space's inputs exist, and every budget admits some subnet; one-line ConfigError otherwise,
    before anything is trained."""
    if cfg.family != "bert":
        raise ConfigError("AutoDistil is a BERT baseline: set family: bert")
    if not cfg.search.params_budgets:
        raise ConfigError("AutoDistil searches parameter budgets: set search.params_budgets")
    smallest = []
    for sub in subs.values():
        space = check_inputs(sub)
        costs = family_of(sub.family).costs(space.smallest(), space, _vocab(sub), sub.supernet, sub.latency)
        smallest.append(costs["parameters"])
    low = [b for b in cfg.search.params_budgets if b < min(smallest)]
    if low:
        raise ConfigError(
            f"params budget {low[0]:,} is below the smallest subnet of every sub-space ({min(smallest):,})"
        )


def rank(cfg: Config, loaded: dict[str, LoadedRun], progress: bool) -> list[dict[str, Any]]:
    """Every subnet of every sub-space with its parameters and fitness (the held-out distillation loss of
    `search.valid_sentences` sequences), best first; kept in `runs/<name>/ranking.json` while it holds."""
    path = cfg.run_dir / "ranking.json"
    search = {k: getattr(cfg.search, k) for k in ("valid_sentences", "precision")}
    record = made_from(search=search, runs={k: r.checkpoint for k, r in loaded.items()})
    if fresh(path, record, "AutoDistil ranking"):
        return read_json(path)["subnets"]
    from tqdm import tqdm

    rows = []
    for key, lr in loaded.items():
        device = next(lr.net.parameters()).device
        fitness, _ = lr.family.fitness(lr, cfg.search, device, resolve_precision(cfg.search.precision, device).bf16)
        for arch in tqdm(all_archs(lr.space), desc=f"rank {key}", disable=not progress, dynamic_ncols=True):
            size = lr.family.costs(arch, lr.space, lr.net.vocab_size, lr.cfg.supernet, cfg.latency)["parameters"]
            rows.append({"subspace": key, "arch": arch.to_dict(), "parameters": size, "fitness": fitness(arch)})
    rows.sort(key=lambda r: r["fitness"])
    write_json(path, {"subnets": rows, "made_from": record})
    return rows


def pick(ranking: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """The subnet with the lowest fitness among those of at most `budget` parameters (ranking: best first)."""
    return next(r for r in ranking if r["parameters"] <= budget)


def run_autodistil(cfg: Config, spaces: list[str], progress: bool = True) -> dict[str, Any]:
    """Train one supernet per sub-space (each scored at `eval.archs`), rank every subnet of all of them by the
    held-out distillation loss, export and score the best under each of `search.params_budgets`, and write the
    combined results into `runs/<name>/`."""
    subs = {short_name(cfg, s): sub_run(cfg, s) for s in spaces}
    check_budgets(cfg, subs)
    rows, steps, loaded = [], {}, {}
    for key, sub in subs.items():
        result = run(sub, progress=progress)  # trains the sub-space's supernet (a stopped one continues)
        steps[key] = result["steps"]
        rows += [{**r, "name": f"{r['name']} ({key})", "subspace": key} for r in result["results"]]
        loaded[key] = load_run(sub.run_dir)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    ranking = rank(cfg, loaded, progress)
    for budget in cfg.search.params_budgets:
        best = pick(ranking, budget)
        lr, name = loaded[best["subspace"]], f"params-{budget / 1e6:g}M"
        arch = lr.space.arch_from_dict(best["arch"])
        scored = export_and_score(lr, arch, lr.dir.export(name), cfg.latency, progress)
        rows.append({"name": f"{name} ({best['subspace']})", "kind": "search", "budget_ms": None,
                     "max_params": budget, "fitness": best["fitness"], "subspace": best["subspace"], **scored,
                     "rerank_note": f"the best of {len(ranking)} subnets of {len(loaded)} sub-spaces by held-out "
                                    "distillation loss"})  # fmt: skip
    results = {
        "name": cfg.name,
        "family": cfg.family,
        "generator": cfg.supernet.generator,
        "steps": " / ".join(f"{k}: {v}" for k, v in steps.items()),
        "subspaces": {
            k: {"run": str(s.run_dir), "archs": sum(r["subspace"] == k for r in ranking)} for k, s in subs.items()
        },
        "search": asdict(cfg.search),
        "results": rows,
    }
    write_json(cfg.run_dir / "results.json", results)
    (cfg.run_dir / "summary.md").write_text(summary_markdown(results, family_of(cfg.family)), encoding="utf-8")
    return results
