"""Reading the files mosnas is handed (weights, records), so that a damaged, truncated or foreign file is one
line naming the file and what is wrong (CheckpointError: exit 2 at the command line), never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mosnas.errors import CheckpointError


def _unreadable(path: Path, e: Exception) -> CheckpointError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointError(f"{path} is not a readable safetensors file ({reason})")


def load_tensors(path: str | Path, what: str = "weights") -> dict[str, Any]:
    """The tensors of a safetensors file. CheckpointError when it is missing, truncated, or not safetensors."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (a Rust error type) besides OSError
        raise _unreadable(path, e) from None


def check_tensors(path: str | Path, what: str = "weights") -> None:
    """Raise CheckpointError unless `path` is a complete safetensors file (its header and the data it announces:
    a truncated or damaged file fails here without reading the tensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            list(f.keys())
    except Exception as e:  # safetensors' own error type, or OSError
        raise _unreadable(path, e) from None


def read_json_file(path: str | Path, what: str = "record") -> Any:
    """A JSON file's content. CheckpointError when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{what} file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
