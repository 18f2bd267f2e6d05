"""One writer per run folder: an advisory lock on `RUN/.lock`, held until the process ends.

Two commands writing one run folder at once interleave its training log and checkpoints, so every command
that writes into a run takes the folder's lock first; a second writer gets a one-line error naming the
holder (its pid, host and command line). The lock is `fcntl.flock`: the kernel drops it when the holder
exits, however it exits, so a killed run never leaves a stale lock. Under torchrun only rank 0 writes the
folder and only it locks. Where `fcntl` does not exist (Windows) there is no lock."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from mosnas.errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS
    fcntl = None

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # folder -> open descriptor of its lock file, for the life of the process


def holder(root: str | Path) -> str:
    """What the lock file of `root` says about its (last) holder; '' if none."""
    try:
        return (Path(root) / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def lock_run(root: str | Path) -> bool:
    """Take the write lock of run folder `root` (which must exist) for this process; True if taken now,
    False if this process already holds it (or there is nothing to lock: not rank 0, no fcntl).

    Raises ConfigError (one line, naming the holder) when another process holds it."""
    root = Path(root).resolve()
    if root in _held or fcntl is None or os.environ.get("RANK", "0") != "0":
        return False
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        who = holder(root) or "another process"
        raise ConfigError(
            f"{root} is in use by {who}; wait for it to finish (or stop it) — a run folder has one writer"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: mosnas {' '.join(sys.argv[1:])}\n".encode(), 0)
    _held[root] = fd
    return True


def unlock_run(root: str | Path) -> None:
    """Release the lock of `root` if this process holds it (the kernel also releases it at exit)."""
    fd = _held.pop(Path(root).resolve(), None)
    if fd is not None:
        os.close(fd)
