"""Atomic, checksummed checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a folder `ckpt-STEP/` with `model.safetensors`, `optimizer.safetensors` and
`state.json` (step, data position, scheduler, RNG states, config, space and the files' SHA-256).
It is written under a temporary name, fsynced and renamed, so a kill never leaves a half
checkpoint under a real name. Nothing is unpickled on load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from mosnas.errors import CheckpointError
from mosnas.workspace.paths import file_sha256

FORMAT = "mosnas-checkpoint-1"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split an optimizer state dict into flat tensors and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(rest["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    return tensors, {"python": [version, list(internal), gauss]}


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    state: dict[str, Any],
    keep_last: int,
    extra: dict[str, Tensor] | None = None,
) -> Path:
    """Write `run_dir/checkpoints/ckpt-STEP` atomically and keep only the newest `keep_last`; `extra` tensors
    (e.g. a task's own trained parameters, named `task.*`) are stored beside the optimizer's."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:08d}"
    tmp = root / f".tmp-ckpt-{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    opt_tensors, opt_rest = optimizer_tensors(opt)
    rng_tensors, rng_meta = rng_state()
    model_sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(model_sd, str(tmp / "model.safetensors"))
    extra = {k: v.detach().cpu().contiguous() for k, v in (extra or {}).items()}
    save_file({**opt_tensors, **rng_tensors, **extra}, str(tmp / "optimizer.safetensors"))
    meta = {
        "format": FORMAT,
        "step": step,
        **state,
        "optimizer": opt_rest,
        "rng": rng_meta,
        "sha256": {n: file_sha256(tmp / n) for n in ("model.safetensors", "optimizer.safetensors")},
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        _fsync(tmp / name)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync(root)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder named `ckpt-NNNNNNNN`."""
    return int(path.name.split("-")[1])


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("ckpt-*") if p.is_dir())


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
    """(state, model tensors, optimizer+rng tensors) after format and checksum checks."""
    state_file = path / "state.json"
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}): not loaded") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mosnas checkpoint (format {meta.get('format')!r})")
    for name, digest in meta["sha256"].items():
        if not (path / name).is_file() or file_sha256(path / name) != digest:
            raise CheckpointError(f"checkpoint {path}/{name} is truncated or corrupted (checksum mismatch)")
    return meta, load_file(str(path / "model.safetensors")), load_file(str(path / "optimizer.safetensors"))
