"""Reading the files mosnas is handed (weights, records), so that a damaged, truncated or foreign file is one
line naming the file and what is wrong (CheckpointError: exit 2 at the command line), never a traceback."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

from mosnas.errors import CheckpointError, MosnasError

# What reading a damaged text file can raise: an OS error (gzip's BadGzipFile among them), a truncated gzip stream
# (EOFError), damaged deflate data (zlib.error), bytes that are not UTF-8.
UNREADABLE = (OSError, EOFError, zlib.error, UnicodeDecodeError)


def reason(e: Exception) -> str:
    """The first line of an exception's message (its type when it has none)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def read_text_file(path: str | Path, what: str = "file", error: type[MosnasError] = CheckpointError) -> str:
    """The text of a UTF-8 file, gunzipped when its name ends in .gz. `error` (one line naming the file) when it is
    missing, truncated, damaged or not UTF-8 text."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except UNREADABLE as e:
        raise error(f"{path} cannot be read as {what} ({reason(e)})") from None


def _unreadable(path: Path, e: Exception, error: type[MosnasError] = CheckpointError) -> MosnasError:
    return error(f"{path} is not a readable safetensors file ({reason(e)})")


def load_tensors(path: str | Path, what: str = "weights", error: type[MosnasError] = CheckpointError) -> dict[str, Any]:
    """The tensors of a safetensors file. `error` (CheckpointError unless given) when it is missing, truncated, or
    not safetensors."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError (a Rust error type) besides OSError
        raise _unreadable(path, e, error) from None


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


def read_json_file(path: str | Path, what: str = "record", error: type[MosnasError] = CheckpointError) -> Any:
    """A JSON file's content. `error` (CheckpointError unless given) when it is missing, unreadable or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UNREADABLE as e:
        raise error(f"{path} cannot be read ({reason(e)})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON (line {e.lineno}: {e.msg})") from None
