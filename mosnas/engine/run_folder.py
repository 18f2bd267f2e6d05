"""The guards of a run folder: every input checked before anything is written, one run per folder (a different
run is refused, --force empties it, --resume continues it), the config, space and machine a run trained with,
and whether a run still has training to do. The folder's layout is mosnas.workspace.run_dir's."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mosnas.config import Config, config_from_dict
from mosnas.core.space import Space
from mosnas.engine.checkpoint import checkpoint_step, list_checkpoints
from mosnas.environment import environment
from mosnas.errors import ConfigError
from mosnas.family import family_of
from mosnas.hardware import Precision
from mosnas.workspace.lock import LOCK_NAME, lock_run, unlock_run
from mosnas.workspace.records import read_json, write_json
from mosnas.workspace.run_dir import RunDir, remove

# Keys that may change when a run is resumed (budgets and bookkeeping, not the model or data).
RESUMABLE_KEYS = set(
    "train.max_steps train.max_minutes train.log_every train.valid_every train.ckpt_every train.keep_last "
    "train.threads train.tensorboard train.valid_bleu decode latency search finetune eval glue "
    "nasbert.distill_steps nasbert.distill_minutes nasbert.distill_lr".split()  # NAS-BERT's KD of a pick
)


def tensorboard_writer(run: RunDir) -> Any:
    """A TensorBoard writer of the run's `tensorboard/` folder (train.tensorboard=true)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'mosnas[tb]'") from None
    return SummaryWriter(str(run.tensorboard))


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


def check_resumable(cfg: Config) -> None:
    """Refuse (one line, before config.yaml is rewritten) budgets a resumed run has already passed: a
    train.max_steps below the newest checkpoint's step, a train.max_minutes it has already trained for. The saved
    config always describes what the checkpoints hold."""
    ckpts = list_checkpoints(cfg.run_dir)
    if not ckpts:
        return
    step, elapsed = checkpoint_step(ckpts[-1]), read_json(ckpts[-1] / "state.json").get("elapsed", 0.0)
    tc = cfg.train
    if tc.max_steps < step:
        raise ConfigError(
            f"train.max_steps={tc.max_steps} is below step {step} of {cfg.run_dir}'s newest checkpoint: a resumed run "
            f"cannot undo training (give train.max_steps >= {step}, or --force to start over)"
        )
    if tc.max_minutes and elapsed >= tc.max_minutes * 60 and step < tc.max_steps:
        raise ConfigError(
            f"train.max_minutes={tc.max_minutes:g} is already spent by {cfg.run_dir} ({elapsed / 60:.1f} min trained): "
            "give a larger train.max_minutes to continue it, or --force to start over"
        )


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
        if resume and not force:
            check_resumable(cfg)
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
