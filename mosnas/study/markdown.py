"""The study's Markdown page, section by section, from the numbers `mosnas.study.report.collect` gathered."""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from mosnas.study.side_by_side import describe
from mosnas.study.work import Study
from mosnas.workspace.paths import PROJECT


def _ms(d: dict[str, Any] | None, digits: int = 2) -> str:
    """'1.23 ± 0.45' (std over seeds), '1.23' for one seed, '-' for none."""
    if not d or d.get("mean") is None:
        return "-"
    std = f" ± {d['std']:.{digits}f}" if d.get("std") is not None else ""
    return f"{d['mean']:.{digits}f}{std}"


def _v(v: float | None, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def _ci(s: dict[str, float]) -> str:
    return f"{_v(s['value'])} [{_v(s.get('lo'))}, {_v(s.get('hi'))}]"


def repeat_command(config_path: str | Path) -> str:
    """The command that repeats (or continues) the study, with the config as a path from the project root."""
    path = Path(config_path).resolve()
    shown = path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path
    return shlex.join([".venv/bin/mosnas", "study", str(shown)])


def _numeric(cell: str) -> bool:
    """A cell of numbers ('1.23 ± 0.45', '20 / 30', '150 steps, 12 s', '-'): right-aligned."""
    return not re.sub(r"[0-9.,+±\[\]/ -]|e[+-]|steps|not within|\bs\b|\*", "", cell)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: columns of numbers right-aligned, text left-aligned."""
    align = ["---:" if rows and all(_numeric(r[i]) for r in rows) else "---" for i in range(len(head))]
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _header(study: Study, data: dict[str, Any]) -> list[str]:
    m, sc = data["meta"], study.cfg
    flags = " ".join(m.get("cpu_flags") or []) or "unknown"
    gpu = f"; GPU {m['cuda']}" if m.get("cuda") else ""
    variants = "; ".join(f"`{v}`: {' '.join(o) or '(the base config)'}" for v, o in sc.variants)
    ev = sc.eval
    return [
        f"# Does MoS deliver? Study `{sc.name}`",
        "",
        f"Date {m['date']}; CPU {m['cpu']} ({m['cores']} cores){gpu}; CPU flags: {flags}; torch {m['torch']}; "
        f"mosnas {m['mosnas']} (commit {m['git_commit'][:10]}); training precision: {', '.join(m['precision']) or '-'}"
        ".",
        "",
        f"Base config `{m['base']}`; variants {variants}; seeds {', '.join(map(str, sc.seeds))}; supernets "
        f"{sc.supernet_steps} steps, each arch alone {sc.steps_scratch} steps from scratch with the same recipe. "
        f"{len(data['archs'])} fixed archs ({sc.archs.method}, seed {sc.archs.seed}). Validation loss on "
        f"`{ev.select_split}` ({ev.select_sentences or 'all'} sentences, seeded), BLEU (sacreBLEU) on "
        f"`{ev.bleu_split}` ({ev.bleu_sentences or 'all'} sentences). Intervals: 95% bootstrap over the archs "
        f"({ev.resamples} resamples).",
        "",
        *_progress(m.get("progress")),
    ]


def _progress(p: dict[str, Any] | None) -> list[str]:
    """'Progress: 52 of 142 pieces finished (...)': what the numbers below rest on."""
    if not p:
        return []
    done, total = (sum(c[i] for c in p["kinds"].values()) for i in (0, 1))
    if done == total:
        return [f"Progress: all {total} pieces finished.", ""]
    kinds = ", ".join(f"{k} {d}/{t}" for k, (d, t) in p["kinds"].items())
    return [
        f"**Progress: {done} of {total} pieces finished** ({kinds}); the rest ~{p['todo_h']:.1f} h by the --dry-run "
        "estimate. Every number below comes from the finished pieces only; the same command continues the study.",
        "",
    ]


def _summary(data: dict[str, Any]) -> list[str]:
    per = data["fidelity"]["per_variant"]
    ref, like = data["reference"]["values"], data["_paper_like"]
    rows = []
    for v, s in per.items():
        b, r = s["bleu"], ref.get(data["generators"][v]) if like.get(v) else None
        mae_ci = f" [{_v(b['mae'].get('lo'))}, {_v(b['mae'].get('hi'))}]" if "lo" in b["mae"] else ""
        tau_ci = (
            f" [{_v(b['kendall_tau'].get('lo'))}, {_v(b['kendall_tau'].get('hi'))}]" if "lo" in b["kendall_tau"] else ""
        )
        rows.append([f"{v} ({data['generators'][v]})", ", ".join(map(str, s["seeds"])), _ms(b["mean_gap"]),
                     _ms(b["mae"]) + mae_ci, _ms(b["kendall_tau"]) + tau_ci, _ms(b["spearman_rho"]),
                     _v(r["mae"]) if r else "-", _v(r["kendall_tau"]) if r else "-"])  # fmt: skip
    head = ["variant (generator)", "seeds", "mean gap BLEU", "MAE BLEU", "Kendall τ", "Spearman ρ"]
    head += ["paper MAE", "paper τ"]
    return [
        "## Summary beside the paper's reference values",
        "",
        "Mean ± std over seeds; in brackets the 95% bootstrap interval of the seed mean over the archs. Paper values: "
        f"{data['reference']['source']} (shown for variants that differ from the base by their generator only).",
        "",
        *(_table(head, rows) if rows else ["No variant has 3 or more archs scored both ways yet."]),
        "",
        *(f"- {line}" for line in data["verdict"]),
        "",
    ]


def _fidelity(data: dict[str, Any], files: dict[str, str]) -> list[str]:
    rows = []
    for r in data["fidelity"]["per_seed"]:
        b, loss = r["bleu"], r["loss"]
        rows.append([r["variant"], str(r["seed"]), str(r["archs"]), _ci(b["mean_gap"]), _ci(b["mae"]),
                     _ci(b["kendall_tau"]), _ci(b["spearman_rho"]), _v(loss["mae"]["value"], 3),
                     _v(loss["kendall_tau"]["value"])])  # fmt: skip
    head = ["variant", "seed", "archs", "mean gap BLEU", "MAE BLEU", "Kendall τ", "Spearman ρ", "MAE loss", "τ loss"]
    lines = ["## Fidelity: the supernet's numbers against the same arch trained alone", ""]
    lines += _table(head, rows) if rows else ["Nothing scored both ways yet."]
    lines += ["", "Gap = supernet − scratch. Loss: validation NLL per target token (the search's fitness).", ""]
    if "fidelity" in files:
        lines += [f"![supernet vs scratch BLEU]({files['fidelity']})", ""]
    return lines + _per_arch(data) + _regret(data)


def _per_arch(data: dict[str, Any]) -> list[str]:
    variants = list(data["fidelity"]["per_variant"])
    cells: dict[int, dict[str, list[float]]] = {}
    for r in data["fidelity"]["per_seed"]:
        p = r["pairs"]
        for i, sup, scr in zip(p["index"], p["sup_bleu"], p["scr_bleu"]):
            cells.setdefault(i, {}).setdefault(r["variant"], []).append(sup)
            cells[i].setdefault("scratch:" + r["variant"], []).append(scr)
    mean = lambda xs: sum(xs) / len(xs) if xs else None
    rows = []
    for a in data["archs"]:
        c = cells.get(a["index"], {})
        scratch = next((c[k] for k in c if k.startswith("scratch:")), [])
        rows.append(
            [
                str(a["index"]),
                a["key"],
                a.get("describe", "-"),
                f"{a['parameters']:,}",
                _v(mean(scratch)),
                *(_v(mean(c.get(v, []))) for v in variants),
            ]
        )
    return [
        "Per arch (BLEU, mean over seeds):",
        "",
        *_table(["#", "key", "arch", "params", "scratch", *variants], rows),
        "",
    ]


def _regret(data: dict[str, Any]) -> list[str]:
    rows = [[v, f, _ms(d)] for v, s in data["fidelity"]["per_variant"].items() for f, d in s["regret"].items()]
    if not rows:
        return []
    return [
        "### Regret of picking by the supernet",
        "",
        "Among the fixed archs within a parameter budget (smallest + f × (largest − smallest)), the arch with the "
        "lowest supernet validation loss is picked; regret = best scratch BLEU within the budget − the pick's.",
        "",
        *_table(["variant", "budget f", "regret BLEU"], rows),
        "",
    ]


def _conflict(data: dict[str, Any]) -> list[str]:
    gc = data["grad_conflict"]
    if not gc:
        return ["## Gradient conflict", "", "Not measured (set grad_conflict_every in the study config).", ""]
    rows = [[v, kind, _ms(d, 3)] for v, s in gc.items() for kind, d in s["over_seeds"].items()]
    return [
        "## Gradient conflict",
        "",
        "Cosine similarity of the shared tensors' gradients of two archs of a step, mean over training per seed, "
        "then mean ± std over seeds.",
        "",
        *_table(["variant", "pair", "cosine"], rows),
        "",
    ]


def _retrain(data: dict[str, Any]) -> list[str]:
    rows = []
    for r in data["retrain"]:
        ft, c, k = r["finetune"], r["control"], r["compute"]
        reached = (
            f"{ft['reached_step']} steps, {ft['reached_s']:.0f} s"
            if ft["reached_step"] is not None
            else f"not within {ft['max_steps']}"
        )
        rows.append([r["variant"], str(r["seed"]), f"{r['parameters']:,}", _v(r["target"]["valid_bleu"]), reached,
                     _v(ft.get("bleu")), f"{k['total_s'] / 60:.1f}", f"{k['flops']['total']:.3g}",
                     f"{c['wall']} / {c['flops']}", f"{_v(c['valid_bleu_wall'])} / {_v(c['valid_bleu_flops'])}",
                     _v(c.get("bleu"))])  # fmt: skip
    head = ["variant", "seed", "params", "target val BLEU", "fine-tune reached", "fine-tuned BLEU", "route min"]
    head += ["route FLOPs", "control steps (time / FLOPs)", "control val BLEU (time / FLOPs)", "control BLEU"]
    return [
        "## Retraining cost and the compute-matched control",
        "",
        "The supernet's search under the retraining budget; its winner fine-tuned from the inherited weights until its "
        "validation BLEU reaches the same arch trained alone from scratch (target). Route = supernet training + "
        "search + fine-tuning to the target (training loops' own clocks). Control: the arch trained from scratch "
        "with the route's compute, matched in wall time and in FLOPs. BLEU columns without 'val': the BLEU split.",
        "",
        *(_table(head, rows) if rows else ["No retraining piece finished yet."]),
        "",
    ]


def _pareto(data: dict[str, Any], files: dict[str, str]) -> list[str]:
    rows = [
        [r["variant"], str(r["seed"]), r["name"], r["kind"], _v(r.get("budget_ms")), _v(r.get("measured_latency_ms"))]
        + [_v(r.get("side_by_side_ms")), f"{r['parameters']:,}" if r.get("parameters") else "-", _v(r.get("bleu"))]
        for r in data["pareto"]
    ]
    lines = ["## Pareto fronts", ""]
    if rows:
        lines += [
            "Budgets and *measured ms* are each piece's own (its predictor, its re-measurement of the winner, minutes "
            "apart); *side by side ms* times every arch of a seed's fronts together in one session (interleaved, "
            "the study's latency settings): the one axis on which fronts of different variants compare.",
            "",
        ]
        measured = sorted(data.get("pareto_latency", {}).items())
        lines += [f"- Side by side, seed {seed}: {describe(m)}." for seed, m in measured] + [""] * bool(measured)
    header = ["variant", "seed", "subnet", "kind", "budget ms", "measured ms", "side by side ms", "params", "BLEU"]
    lines += _table(header, rows) if rows else ["No Pareto piece finished yet."]
    if "pareto" in files:
        lines += ["", f"![Pareto fronts]({files['pareto']})"]
    return lines + [""]


def _supernets(data: dict[str, Any]) -> list[str]:
    rows = [
        [s["variant"], str(s["seed"]), str(s["steps"]), _v(s["train_s"] / 60, 1), _v(s.get("median_s_per_step"), 3)]
        + [s.get("precision") or "-", str(s.get("world_size") or 1), _v(s["wall_s"] / 60, 1)]
        for s in data["supernets"]
    ]
    if not rows:
        return []
    head = ["variant", "seed", "steps", "training min", "median s/step", "precision", "processes", "piece min"]
    return [
        "## Supernets",
        "",
        "Training minutes: the training loop's own clock (updates only); median s/step: between its log records. "
        "Training minutes well above steps × median s/step mean a slow phase of the machine (another job beside "
        "it): the retraining's wall-matched control is given that time too (its FLOPs-matched control is not "
        "affected). Piece minutes: the whole piece. The command that trained each is in the JSON "
        "(`supernets[].command`).",
        "",
        *_table(head, rows),
        "",
    ]


def _pieces(data: dict[str, Any], config_path: str | Path) -> list[str]:
    rows = [
        [p["kind"], p["key"], "-" if p["seed"] is None else str(p["seed"]), f"{p['wall_s'] / 60:.1f}", p["inputs_sha"]]
        for p in data["pieces"]
    ]
    commands = list(dict.fromkeys(c["command"] for c in data["meta"]["commands"] if "command" in c))
    # rows = the plan's finished pieces + what `results.finished` adds: retraining winners' from-scratch runs
    extra = len(rows) - sum(c[0] for c in t["kinds"].values()) if (t := data["meta"].get("progress")) else 0
    added = f" ({len(rows) - extra} of the plan, {extra} added while running: searched winners' from-scratch runs)"
    added = added if extra > 0 else ""
    return [
        "## Pieces and wall time",
        "",
        f"{len(rows)} pieces{added}, {data['meta']['wall_s'] / 3600:.2f} h in all (each piece's wall time in the call "
        "that finished it).",
        "",
        *_table(["piece", "key", "seed", "minutes", "inputs"], rows),
        "",
        "## Commands",
        "",
        f"Repeat (finished pieces are skipped): `{repeat_command(config_path)}`; the plan: add `--dry-run`.",
        "",
        *(f"- `{c}`" for c in commands),
        "",
    ]


def markdown(study: Study, data: dict[str, Any], config_path: str | Path, files: dict[str, str]) -> str:
    """The whole page."""
    parts = [_header(study, data), _summary(data), _fidelity(data, files), _conflict(data), _retrain(data)]
    parts += [_pareto(data, files), _supernets(data), _pieces(data, config_path)]
    return "\n".join(line for part in parts for line in part)
