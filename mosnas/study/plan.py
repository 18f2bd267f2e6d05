"""The pieces of a study in the order they run, with their inputs, their work and a rough estimate of their
time: the vocabulary and the fixed arch set; then per seed the supernets, the archs trained from scratch and
the evaluations (fidelity); then retraining and the Pareto fronts per variant and seed, and per seed the
fronts' archs measured side by side."""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Any

from mosnas.core.space import Arch
from mosnas.engine.schedule import step_archs
from mosnas.family import family_of
from mosnas.study.archs import arch_key, random_archs, spanning_archs
from mosnas.study.pieces import Piece, inputs_sha
from mosnas.study.work import Study
from mosnas.workspace.records import made_from, write_json

TIMED_TRANSLATION_S = 0.1  # rough seconds per timed translation, for the estimates of latency measurements
PARTS = ("fidelity", "retrain", "pareto")  # what `--only` selects (and prepare: vocabulary and arch set only)


@functools.lru_cache(maxsize=8)
def space_costs(study: Study) -> Any:
    """(space, arch -> the family's costs: parameters at data.vocab_size, FLOPs at the latency protocol's lengths)."""
    cfg = study.dense_config(study.cfg.seeds[0])
    family = family_of(cfg.family)
    space = family.load_space(cfg.supernet.space)
    return space, lambda a: family.costs(a, space, cfg.data.vocab_size, cfg.supernet, cfg.latency)


def _archs_inputs(study: Study) -> dict[str, Any]:
    space, _ = space_costs(study)
    cfg = study.dense_config(study.cfg.seeds[0])
    sn = {k: getattr(cfg.supernet, k) for k in ("share_embeddings", "prenorm")}
    return {"space": space.to_dict(), "vocab_size": cfg.data.vocab_size, "archs": asdict(study.cfg.archs), **sn}


def choose_archs(study: Study) -> list[dict[str, Any]]:
    """The fixed arch set, cheapest first, with each arch's key, parameters (exported model, at data.vocab_size)
    and FLOPs: spread evenly over the parameter count (the smallest and largest included) or HAT's random."""
    space, costs = space_costs(study)
    ac = study.cfg.archs
    params = lambda a: costs(a)["parameters"]
    if ac.method == "random":
        archs = random_archs(space, params, ac.count, ac.seed)
    else:
        archs = spanning_archs(space, params, ac.count, ac.seed, ac.pool)
    describe = family_of(study.dense_config(study.cfg.seeds[0]).family).describe
    rows = [
        {"key": arch_key(a), "arch": a.to_dict(), "describe": describe(a.to_dict())}
        | {k: costs(a)[k] for k in ("parameters", "flops")}
        for a in archs
    ]
    return [{"index": i, **r} for i, r in enumerate(rows)]


def archs_piece(study: Study) -> Piece:
    def work() -> dict[str, Any]:
        rows = choose_archs(study)
        write_json(study.dir.archs, rows)  # beside the records: what every variant and seed scores
        return {"archs": rows}

    return Piece("archs", "set", None, _archs_inputs(study), work)


def arch_set(study: Study) -> list[tuple[dict[str, Any], Arch]]:
    """(row, arch) of the fixed set: the recorded one when its inputs still hold, else chosen now."""
    piece = archs_piece(study)
    done = study.records.status(piece)[0] == "done"
    rows = study.records.record("archs", "set")["result"]["archs"] if done else choose_archs(study)
    space, _ = space_costs(study)
    return [(r, space.arch_from_dict(r["arch"])) for r in rows]


def vocab_piece(study: Study) -> Piece:
    d = study.dense_config(study.cfg.seeds[0]).to_dict()
    inputs = {"family": d["family"], "data": {k: v for k, v in d["data"].items() if k != "tokenizer"}}
    return Piece("vocab", "spm", None, inputs, study.make_vocab, estimate_s=20)


def supernet_piece(study: Study, variant: str, seed: int) -> Piece:
    key = f"{variant}/s{seed}"
    redo = lambda: study.force or study.records.status(piece)[0] == "stale"  # --force: a run folder started over
    piece = Piece(
        "supernet", key, seed, study.supernet_inputs(variant, seed), lambda: study.train_supernet(variant, seed, redo())
    )
    piece.steps, piece.estimate_s = study.cfg.supernet_steps, estimate_supernet(study, variant, seed)
    return piece


def scratch_piece(study: Study, arch: Arch, seed: int) -> Piece:
    ev, steps = study.cfg.eval, study.cfg.steps_scratch
    inputs = {"recipe": study.dense_inputs(seed, steps), "arch": arch.to_dict(), "eval": asdict(ev)}
    inputs["valid_bleu"] = study.cfg.retrain.valid_bleu
    piece = Piece("scratch", f"{arch_key(arch)}/s{seed}", seed, inputs, lambda: study.train_scratch(arch, seed))
    piece.steps, piece.estimate_s = steps, estimate_dense(study, arch, steps) + _decode_s(study, 2)
    return piece


