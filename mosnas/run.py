"""The run folder: every path of a run, the guards that keep two runs apart, the machine it ran on,
and loading a trained run back (the supernet of its newest checkpoint)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from mosnas.checkpoint import checkpoint_step, list_checkpoints, read_checkpoint
from mosnas.config import Config, config_from_dict
from mosnas.environment import environment
from mosnas.errors import CheckpointError, ConfigError
from mosnas.family import Family, family_of
from mosnas.hardware import Precision
from mosnas.lock import LOCK_NAME, lock_run, unlock_run
from mosnas.paths import require_dir
from mosnas.records import read_json, write_json, write_text  # noqa: F401 (the run folder's JSON, atomic)
from mosnas.space import Space
from mosnas.supernet import Supernet

# Keys that may change when a run is resumed (budgets and bookkeeping, not the model or data).
RESUMABLE_KEYS = set(
    "train.max_steps train.max_minutes train.log_every train.valid_every train.ckpt_every train.keep_last "
    "train.threads train.tensorboard train.valid_bleu decode latency search finetune eval".split()
)


@dataclass(frozen=True)
class RunDir:
    """Every path of a run folder (checkpoint.py keeps the layout inside `checkpoints/`)."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    space = property(lambda self: self.root / "space.yaml")
    environment = property(lambda self: self.root / "environment.json")
    log = property(lambda self: self.root / "train_log.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    tensorboard = property(lambda self: self.root / "tensorboard")
    latency = property(lambda self: self.root / "latency")  # samples, predictor, held-out report, plot
    results = property(lambda self: self.root / "results.json")
    summary = property(lambda self: self.root / "summary.md")
    pareto = property(lambda self: self.root / "pareto.png")
    curve = property(lambda self: self.root / "train_curve.png")  # training loss and validation NLL by step
    finetune = property(lambda self: self.root / "finetune")  # one fine-tuning run per searched subnet
    exports = property(lambda self: self.root / "export")  # one dense model folder per subnet

    def search(self, budget: str) -> Path:
        return self.root / "search" / f"{budget}.json"

    def export(self, name: str) -> Path:
        return self.exports / name

    def derived(self) -> list[Path]:
        """Everything made from the trained supernet (removed with it by --force)."""
        return [
            self.latency,
            self.root / "search",
            self.exports,
            self.finetune,
            self.results,
            self.summary,
            self.pareto,
            self.curve,
        ]


def tensorboard_writer(run: RunDir) -> Any:
    """A TensorBoard writer of the run's `tensorboard/` folder (train.tensorboard=true)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'mosnas[tb]'") from None
    return SummaryWriter(str(run.tensorboard))


def remove(path: Path) -> None:
    """Remove a file or a folder (nothing when absent)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's training log ([] before training)."""
    path = RunDir(run_dir).log
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from (and any torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text(path, "".join(x + "\n" for x in kept))


def record_precision(run_dir: Path, precision: Precision) -> None:
    """Store the precision this (part of the) run trained in, and why, in environment.json."""
    path = RunDir(run_dir).environment
    env = read_json(path) if path.is_file() else {}
    env["precision"] = precision.to_dict()
    write_json(path, env)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and not any(prefix + k == r for r in RESUMABLE_KEYS):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def check_inputs(cfg: Config) -> Space:
    """Every file a run will read exists and parses (space, fixed arch, pretrained weights, and the family's:
    corpus splits, tokenizer), checked before anything is written: a wrong path leaves no folder behind."""
    family = family_of(cfg.family)
    space = family.load_space(cfg.supernet.space)
    if cfg.train.sampling == "fixed":
        space.parse_arch(cfg.train.fixed_arch)
    family.check_inputs(cfg)
    pretrained = family.supernet_config(cfg).pretrained  # e.g. the BERT teacher's weights
    if pretrained and not Path(pretrained).is_file():
        raise ConfigError(f"supernet.pretrained: file not found: {pretrained}")
    return space


def _refuse_other_run(cfg: Config, resume: bool, force: bool) -> None:
    """Refuse a folder that holds a different run (or a trained one without --resume); --force empties it."""
    run = RunDir(cfg.run_dir)
    if run.config.is_file():
        # Through the config class, so keys added to mosnas since that run compare as their defaults.
        old = _flatten(config_from_dict(yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}).to_dict())
        new = _flatten(cfg.to_dict())
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in RESUMABLE_KEYS)
        started = run.log.exists() or run.checkpoints.exists() or any(p.exists() for p in run.derived())
        if changed and not started:  # a command that failed before training: nothing of it to keep
            for name in family_of(cfg.family).RUN_FILES:
                remove(run.root / name)
        elif force:  # the old supernet and everything made from it
            for path in (
                run.checkpoints,
                run.log,
                *run.derived(),
                *(run.root / n for n in family_of(cfg.family).RUN_FILES),
            ):
                remove(path)
        elif changed:
            raise ConfigError(
                f"{run.root} holds a different run (changed: {', '.join(changed[:4])}); "
                "choose another name or pass --force to overwrite it"
            )
        elif list_checkpoints(run.root) and not resume:
            raise ConfigError(
                f"{run.root} already holds a trained run; pass --resume to continue it or --force to start over"
            )
    elif run.root.exists() and any(p.name != LOCK_NAME for p in run.root.iterdir()) and not force:
        raise ConfigError(f"{run.root} exists and is not a mosnas run; choose another name or pass --force")


