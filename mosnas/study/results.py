"""The numbers of a study, assembled from the records of its finished pieces (those whose inputs match the
study config now): fidelity per variant and seed and over seeds, regret, gradient conflict, retraining, Pareto,
and the verdict sentences, generated from the numbers."""

from __future__ import annotations

import math
from typing import Any

from mosnas.study import stats
from mosnas.study.archs import budget_limit
from mosnas.study.plan import PARTS, plan, space_costs
from mosnas.study.work import Study

# The first author's public follow-up data (WMT'14 En-De, HAT space; validation BLEU, 20 archs, 3 splits).
REFERENCE = {
    "shared": {"label": "HAT (shared)", "mae": 1.14, "kendall_tau": 0.71},
    "layer": {"label": "layer-wise MoS", "mae": 0.97, "kendall_tau": 0.56},
    "neuron": {"label": "neuron-wise MoS", "mae": 0.87, "kendall_tau": 0.79},
}
REFERENCE_SOURCE = (
    "the MoS first author's public follow-up data: WMT'14 En-De, 30 random HAT-space archs each trained from "
    "scratch and scored inside each supernet; validation BLEU, 20 archs, 3 splits"
)


def finished(study: Study) -> dict[str, dict[str, dict[str, Any]]]:
    """kind -> key -> record of every piece of the full study that is done with the current inputs."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for piece in plan(study, PARTS, study.cfg.seeds):
        if study.records.status(piece)[0] == "done":
            out.setdefault(piece.kind, {})[piece.key] = study.records.record(piece.kind, piece.key)
    for record in list(out.get("retrain", {}).values()):  # the searched archs trained from scratch, read by it
        key = record["result"]["target"].get("piece")
        scratch = study.records.record("scratch", key) if key else None
        if scratch and key not in out.get("scratch", {}):
            out.setdefault("scratch", {})[key] = scratch
    return out


def generator_of(study: Study, variant: str) -> tuple[str, bool]:
    """(the variant's generator, whether it differs from the base by its generator alone: the reference's)."""
    cfg = study.supernet_config(variant, study.cfg.seeds[0])
    keys = {o.split("=", 1)[0].strip() for o in study.cfg.variant(variant)}
    return cfg.supernet.generator, keys <= {"supernet.generator"}


def _pairs(done: dict, variant: str, seed: int, archs: list[dict]) -> dict[str, list]:
    """The archs scored both ways for one variant and seed: BLEU and validation loss, supernet and scratch."""
    out: dict[str, list] = {k: [] for k in ("index", "params", "sup_bleu", "scr_bleu", "sup_loss", "scr_loss")}
    for a in archs:
        ev = done.get("eval", {}).get(f"{variant}/s{seed}/{a['key']}")
        sc = done.get("scratch", {}).get(f"{a['key']}/s{seed}")
        if ev and sc:
            for key, value in zip(out, (a["index"], a["parameters"], ev["result"]["bleu"], sc["result"]["bleu"],
                                        ev["result"]["select_loss"], sc["result"]["select_loss"])):  # fmt: skip
                out[key].append(value)
    return out


def fidelity(study: Study, done: dict, archs: list[dict]) -> dict[str, Any]:
    """Per variant and seed: each statistic with its bootstrap interval over the archs, on BLEU and on the
    validation loss, and the regret per budget; per variant: mean +- std over seeds and the interval of the
    seed mean."""
    ev = study.cfg.eval
    space, costs = space_costs(study)
    low, high = (costs(a)["parameters"] for a in (space.smallest(), space.largest()))
    per_seed, per_variant = [], {}
    for variant, _ in study.cfg.variants:
        rows = []
        for seed in study.cfg.seeds:
            p = _pairs(done, variant, seed, archs)
            if len(p["index"]) < 3:
                continue
            row = {"variant": variant, "seed": seed, "archs": len(p["index"]), "pairs": p}
            row["bleu"] = stats.with_intervals(p["sup_bleu"], p["scr_bleu"], ev.resamples, seed)
            row["loss"] = stats.with_intervals(p["sup_loss"], p["scr_loss"], ev.resamples, seed)
            row["regret"] = {}
            for f in study.cfg.regret.params_fractions:
                limit = budget_limit(low, high, f)
                if min(p["params"]) <= limit:  # regret in BLEU of picking by the supernet's validation loss
                    row["regret"][f"{f:g}"] = stats.regret(p["sup_loss"], p["scr_bleu"], p["params"], limit)
            rows.append(row)
        per_seed += rows
        if rows:
            per_variant[variant] = _over_seeds(study, rows)
    return {"per_seed": per_seed, "per_variant": per_variant}


def _over_seeds(study: Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"seeds": [r["seed"] for r in rows]}
    for metric in ("bleu", "loss"):
        out[metric] = {k: stats.mean_std([r[metric][k]["value"] for r in rows]) for k in stats.STATISTICS}
    same = len({tuple(r["pairs"]["index"]) for r in rows}) == 1  # the seed mean's interval needs the same archs
    for k in ("mae", "kendall_tau") if same else ():
        pairs = [(r["pairs"]["sup_bleu"], r["pairs"]["scr_bleu"]) for r in rows]
        lo, hi = stats.seed_mean_ci(pairs, stats.STATISTICS[k], study.cfg.eval.resamples, 0)
        out["bleu"][k].update(lo=lo, hi=hi)
    fractions = dict.fromkeys(f for r in rows for f in r["regret"])
    out["regret"] = {f: stats.mean_std([r["regret"][f]["regret"] for r in rows if f in r["regret"]]) for f in fractions}
    return out


def grad_conflict(study: Study, done: dict) -> dict[str, Any]:
    """Per variant: each pair kind's cosine (mean over training per seed, then mean +- std over seeds)."""
    out = {}
    for variant, _ in study.cfg.variants:
        per_seed = {
            r["seed"]: r["result"]["grad_conflict"]
            for key, r in done.get("supernet", {}).items()
            if key.startswith(f"{variant}/") and r["result"].get("grad_conflict")
        }
        if per_seed:
            kinds = dict.fromkeys(k for summary in per_seed.values() for k in summary)
            means = {k: stats.mean_std([s[k]["mean"] for s in per_seed.values() if k in s]) for k in kinds}
            out[variant] = {"per_seed": per_seed, "over_seeds": means}
    return out


