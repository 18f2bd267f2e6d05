"""`mosnas study CONFIG`: run a study (or the parts and seeds asked for), skipping finished pieces, then write its
report; `--dry-run` prints the plan and writes nothing."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime, timezone
from typing import Any

from mosnas.cli.args import setting

HELP = """Does MoS deliver? Train one supernet per variant (a named list of overrides of a base run config, e.g.
supernet.generator=shared) and seed, the study's fixed archs alone from scratch, and measure: fidelity (each
arch's validation loss and BLEU inside every supernet against trained alone: gap, MAE, Kendall tau, Spearman
rho with bootstrap intervals, regret), retraining cost (steps and time for a searched subnet to reach its
scratch BLEU, and a compute-matched dense control) and Pareto fronts (search at latency budgets, the same
short fine-tune). Work is split into resumable pieces; a finished piece is skipped, one made from other inputs
is refused (or redone with --force). Writes <results_dir>/<name>.{md,json} and plots. See
configs/studies/multi30k.yaml."""


def add_commands(sub: Any) -> None:
    """Add `study` to the CLI's subparsers."""
    s = sub.add_parser(
        "study", help="the study harness: supernet fidelity, retraining cost, Pareto fronts", description=HELP
    )
    s.add_argument("config", help="study config (YAML), e.g. configs/studies/multi30k.yaml")
    s.add_argument("--data", help="corpus folder of every run (same as data.dir=... in the study's overrides)")
    s.add_argument(
        "--only",
        nargs="+",
        choices=("fidelity", "retrain", "pareto", "prepare", "report"),
        help="run only these parts (prepare: the vocabulary and arch set; report: rebuild the report from the "
        "finished pieces, also while another call runs the study); default: all",
    )
    setting(
        s, "--seeds", "train.seed", nargs="+", default=None, help="run only these of the study's seeds (default: all)"
    )
    s.add_argument(
        "--dry-run", action="store_true", help="print the plan (pieces, status, steps, estimated time) and exit"
    )
    s.add_argument(
        "--force",
        action="store_true",
        help="redo pieces made from other inputs instead of refusing them (and start unfinished ones over)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(handler=study_command)


def study_command(args: argparse.Namespace) -> int:
    from mosnas.errors import ConfigError
    from mosnas.study.config import load_study
    from mosnas.study.plan import PARTS, describe, plan
    from mosnas.study.report import write_report
    from mosnas.study.work import Study
    from mosnas.workspace.lock import lock_run

    cfg = load_study(args.config, args.data)
    seeds = tuple(args.seeds or cfg.seeds)
    unknown = sorted(set(seeds) - set(cfg.seeds))
    if unknown:
        raise ConfigError(f"--seeds {' '.join(map(str, unknown))}: not among the study's seeds {list(cfg.seeds)}")
    only = tuple(args.only or PARTS)
    if "report" in only and len(only) > 1 or "prepare" in only and len(only) > 1:
        raise ConfigError("--only report and --only prepare go alone")
    study = Study(cfg, force=args.force, progress=not args.quiet)
    pieces = [] if only == ("report",) else plan(study, only, seeds)
    if args.dry_run:
        print(describe(study, pieces))
        return 0
    study.records.refuse_stale(pieces)  # one line, before any work
    # one writer per seed (processes on other seeds may share the work dir) and for the shared pieces; --only
    # report reads the pieces and writes only the report, so it runs beside a study that holds its seeds
    shared = any(p.seed is None and study.records.status(p)[0] != "done" for p in pieces)
    names = [] if only == ("report",) else [f"s{s}" for s in seeds] + (["shared"] if shared else [])
    for name in names:
        (study.dir.root / "locks" / name).mkdir(parents=True, exist_ok=True)
        lock_run(study.dir.root / "locks" / name)
    t0 = time.perf_counter()
    for piece in pieces:
        study.records.run(piece)
    _log(study, round(time.perf_counter() - t0, 1))
    paths = write_report(study, args.config)
    print(paths["md"].read_text(encoding="utf-8"))
    print(f"study {cfg.name}: report in {', '.join(str(p) for p in paths.values())}")
    return 0


def _log(study: Any, wall_s: float) -> None:
    """Append this invocation (its command line, date and wall time) to the study's commands.jsonl."""
    from mosnas.environment import command_line

    record = {
        "command": command_line(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": wall_s,
    }
    with open(study.dir.commands, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
