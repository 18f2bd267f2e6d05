"""Deprecated alias: `python -m mosnas.autodistil ARGS` runs `mosnas autodistil ARGS` (the AutoDistil baseline
now lives in mosnas.pipeline.autodistil, its command in mosnas.cli.autodistil); kept so that documented commands
of mosnas 0.1 keep working, with a one-line warning."""

from __future__ import annotations

import sys
import warnings
from typing import Any

MESSAGE = "python -m mosnas.autodistil is deprecated; use `mosnas autodistil` (same arguments)"


def main(argv: list[str]) -> int:
    """Warn, then run `mosnas autodistil` with `argv`."""
    print(f"mosnas: warning: {MESSAGE}", file=sys.stderr)
    from mosnas.cli.main import main as cli_main

    return cli_main(["autodistil", *argv])


def __getattr__(name: str) -> Any:  # the 0.1 Python API (run_autodistil, sub_run, short_name)
    from mosnas.pipeline import autodistil

    value = getattr(autodistil, name)
    warnings.warn(f"mosnas.autodistil.{name} moved to mosnas.pipeline.autodistil.{name}", DeprecationWarning, 2)
    return value


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
