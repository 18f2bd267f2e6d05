"""`mosnas report RUN`: rebuild a run's summary, results and plots from what is on disk (mosnas.pipeline.rebuild),
including work done by hand since the run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mosnas.errors import ConfigError


def _command(args: argparse.Namespace) -> int:
    from mosnas.pipeline.rebuild import rebuild
    from mosnas.workspace.lock import lock_run

    if not Path(args.run).is_dir():
        raise ConfigError(f"run folder not found: {args.run}")
    lock_run(args.run)
    results = rebuild(args.run)
    root = Path(args.run)
    print((root / "summary.md").read_text(encoding="utf-8"))
    print(f"rebuilt {root / 'summary.md'}, {root / 'results.json'} ({len(results['results'])} subnets), plots")
    return 0


def add_commands(sub: Any) -> None:
    """`mosnas report RUN`."""
    r = sub.add_parser("report", help="rebuild a run's summary, results and plots, including work done by hand")
    r.add_argument("run", help="run folder (runs/NAME)")
    r.set_defaults(handler=_command)
