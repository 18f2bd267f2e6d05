"""What a run ran with: machine, package version and git commit, torch, Python, the command line, date."""

from __future__ import annotations

import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import mosnas
from mosnas.hardware import machine


def git_commit() -> str:
    """The package's git commit ('unknown' outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line() -> str:
    """The command that is running, as a shell would take it back (`mosnas run configs/x.yaml train.lr=1e-3`)."""
    prog = "mosnas" if Path(sys.argv[0]).name in ("mosnas", "__main__.py", "cli.py") else sys.argv[0]
    return shlex.join([prog, *sys.argv[1:]])


def environment() -> dict[str, Any]:
    """What a run ran with (environment.json): machine, versions, git commit, command line, cwd and date."""
    return {
        **machine(),
        "mosnas": mosnas.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),  # torch's intra-op threads when the run started (cores: see above)
        "command": command_line(),
        "cwd": str(Path.cwd()),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
