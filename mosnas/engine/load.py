"""Loading a trained run back: the supernet of its newest checkpoint, checked against its space, with what the
family trained beside it; and building a run's supernet at its (seeded) initialization."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mosnas.config import Config, config_from_dict
from mosnas.core.space import Space
from mosnas.core.supernet import Supernet
from mosnas.engine.checkpoint import list_checkpoints, read_checkpoint
from mosnas.errors import CheckpointError
from mosnas.family import Family, family_of
from mosnas.workspace.paths import require_dir
from mosnas.workspace.run_dir import RunDir


@dataclass
class LoadedRun:
    """A trained run loaded back: its config, space, the supernet of its newest checkpoint (eval mode) and what
    the family trained beside it (`task_state`: a task module's `task.*` tensors, e.g. BERT's hidden-state
    projection; {} when there is none). Families read these, never the checkpoint files."""

    cfg: Config
    space: Space
    net: Supernet
    tokenizer: Any
    step: int
    run_dir: Path
    checkpoint: dict[str, Any]  # {"step", "model_sha256"} of the checkpoint loaded: what derived outputs record
    task_state: dict[str, torch.Tensor] = field(default_factory=dict)  # the task module's tensors, `task.` dropped

    @property
    def dir(self) -> RunDir:
        return RunDir(self.run_dir)

    @property
    def family(self) -> Family:
        return family_of(self.cfg.family)


def build_supernet(space: Space, vocab_size: int, cfg: Config) -> Supernet:
    """The run's supernet at its initialization (seeded by train.seed: resumed and loaded runs agree)."""
    torch.manual_seed(cfg.train.seed)
    family = family_of(cfg.family)
    if hasattr(family, "build_supernet"):  # a family with a supernet of its own (NAS-BERT's block chain)
        return family.build_supernet(space, vocab_size, cfg)
    return Supernet(space, vocab_size, family.supernet_config(cfg), family)


def load_model_state(
    net: Supernet, sd: dict[str, torch.Tensor], meta: dict[str, Any], space: Space, path: Path
) -> None:
    """Load a checkpoint's model tensors into `net`, refusing another space or another supernet."""
    if meta.get("space") != space.to_dict():
        raise CheckpointError(
            f"checkpoint {path} was trained on another search space "
            f"('{meta.get('space', {}).get('name')}', not '{space.name}')"
        )
    own = net.state_dict()
    bad = sorted(set(own) ^ set(sd)) or [k for k in own if own[k].shape != sd[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint {path} does not match this supernet (e.g. tensor {bad[0]})")
    net.load_state_dict(sd)


def with_data(run: LoadedRun, data: str | None) -> LoadedRun:
    """`run` reading its corpus from `data` (a `--data` option) instead of its config's data.dir; ConfigError (one
    line) when `data` is not a folder. The run folder's config is not changed."""
    if data is None:
        return run
    folder = require_dir(data, "data directory", "--data", "give the folder that holds the corpus")
    cfg = replace(run.cfg, data=replace(run.cfg.data, dir=str(folder.resolve())))
    return replace(run, cfg=cfg)


def load_run(run_dir: str | Path, device: torch.device | None = None) -> LoadedRun:
    """The trained supernet of a run folder (newest checkpoint), checked against its space."""
    run = RunDir(Path(run_dir))
    if not run.config.is_file():
        raise CheckpointError(f"{run.root} is not a mosnas run folder (no config.yaml)")
    cfg = config_from_dict(yaml.safe_load(run.config.read_text(encoding="utf-8")))
    family = family_of(cfg.family)
    space = family.load_space(run.space)
    ckpts = list_checkpoints(run.root)
    if not ckpts:
        raise CheckpointError(f"{run.root} has no checkpoint yet (train it first)")
    meta, model_sd, extra = read_checkpoint(ckpts[-1])
    tokenizer, vocab_size = family.vocab(run.root)
    net = build_supernet(space, vocab_size, cfg)
    load_model_state(net, model_sd, meta, space, ckpts[-1])
    checkpoint = {"step": meta["step"], "model_sha256": meta["sha256"]["model.safetensors"]}
    task_state = {k.removeprefix("task."): v for k, v in extra.items() if k.startswith("task.")}
    net = net.to(device or "cpu").eval()
    return LoadedRun(cfg, space, net, tokenizer, meta["step"], run.root, checkpoint, task_state)