def eval_piece(study: Study, variant: str, seed: int, arch: Arch) -> Piece:
    cfg = study.supernet_config(variant, seed)
    inputs = {"supernet": study.supernet_inputs(variant, seed), "arch": arch.to_dict(), "eval": asdict(study.cfg.eval)}
    inputs["decode"] = asdict(cfg.decode)
    key = f"{variant}/s{seed}/{arch_key(arch)}"
    return Piece("eval", key, seed, inputs, lambda: study.evaluate(variant, seed, arch), estimate_s=_decode_s(study, 1))


def _stage_inputs(study: Study, variant: str, seed: int, part: str) -> dict[str, Any]:
    cfg = study.supernet_config(variant, seed)
    own = {k: v for k, v in asdict(getattr(study.cfg, part)).items() if k != "seeds"}
    return {
        "supernet": study.supernet_inputs(variant, seed),
        part: own,
        "recipe": study.dense_inputs(seed, study.cfg.steps_scratch),
        "search": {k: v for k, v in asdict(cfg.search).items() if k not in ("latency_ms", "latency_fractions")},
        "latency": asdict(cfg.latency) if part == "pareto" else None,
        "finetune": {k: getattr(cfg.finetune, k) for k in ("lr", "warmup", "precision")},
        "eval": asdict(study.cfg.eval),
        "decode": asdict(cfg.decode),
    }


def retrain_piece(study: Study, variant: str, seed: int) -> Piece:
    from mosnas.study.retrain import retrain

    rt = study.cfg.retrain
    scratch_of = lambda arch, s: study.records.run(scratch_piece(study, arch, s))  # the fidelity study's piece
    piece = Piece("retrain", f"{variant}/s{seed}", seed, _stage_inputs(study, variant, seed, "retrain"),
                  lambda: retrain(study, variant, seed, scratch_of))  # fmt: skip
    piece.steps = rt.max_steps + study.cfg.steps_scratch + study.cfg.supernet_steps  # the control: about a supernet's
    piece.estimate_s = 2 * estimate_supernet(study, variant, seed) + _decode_s(
        study, 2 + rt.max_steps // rt.check_every
    )
    return piece


def pareto_piece(study: Study, variant: str, seed: int) -> Piece:
    from mosnas.study.retrain import pareto

    pc, lc = study.cfg.pareto, study.supernet_config(variant, seed).latency
    piece = Piece("pareto", f"{variant}/s{seed}", seed, _stage_inputs(study, variant, seed, "pareto"),
                  lambda: pareto(study, variant, seed))  # fmt: skip
    piece.steps = len(pc.latency_fractions) * pc.finetune_steps
    latency_s = lc.num_samples * (lc.warmup + lc.repeats) * TIMED_TRANSLATION_S + 60
    piece.estimate_s = latency_s + _decode_s(study, 2 + 2 * len(pc.latency_fractions)) + 60 * len(pc.latency_fractions)
    return piece


def latency_piece(study: Study, seed: int) -> Piece:
    """Every arch of the seed's Pareto pieces re-measured side by side (mosnas.study.side_by_side), after them."""
    from mosnas.study.side_by_side import BLOCKS, side_by_side

    lc = study.supernet_config(study.cfg.variants[0][0], seed).latency
    pareto = {v: inputs_sha(made_from(**pareto_piece(study, v, seed).inputs)) for v, _ in study.cfg.variants}
    inputs = {"pareto": pareto, "latency": asdict(lc), "blocks": BLOCKS}
    after = tuple(f"pareto {v}/s{seed}" for v in pareto)
    piece = Piece("latency", f"s{seed}", seed, inputs, lambda: side_by_side(study, seed), after=after)
    archs = len(pareto) * (2 + len(study.cfg.pareto.latency_fractions))  # at most: references and winners
    piece.estimate_s = archs * BLOCKS * (lc.warmup + lc.repeats) * TIMED_TRANSLATION_S + 30
    return piece


def plan(study: Study, parts: tuple[str, ...], seeds: tuple[int, ...]) -> list[Piece]:
    """The pieces `parts` need for `seeds`, in the order they run (each skipped while done)."""
    variants = [name for name, _ in study.cfg.variants]
    pieces = [vocab_piece(study), archs_piece(study)]
    if parts == ("prepare",):
        return pieces
    archs = [a for _, a in arch_set(study)]
    want = {p: [s for s in study.cfg.seeds_of(p) if s in seeds] for p in PARTS if p in parts}
    for seed in study.cfg.seeds:
        if any(seed in s for s in want.values()):
            pieces += [supernet_piece(study, v, seed) for v in variants]
        if seed in want.get("fidelity", []):
            pieces += [scratch_piece(study, a, seed) for a in archs]
            pieces += [eval_piece(study, v, seed, a) for v in variants for a in archs]
    for part, make in (("retrain", retrain_piece), ("pareto", pareto_piece)):
        pieces += [make(study, v, seed) for seed in want.get(part, []) for v in variants]
    pieces += [latency_piece(study, seed) for seed in want.get("pareto", [])]  # the fronts on one latency axis
    return pieces


