"""The study's report: `<results_dir>/<name>.md`, `<name>.json`, `<name>_fidelity.png`, `<name>_pareto.png`,
rebuilt from the records of finished pieces at the end of every `mosnas study` (and by `--only report`)."""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import mosnas
from mosnas.environment import git_commit
from mosnas.hardware import machine
from mosnas.study import figures
from mosnas.study.archs import log_points
from mosnas.study.markdown import markdown
from mosnas.study.plan import PARTS, arch_set, plan, tally
from mosnas.study.results import (
    REFERENCE,
    REFERENCE_SOURCE,
    fidelity,
    finished,
    generator_of,
    grad_conflict,
    pareto_lines,
    retrain_lines,
    verdict,
)
from mosnas.study.side_by_side import attach
from mosnas.study.work import Study
from mosnas.workspace.paths import PROJECT
from mosnas.workspace.records import write_json, write_text
from mosnas.workspace.run_dir import read_log


def collect(study: Study) -> dict[str, Any]:
    """Every number of the report (the JSON), from the finished pieces."""
    done = finished(study)
    archs = [row for row, _ in arch_set(study)]
    fid = fidelity(study, done, archs)
    gens = {v: generator_of(study, v) for v, _ in study.cfg.variants}
    pareto = [
        {"variant": key.split("/")[0], "seed": r["seed"], **row}
        for key, r in done.get("pareto", {}).items()
        for row in r["result"]["rows"]
    ]
    pareto = attach(pareto, {r["seed"]: r["result"] for r in done.get("latency", {}).values()})
    generators = {v: g for v, (g, _) in gens.items()}
    retrain = [
        {"variant": k.split("/")[0], "seed": r["seed"], **r["result"]} for k, r in done.get("retrain", {}).items()
    ]
    return {
        "meta": _meta(study, done),
        "study": study.cfg.to_dict(),
        "archs": archs,
        "generators": generators,
        "reference": {"source": REFERENCE_SOURCE, "values": REFERENCE},
        "fidelity": fid,
        "verdict": verdict(fid["per_variant"], generators) + retrain_lines(retrain) + pareto_lines(pareto, generators),
        "grad_conflict": grad_conflict(study, done),
        "retrain": [
            {"variant": k.split("/")[0], "seed": r["seed"], **r["result"]} for k, r in done.get("retrain", {}).items()
        ],
        "pareto": pareto,
        "pareto_latency": {str(r["seed"]): r["result"] for r in done.get("latency", {}).values()},
        "supernets": [
            {"variant": k.split("/")[0], "seed": r["seed"], "wall_s": r["wall_s"]}
            | {f: r["result"].get(f) for f in ("steps", "train_s", "precision", "world_size", "command")}
            | {"median_s_per_step": median_step_s(r["result"].get("run"))}
            for k, r in done.get("supernet", {}).items()
        ],
        "pieces": [
            {k: r[k] for k in ("kind", "key", "seed", "wall_s", "inputs_sha", "finished")}
            for d in done.values()
            for r in d.values()
        ],
        "_paper_like": {v: like for v, (_, like) in gens.items()},
    }


def median_step_s(run_dir: str | None) -> float | None:
    """The median seconds per update between a run's log records (the loop's clock), None without its log: a
    training time well above steps x this median had a slow phase (another job on the machine)."""
    points = log_points(read_log(Path(run_dir))) if run_dir else []
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0]
    return round(statistics.median(rates), 4) if rates else None


def _meta(study: Study, done: dict) -> dict[str, Any]:
    precisions = sorted(
        {r["result"].get("precision") or "?" for d in ("supernet", "scratch") for r in done.get(d, {}).values()}
    )
    commands = []
    if study.dir.commands.is_file():
        commands = [json.loads(x) for x in study.dir.commands.read_text(encoding="utf-8").splitlines() if x.strip()]
    config = Path(study.cfg.base).resolve()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **machine(),
        "torch": torch.__version__,
        "mosnas": mosnas.__version__,
        "git_commit": git_commit(),
        "precision": precisions,
        "base": str(config.relative_to(PROJECT)) if config.is_relative_to(PROJECT) else str(config),
        "commands": commands,
        "wall_s": sum(r["wall_s"] for d in done.values() for r in d.values()),
        "progress": tally(study, plan(study, PARTS, study.cfg.seeds)),
    }


def write_report(study: Study, config_path: str | Path) -> dict[str, Path]:
    """Write the Markdown, JSON and plots of the study; returns their paths."""
    data = collect(study)
    out = Path(study.cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = study.cfg.name
    variants = [v for v, _ in study.cfg.variants]
    paths = {"md": out / f"{name}.md", "json": out / f"{name}.json"}
    fid = figures.fidelity_plot(
        data["fidelity"]["per_seed"], variants, f"{name}: supernet vs scratch BLEU", out / f"{name}_fidelity.png"
    )
    par = figures.pareto_plot(data["pareto"], variants, f"{name}: Pareto fronts", out / f"{name}_pareto.png")
    paths.update({k: p for k, p in (("fidelity", fid), ("pareto", par)) if p})
    write_text(paths["md"], markdown(study, data, config_path, {k: p.name for k, p in paths.items()}))
    write_json(paths["json"], {k: v for k, v in data.items() if not k.startswith("_")})
    return paths
