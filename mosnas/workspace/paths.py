"""Where mosnas looks for the files a config names, so that no path depends on the current directory.

The rules (one place, applied when a config is built):
- a path written in a config file is relative to that file's folder (`configs/tiny.yaml` says
  `space: spaces/tiny.yaml` and `dir: ../../shared/data/multi30k`);
- a path given on the command line (`--data DIR`, `data.dir=DIR`) is relative to the working directory,
  as every command-line path is;
- a default (`data.dir`'s bundled Multi30k, `supernet.space`) is relative to the mosnas project: the
  folder that holds the installed `mosnas` package (the repository root of a checkout or editable install);
- a run folder's saved `config.yaml` holds absolute paths; one written before this rule (relative paths)
  is read relative to the project, the folder mosnas was meant to be run from.
The run's saved config then holds every path absolute: later commands on the run (latency, search, export,
finetune, evaluate) read the same files from any directory."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from mosnas.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]  # the folder holding the mosnas package (the repository root)
# (section, key) of every setting that names a file or folder
PATH_SETTINGS = (
    ("data", "dir"),
    ("data", "tokenizer"),
    ("supernet", "space"),
    ("supernet", "pretrained"),
    ("train", "fixed_arch"),
    ("bert", "teacher"),
    ("bert", "eval_text"),
    ("glue", "data"),
    ("glue", "kd_teacher"),
)
HOW_TO_POINT = "point mosnas at a corpus with --data DIR or data.dir=DIR"


def _names_a_path(key: str, value: Any) -> bool:
    """Whether a setting's value is a path to make absolute (`~` expanded): '' means none; train.fixed_arch may
    be 'largest', 'smallest' or an arch as a JSON string."""
    if not isinstance(value, str) or not value.strip():
        return False
    return not (key == "fixed_arch" and (value in ("largest", "smallest") or value.lstrip().startswith("{")))


def absolute(value: str, base: str | Path) -> str:
    """`value` (a path, `~` expanded) made absolute against the folder `base`, normalized (no symlinks resolved)."""
    return os.path.normpath(os.path.join(os.fspath(base), os.path.expanduser(value)))


def resolve_raw(raw: dict[str, Any], base: str | Path, fallback: str | Path | None = None) -> dict[str, Any]:
    """The raw (nested, as read) config `raw` with its relative path settings made absolute against `base`.

    With `fallback` (the project, for a config file written for the old rule, relative to the repository
    root): a path that does not exist against `base` but does against `fallback` is taken from there, with a
    one-line warning on stderr asking to write it relative to the config file."""
    out = dict(raw)
    for section, key in PATH_SETTINGS:
        node = out.get(section)
        if not isinstance(node, dict) or not _names_a_path(key, node.get(key)):
            continue
        value = node[key]
        path = absolute(value, base)
        if fallback is not None and not os.path.exists(path) and os.path.exists(absolute(value, fallback)):
            path = absolute(value, fallback)
            print(
                f"mosnas: warning: {section}.{key}: {value} is not in {base} (the config file's folder); using "
                f"{path} (relative to the mosnas project, the old rule): write it relative to the config file",
                file=sys.stderr,
            )
        out[section] = {**node, key: path}
    return out


def resolve_config(cfg: Any, base: str | Path = PROJECT) -> Any:
    """A built config (a dataclass with the sections of PATH_SETTINGS) with every relative path setting left
    (a default, or a run config saved before paths were stored absolute) made absolute against `base`."""
    for section, key in PATH_SETTINGS:
        node = getattr(cfg, section, None)
        value = getattr(node, key, None)
        if node is not None and _names_a_path(key, value):
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(node, **{key: absolute(value, base)})})
    return cfg


def require_dir(path: str | Path, what: str, source: str, how: str = HOW_TO_POINT) -> Path:
    """`path` when it is a folder; else ConfigError: one line saying where mosnas looked (`path`, absolute),
    why there (`source`, e.g. 'data.dir from configs/tiny.yaml') and how to point it elsewhere (`how`)."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{what} not found: looked in {os.path.abspath(folder)} ({source}); {how}")
    return folder


def file_sha256(path: str | Path) -> str:
    """The SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