# -- rough estimates for --dry-run ----------------------------------------------------------------------
def _step_s(study: Study, archs: list[Arch], gflops: float) -> float:
    """Seconds of one update training `archs` on one batch: 3 x forward FLOPs per target token (the family's
    FLOPs of a pair at the latency protocol's lengths / tgt_len) x the tokens of an update, at `gflops`."""
    _, costs = space_costs(study)
    cfg = study.dense_config(study.cfg.seeds[0])  # its update_freq: dense_update_freq, a supernet update's tokens
    per_token = sum(3 * costs(a)["flops"] / cfg.latency.tgt_len for a in archs)
    return per_token * cfg.data.max_tokens * cfg.train.update_freq / (gflops * 1e9)


def estimate_supernet(study: Study, variant: str, seed: int) -> float:
    tc = study.supernet_config(variant, seed).train
    space, _ = space_costs(study)
    sample = [
        step_archs(space, tc.sampling, tc.num_random, seed, s, None, tc.random_every, tc.random_from) for s in range(20)
    ]
    gflops = study.cfg.estimate.train_gflops
    per_step = sum(_step_s(study, [a for _, a in archs], gflops) for archs in sample) / len(sample)
    return per_step * study.cfg.supernet_steps


def estimate_dense(study: Study, arch: Arch, steps: int) -> float:
    est = study.cfg.estimate
    return _step_s(study, [arch], est.dense_gflops or est.train_gflops) * steps


def _decode_s(study: Study, times: int) -> float:
    """Seconds of `times` BLEU scorings of the study's BLEU sample (1,000 sentences when it is the whole split)."""
    return times * (study.cfg.eval.bleu_sentences or 1000) / study.cfg.estimate.decode_sentences_per_s


def describe(study: Study, pieces: list[Piece]) -> str:
    """The plan as --dry-run prints it: every piece, its status, steps and estimated minutes, and the total."""
    sc = study.cfg
    lines = [
        f"study {sc.name}: variants {', '.join(n for n, _ in sc.variants)}; seeds {', '.join(map(str, sc.seeds))}; "
        f"{sc.archs.count} archs ({sc.archs.method}, seed {sc.archs.seed}); supernets {sc.supernet_steps} steps, "
        f"archs alone {sc.steps_scratch} steps",
        f"work dir {sc.work_dir}; results {sc.results_dir}/{sc.name}.{{md,json}}",
        "",
        f"{'piece':44s} {'seed':>4s} {'status':>8s} {'steps':>6s} {'est. min':>9s}",
    ]
    for p in pieces:
        status, why = study.records.status(p)
        wall = (study.records.record(p.kind, p.key) or {}).get("wall_s") if status == "done" else None
        shown = f"{wall / 60:.1f}*" if wall is not None else f"{p.estimate_s / 60:.1f}"
        seed = "-" if p.seed is None else str(p.seed)
        steps = str(p.steps) if p.steps else "-"
        lines.append(f"{p.name:44s} {seed:>4s} {status:>8s} {steps:>6s} {shown:>9s}" + (f"  ({why})" if why else ""))
    counted = tally(study, pieces)
    done = sum(d for d, _ in counted["kinds"].values())
    est = sc.estimate
    kinds = dict.fromkeys(p.kind for p in pieces)
    lines += ["", "by kind: " + "; ".join(
        f"{k} {sum(p.kind == k for p in pieces)} (~{sum(p.estimate_s for p in pieces if p.kind == k) / 3600:.1f} h)"
        for k in kinds
    )]  # fmt: skip
    lines += [
        "",
        f"{len(pieces)} pieces, {done} done (* = measured minutes); the rest ~{counted['todo_h']:.1f} h "
        "by a rough estimate "
        f"(training FLOPs at {est.train_gflops:g} GFLOP/s, translation at {est.decode_sentences_per_s:g} sentences/s: "
        "the estimate section of the study config). A retraining piece also trains the searched arch from scratch "
        "and a compute-matched control.",
    ]
    return "\n".join(lines)


def tally(study: Study, pieces: list[Piece]) -> dict[str, Any]:
    """How much of `pieces` is finished: per piece kind `[done, total]`, and `todo_h`, the unfinished pieces'
    estimated hours (the study config's estimate section)."""
    kinds: dict[str, list[int]] = {}
    todo = 0.0
    for piece in pieces:
        done = study.records.status(piece)[0] == "done"
        counts = kinds.setdefault(piece.kind, [0, 0])
        counts[0] += done
        counts[1] += 1
        todo += 0 if done else piece.estimate_s
    return {"kinds": kinds, "todo_h": round(todo / 3600, 2)}
