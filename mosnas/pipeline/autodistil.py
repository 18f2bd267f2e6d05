"""AutoDistil (Xu et al. 2022) as a configuration of the engine, not a fork: the search space is split into K
sub-spaces (e.g. tiny / small / base), one supernet is trained per sub-space with the same distillation
(AutoDistil's weight sharing is the `shared` generator), and each size budget is searched inside the sub-space
that contains it; nothing is retrained after the search.

    mosnas autodistil CONFIG SPACE [SPACE ...] [key=value ...]

Every sub-space is an ordinary run of CONFIG (`runs/<name>-<space>`, with supernet.space=SPACE), so training,
resume, export, evaluation and GLUE are the pipeline's. Routing: a budget goes to the sub-space whose smallest
arch is the largest one that fits it (the sub-space containing the budget; a budget in a gap between two
sub-spaces goes to the lower one, whose largest arch then fits). The combined table is written to
`runs/<name>/summary.md` and `results.json`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from mosnas.config import Config
from mosnas.engine.load import load_run
from mosnas.errors import ConfigError
from mosnas.family import family_of
from mosnas.pipeline.report import summary_markdown
from mosnas.pipeline.run import run
from mosnas.workspace.records import write_json


def route(budgets: tuple[int, ...], smallest: dict[str, int]) -> dict[str, list[int]]:
    """Sub-space name -> the parameter budgets searched in it, given each sub-space's smallest arch's size.
    Raises ConfigError for a budget below every sub-space."""
    routed: dict[str, list[int]] = {name: [] for name in smallest}
    for budget in budgets:
        fits = [name for name, size in smallest.items() if size <= budget]
        if not fits:
            low = min(smallest.values())
            raise ConfigError(f"params budget {budget:,} is below every sub-space's smallest arch ({low:,})")
        routed[max(fits, key=lambda name: smallest[name])].append(budget)
    return routed


def short_name(cfg: Config, space: str | Path) -> str:
    """A sub-space's name in results: its file's stem less the config's name (bert_autodistil_tiny -> tiny)."""
    return Path(space).stem.removeprefix(cfg.name + "_")


def sub_run(cfg: Config, space: str | Path, budgets: tuple[int, ...] = ()) -> Config:
    """The run of `cfg` on one sub-space (`runs/<name>-<sub-space>`), with the parameter budgets to search there."""
    name = f"{cfg.name}-{short_name(cfg, space)}"
    sn, sc = replace(cfg.supernet, space=str(Path(space).resolve())), replace(cfg.search, params_budgets=budgets)
    return replace(cfg, name=name, supernet=sn, search=sc)


def run_autodistil(cfg: Config, spaces: list[str], progress: bool = True) -> dict[str, Any]:
    """Train one supernet per sub-space (each scored at `eval.archs`), route `search.params_budgets` to the
    sub-spaces, search and score there, and write the combined results into `runs/<name>/`."""
    if not cfg.search.params_budgets:
        raise ConfigError("AutoDistil routes parameter budgets: set search.params_budgets")
    subs = {short_name(cfg, s): sub_run(cfg, s) for s in spaces}
    smallest = {}
    for key, sub in subs.items():
        run(sub, progress=progress)  # trains the sub-space's supernet (a stopped one continues)
        loaded = load_run(sub.run_dir)
        smallest[key] = loaded.family.costs(
            loaded.space.smallest(), loaded.space, loaded.net.vocab_size, loaded.cfg.supernet, cfg.latency
        )["parameters"]
    rows, steps = [], {}
    for key, budgets in route(cfg.search.params_budgets, smallest).items():
        result = run(replace(subs[key], search=replace(subs[key].search, params_budgets=tuple(budgets))), progress)
        steps[key] = result["steps"]
        rows += [{**r, "name": f"{r['name']} ({key})", "subspace": key} for r in result["results"]]
    results = {
        "name": cfg.name,
        "family": cfg.family,
        "generator": cfg.supernet.generator,
        "steps": " / ".join(f"{k}: {v}" for k, v in steps.items()),
        "subspaces": {k: {"run": str(s.run_dir), "smallest_parameters": smallest[k]} for k, s in subs.items()},
        "results": rows,
    }
    out = cfg.run_dir
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    (out / "summary.md").write_text(summary_markdown(results, family_of(cfg.family)), encoding="utf-8")
    return results
