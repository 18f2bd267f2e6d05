"""`mosnas autodistil CONFIG SPACE [SPACE ...] [key=value ...]`: AutoDistil's K sub-space supernets, one ordinary
run of CONFIG each, and every parameter budget searched in the sub-space that holds it (mosnas.pipeline.autodistil)."""

from __future__ import annotations

import argparse
from typing import Any


def _command(args: argparse.Namespace) -> int:
    from mosnas.config import load_config

    spaces = [a for a in args.spaces if "=" not in a]
    overrides = [a for a in args.spaces if "=" in a]
    if not spaces:
        args.parser.error("give at least one sub-space file after CONFIG")
    cfg = load_config(args.config, overrides)  # checked before the training code loads
    from mosnas.pipeline.autodistil import run_autodistil

    run_autodistil(cfg, spaces, progress=not args.quiet)
    print(f"results: {cfg.run_dir / 'summary.md'}")
    return 0


def add_commands(sub: Any) -> None:
    """`mosnas autodistil CONFIG SPACE [SPACE ...] [key=value ...]`."""
    a = sub.add_parser(
        "autodistil",
        help="AutoDistil: one shared supernet per sub-space, each parameter budget searched where it fits",
        description="Train one supernet of CONFIG per sub-space file (runs/<name>-<sub-space>, ordinary runs that "
        "continue when stopped), route search.params_budgets to the sub-space that holds each, and write the "
        "combined table to runs/<name>/summary.md and results.json. See configs/bert_autodistil.yaml.",
    )
    a.add_argument("config", help="run config (YAML), e.g. configs/bert_autodistil.yaml")
    a.add_argument("spaces", nargs="+", metavar="SPACE", help="sub-space files, then any key=value overrides")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(handler=_command, parser=a)