def adopt_config(cfg: Config) -> None:
    """Continue a trained run with `cfg`: refused when it is another run; its stage settings become the run's."""
    lock_run(cfg.run_dir)
    _refuse_other_run(cfg, resume=True, force=False)
    run = RunDir(cfg.run_dir)
    trained = config_from_dict(yaml.safe_load(run.config.read_text(encoding="utf-8")) or {})
    kept = replace(cfg, train=trained.train)  # no training now: the record keeps the budgets the run trained to
    run.config.write_text(yaml.safe_dump(kept.to_dict(), sort_keys=False), encoding="utf-8")


def prepare_run_dir(cfg: Config, resume: bool, force: bool) -> Path:
    """Create the run folder with its config, space and environment; refuse to mix two different runs."""
    space = check_inputs(cfg)
    run = RunDir(cfg.run_dir)
    created = not run.root.exists()
    try:
        run.root.mkdir(parents=True, exist_ok=True)
        lock_run(run.root)  # one writer per folder: before anything in it is read or written
        probe = run.root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to run directory {run.root}: {e.strerror}") from None
    try:
        _refuse_other_run(cfg, resume, force)
    except ConfigError:
        if created:  # refused before any work: leave nothing behind
            unlock_run(run.root)
            shutil.rmtree(run.root, ignore_errors=True)
        raise
    run.config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
    run.space.write_text(yaml.safe_dump(space.to_dict(), sort_keys=False), encoding="utf-8")
    write_json(run.environment, environment())
    for stale in run.checkpoints.glob(".tmp-*"):  # left by a killed save
        shutil.rmtree(stale, ignore_errors=True)
    return run.root


def needs_training(cfg: Config) -> bool:
    """False once the run reached its step or wall budget (the newest checkpoint is the final one)."""
    ckpts = list_checkpoints(cfg.run_dir)
    if not ckpts:
        return True
    # the clock of the newest checkpoint itself: the log holds it only every log_every steps
    elapsed = read_json(ckpts[-1] / "state.json").get("elapsed", 0.0)
    spent = bool(cfg.train.max_minutes) and elapsed >= cfg.train.max_minutes * 60
    return checkpoint_step(ckpts[-1]) < cfg.train.max_steps and not spent


@dataclass
class LoadedRun:
    cfg: Config
    space: Space
    net: Supernet
    tokenizer: Any
    step: int
    run_dir: Path
    checkpoint: dict[str, Any]  # {"step", "model_sha256"} of the checkpoint loaded: what derived outputs record

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
    space = Space.from_dict(yaml.safe_load(run.space.read_text(encoding="utf-8")), family.SCHEMA, str(run.space))
    ckpts = list_checkpoints(run.root)
    if not ckpts:
        raise CheckpointError(f"{run.root} has no checkpoint yet (train it first)")
    meta, model_sd, _ = read_checkpoint(ckpts[-1])
    tokenizer, vocab_size = family.vocab(run.root)
    net = build_supernet(space, vocab_size, cfg)
    load_model_state(net, model_sd, meta, space, ckpts[-1])
    checkpoint = {"step": meta["step"], "model_sha256": meta["sha256"]["model.safetensors"]}
    return LoadedRun(cfg, space, net.to(device or "cpu").eval(), tokenizer, meta["step"], run.root, checkpoint)
