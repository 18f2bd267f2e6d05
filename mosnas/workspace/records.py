"""What a stage's output was made from, and whether it still holds: one mechanism for every stage.

Each output JSON of a stage (latency/report.json, search/<budget>.json, export/<name>/export.json,
eval.<split>.json, latency.json, ...) carries `made_from`: the inputs it was made from (the config
sections it read, the checkpoint, the `made_from` of the upstream files it read). An output is reused
only when its stored record equals the one its stage would make now; otherwise it is redone (or refused)
and the reason is one line naming what changed. The JSON carrying `made_from` is written last and
atomically, so a stage that fails leaves nothing a later stage trusts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically: a stopped run keeps the previous file, never half of a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, obj: Any, indent: int = 1) -> None:
    """Write JSON atomically (see write_text)."""
    write_text(path, json.dumps(obj, indent=indent))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def made_from(**parts: Any) -> dict[str, Any]:
    """A JSON-able record of a stage's inputs (tuples become lists, as they come back from a file)."""
    return json.loads(json.dumps(parts))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def _short(v: Any) -> str:
    text = json.dumps(v) if not isinstance(v, str) else v
    return text if len(text) <= 24 else text[:20] + "..."


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'key changed A -> B' for every input that differs (dotted keys, e.g. search.max_params)."""
    a, b = _flatten(old), _flatten(new)
    keys = [k for k in b if k not in a or a[k] != b[k]] + [k for k in a if k not in b]
    return [f"{k} changed {_short(a.get(k, '-'))} -> {_short(b.get(k, '-'))}" for k in keys]


def stale(path: Path, record: dict[str, Any]) -> str | None:
    """None when `path` holds an output made from `record`, else why not ('missing', what changed)."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    try:
        stored = read_json(path)
    except (OSError, ValueError):
        return "unreadable"
    old = stored.get("made_from") if isinstance(stored, dict) else None
    if old is None:
        return "its inputs were not recorded"
    if old == record:
        return None
    found = changes(old, record)
    more = f", +{len(found) - 2} more" if len(found) > 2 else ""
    return "; ".join(found[:2]) + more if found else "inputs changed"


def fresh(path: Path, record: dict[str, Any], what: str) -> bool:
    """True when `path` may be reused; when an existing output is stale, say once that `what` is redone."""
    reason = stale(path, record)
    if reason is not None and reason != "missing":
        print(f"{what}: redone ({reason})", file=sys.stderr, flush=True)
    return reason is None