def _judge(a: dict, b: dict, lower_better: bool) -> tuple[str, str]:
    """('better' | 'worse' | 'tied', why) of mean_std `a` against `b`: beyond the seeds' spread or not."""
    if a["mean"] is None or b["mean"] is None:
        return "unknown", "not measured"
    diff = a["mean"] - b["mean"]
    if a["n"] < 2 or b["n"] < 2:
        side = "better" if (diff < 0) == lower_better and diff != 0 else "worse" if diff else "tied"
        return side, "one seed: no spread to judge it by"
    spread = math.hypot(a["std"] or 0.0, b["std"] or 0.0)
    if abs(diff) <= spread:
        return "tied", f"within the seeds' spread of {spread:.2f}"
    better = diff < 0 if lower_better else diff > 0
    return ("better" if better else "worse"), f"beyond the seeds' spread of {spread:.2f}"


def verdict(summary: dict[str, dict[str, Any]], generators: dict[str, str]) -> list[str]:
    """Sentences that say, from the numbers, whether each MoS variant beats plain sharing on fidelity (MAE
    lower, Kendall tau higher, beyond the seeds' spread); `summary` is fidelity()['per_variant']."""
    base = next((v for v in summary if generators.get(v) == "shared"), None)
    if base is None:
        return ["No variant with the shared generator finished: nothing to compare MoS with."]
    lines, wins = [], []
    for v, s in summary.items():
        if v == base:
            continue
        mae, tau = s["bleu"]["mae"], s["bleu"]["kendall_tau"]
        m_side, m_why = _judge(mae, summary[base]["bleu"]["mae"], lower_better=True)
        t_side, t_why = _judge(tau, summary[base]["bleu"]["kendall_tau"], lower_better=False)
        lines.append(
            f"{v} vs {base}: MAE {_num(mae['mean'])} vs {_num(summary[base]['bleu']['mae']['mean'])} BLEU, "
            f"{m_side} ({m_why}); Kendall tau {_num(tau['mean'])} vs "
            f"{_num(summary[base]['bleu']['kendall_tau']['mean'])}, {t_side} ({t_why})."
        )
        if generators.get(v) != "shared" and m_side == "better" and "beyond" in m_why:
            wins.append((v, t_side == "better" and "beyond" in t_why))
    one_seed = any(min(s["bleu"]["mae"]["n"], summary[base]["bleu"]["mae"]["n"]) < 2 for s in summary.values())
    if not wins and one_seed:
        lines.append(
            "No verdict yet: with one seed the seeds' spread is unknown, so these differences decide nothing (the "
            "study's other seeds: --seeds)."
        )
    elif not wins:
        lines.append(
            f"Here MoS does not beat plain sharing on supernet fidelity: no MoS variant has a lower MAE than "
            f"{base} beyond the seeds' spread."
        )
    for v, ranks in wins:
        lines.append(
            f"{v} lowers the error against training from scratch beyond the seeds' spread"
            + (" and improves the ranking." if ranks else ", but does not improve the ranking (Kendall tau) beyond it.")
        )
    return lines


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def retrain_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per variant: in how many seeds fine-tuning reached the scratch BLEU and after how many steps, and whether
    the NAS route ends ahead of the compute-matched controls (validation BLEU at the route's compute)."""
    lines = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == v]
        steps = [r["finetune"]["reached_step"] for r in mine if r["finetune"]["reached_step"] is not None]
        route = _mean([r["finetune"].get("route_valid_bleu") for r in mine])
        wall = _mean([r["control"]["valid_bleu_wall"] for r in mine])
        flops = _mean([r["control"]["valid_bleu_flops"] for r in mine])
        after = f", after {sum(steps) / len(steps):.0f} fine-tuning steps on average" if steps else ""
        text = f"{v}: the searched subnet reached the BLEU of its arch trained from scratch in {len(steps)} of "
        text += f"{len(mine)} seeds{after}"
        if None not in (route, wall, flops):
            ahead = sum(route > c for c in (wall, flops))
            where = ("behind both controls", "between the two controls", "ahead of both controls")[ahead]
            text += (
                f"; at the route's compute it stands at {route:.2f} validation BLEU, a dense model of the same arch "
                f"from scratch at {wall:.2f} (same time) and {flops:.2f} (same FLOPs): the route is {where}"
            )
        lines.append(text + ".")
    return lines


