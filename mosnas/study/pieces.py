"""Pieces: the resumable units of a study. A piece names its inputs (settings, seed, steps, the inputs of the
pieces it reads) and its work; when it finishes, its record (inputs, result, wall time) is written atomically
to `<work>/pieces/<kind>/<key>.json`. A piece whose record holds the same inputs is skipped; one whose record
holds other inputs is refused with one line (or redone with --force), so results never mix two recipes."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mosnas.errors import ConfigError
from mosnas.workspace.records import changes, made_from, read_json, write_json


def inputs_sha(inputs: dict[str, Any]) -> str:
    """The SHA-256 (16 hex digits) of a piece's inputs as JSON: the 'config hash' its record carries."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Piece:
    """One resumable unit: `kind` (supernet, scratch, eval, retrain, pareto, ...), `key` (unique in its kind,
    e.g. 'neuron/s1'), the `seed` it carries, its `inputs` (JSON-able) and its `work` (returns the result)."""

    kind: str
    key: str
    seed: int | None
    inputs: dict[str, Any]
    work: Callable[[], dict[str, Any]]
    steps: int = 0  # training steps it will run (the plan's estimate)
    estimate_s: float = 0.0  # rough seconds (the plan's estimate)
    after: tuple[str, ...] = field(default_factory=tuple)  # names of the pieces it reads

    @property
    def name(self) -> str:
        return f"{self.kind} {self.key}"


class Records:
    """The records of a study's pieces (its `pieces/` folder): status, skip, refuse or redo, and run."""

    def __init__(self, root: Path, force: bool = False):
        self.root, self.force = Path(root), force

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / (key.replace("/", "--") + ".json")

    def record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record of a finished piece (None when there is none or it is unreadable)."""
        path = self.path(kind, key)
        try:
            return read_json(path) if path.is_file() else None
        except (OSError, ValueError):
            return None

    def status(self, piece: Piece) -> tuple[str, str]:
        """('done' | 'to do' | 'stale', why): stale when its record holds other inputs."""
        rec = self.record(piece.kind, piece.key)
        if rec is None:
            return "to do", ""
        new = made_from(**piece.inputs)
        if rec.get("inputs") == new:
            return "done", ""
        found = changes(rec.get("inputs") or {}, new)
        more = f", +{len(found) - 2} more" if len(found) > 2 else ""
        return "stale", "; ".join(found[:2]) + more

    def refuse_stale(self, pieces: list[Piece]) -> None:
        """Raise ConfigError (one line) for the first piece made from other inputs, unless --force."""
        stale = [(p, why) for p in pieces for status, why in [self.status(p)] if status == "stale"]
        if stale and not self.force:
            piece, why = stale[0]
            others = f" (and {len(stale) - 1} more pieces)" if len(stale) > 1 else ""
            raise ConfigError(
                f"study piece {piece.name} was made from other inputs ({why}){others}; "
                "pass --force to redo it, or restore the study config"
            )

    def run(self, piece: Piece) -> dict[str, Any]:
        """The piece's result: its record's when done with the same inputs, else from its work (a stale piece
        is refused unless --force); the record is written last, so a stopped piece is simply redone."""
        status, why = self.status(piece)
        if status == "done":
            return self.record(piece.kind, piece.key)["result"]
        self.refuse_stale([piece])
        self._say(f"== study {piece.name}: {'redo (' + why + ')' if status == 'stale' else 'run'}")
        t0 = time.perf_counter()
        result = piece.work()
        wall = round(time.perf_counter() - t0, 1)
        record = {
            "kind": piece.kind,
            "key": piece.key,
            "seed": piece.seed,
            "inputs": made_from(**piece.inputs),
            "inputs_sha": inputs_sha(made_from(**piece.inputs)),
            "wall_s": wall,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "result": made_from(**result),
        }
        write_json(self.path(piece.kind, piece.key), record)
        self._say(f"   {piece.name}: done in {wall / 60:.1f} min")
        return record["result"]

    def all(self) -> list[dict[str, Any]]:
        """Every record of the folder (any kind), in file order."""
        out = []
        for path in sorted(self.root.glob("*/*.json")):
            try:
                out.append(read_json(path))
            except (OSError, ValueError):
                continue
        return out

    @staticmethod
    def _say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)  # the study's log: said even with --quiet (no progress bars)
