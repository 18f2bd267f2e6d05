"""`mosnas config [SECTION] [--markdown]`: every config key with its type, default, valid values and meaning
(the reference generated from the config classes: mosnas.config.reference)."""

from __future__ import annotations

import argparse
from typing import Any

from mosnas.config.reference import markdown, text


def _command(args: argparse.Namespace) -> int:
    print(markdown(args.section) if args.markdown else text(args.section), end="")
    return 0


def add_commands(sub: Any) -> None:
    """`mosnas config [SECTION] [--markdown]`."""
    c = sub.add_parser("config", help="list every config key: type, default, valid values and meaning")
    c.add_argument("section", nargs="?", help="only this section (top, data, supernet, train, ...)")
    c.add_argument("--markdown", action="store_true", help="as the Markdown table of docs/config.md")
    c.set_defaults(handler=_command)