def pareto_lines(rows: list[dict[str, Any]], generators: dict[str, str]) -> list[str]:
    """Per MoS variant against plain sharing: at how many (seed, budget) the fine-tuned winner scores a higher
    BLEU, and both means with their measured latency."""
    tuned = {
        (r["variant"], r["seed"], r["name"]): r for r in rows if r["kind"] == "finetuned" and r.get("bleu") is not None
    }
    base = next((v for v, g in generators.items() if g == "shared" and any(k[0] == v for k in tuned)), None)
    if base is None:
        return []
    lines = []
    for v in dict.fromkeys(k[0] for k in tuned):
        pairs = [(r, tuned[(base, s, n)]) for (w, s, n), r in tuned.items() if w == v and (base, s, n) in tuned]
        if v == base or not pairs:
            continue
        higher = sum(a["bleu"] > b["bleu"] for a, b in pairs)
        bleu = [_mean([p[i]["bleu"] for p in pairs]) for i in (0, 1)]
        side = all(p[i].get("side_by_side_ms") is not None for p in pairs for i in (0, 1))
        key, how = ("side_by_side_ms", "measured side by side") if side else ("measured_latency_ms", "each piece's own")
        ms = [_mean([p[i][key] for p in pairs]) for i in (0, 1)]
        lines.append(
            f"Pareto: {v}'s fine-tuned winners score a higher BLEU than {base}'s at {higher} of {len(pairs)} budgets "
            f"(mean {_num(bleu[0])} vs {_num(bleu[1])} BLEU at {_num(ms[0])} vs {_num(ms[1])} ms, {how})."
        )
    return lines
