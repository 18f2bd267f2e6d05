"""The study config: its own small YAML schema (frozen dataclasses, declared ranges, defaults) that names a base
run config and everything a study varies or fixes. Paths in the file are relative to its folder; defaults are
relative to the mosnas project. Every run config the study will train is built and checked when it loads."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mosnas.config import Config, load_config
from mosnas.config.settings import SEED, build, check_declared, num, one_of, plain, read_yaml
from mosnas.engine.run_folder import check_inputs
from mosnas.errors import ConfigError, MosnasError
from mosnas.workspace.paths import PROJECT, absolute

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# keys the study sets itself (every run) or keeps identical across variants (data, space, steps, seeds, metrics)
STUDY_KEYS = ("name", "out_dir", "train.seed", "train.max_steps", "train.max_minutes", "search.seed")
SAME_FOR_ALL = ("family", "data.", "supernet.space", "eval.", "decode.", "search.", "latency.", "finetune.")


@dataclass(frozen=True)
class ArchSet:
    count: int = num(8, ge=3)  # archs of the fixed set, the smallest and the largest included
    # stratified: spread evenly over the parameter count | random: seeded uniform samples (HAT's protocol)
    method: str = one_of("stratified", ("stratified", "random"))
    seed: int = num(1, **SEED)  # seeds the random archs the set is drawn from
    pool: int = num(2000, gt=0)  # random archs a stratified set is chosen from


@dataclass(frozen=True)
class Evaluation:
    select_split: str = "val"  # validation split: supernet and scratch validation loss, search fitness, checks
    select_sentences: int = num(300, ge=0)  # seeded sample of the selection split for the loss (0: all)
    bleu_split: str = "test_2016_flickr"  # the split BLEU is reported on
    bleu_sentences: int = num(0, ge=0)  # seeded sample of the BLEU split (0: all)
    seed: int = num(1, **SEED)  # seeds the validation sample (the same for every run)
    resamples: int = num(1000, gt=0)  # bootstrap resamples of the confidence intervals (95%)


@dataclass(frozen=True)
class Regret:
    # budgets: archs up to smallest + f x (largest - smallest) parameters of the exported model
    params_fractions: tuple[float, ...] = num((0.33, 0.66, 1.0), gt=0, le=1)


@dataclass(frozen=True)
class Retrain:
    params_fraction: float = num(0.5, gt=0, le=1)  # the search's parameter budget (as regret's fractions)
    max_steps: int = num(400, gt=0)  # fine-tuning steps of the searched subnet at most
    check_every: int = num(50, gt=0)  # steps between validation BLEU checks
    valid_bleu: int = num(200, gt=0)  # seeded sample of selection sentences the checks translate
    max_checks: int = num(20, gt=0)  # validations of the compute-matched control at most
    seeds: tuple[int, ...] = num((), **SEED)  # the study's seeds it runs on (empty: all)


@dataclass(frozen=True)
class Pareto:
    latency_fractions: tuple[float, ...] = num((0.25, 0.5, 0.75), gt=0, le=1)  # at least 3 latency budgets
    finetune_steps: int = num(100, ge=0)  # the same short fine-tune of every winner (0: none)
    seeds: tuple[int, ...] = num((), **SEED)  # the study's seeds it runs on (empty: all)


@dataclass(frozen=True)
class Estimate:
    train_gflops: float = num(120.0, gt=0)  # effective training throughput of a supernet (with `launch`: all GPUs)
    dense_gflops: float = num(0.0, ge=0)  # of an arch trained in the study process (0: train_gflops)
    decode_sentences_per_s: float = num(20.0, gt=0)  # beam-search translation speed assumed by the estimates


@dataclass(frozen=True)
class StudyConfig:
    name: str = "study"  # results are <results_dir>/<name>.{md,json} and <name>_*.png
    base: str = ""  # the base run config (a normal mosnas config), relative to the study file
    overrides: tuple[str, ...] = ()  # key=value overrides of every run
    launch: str = ""  # command prefix that trains supernets, e.g. 'torchrun --nproc_per_node=8' ("": in process)
    # name -> overrides of the base config, e.g. {shared: [supernet.generator=shared]}
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    seeds: tuple[int, ...] = num((1, 2, 3), **SEED)  # train.seed (and search.seed) of every run
    supernet_steps: int = num(1000, gt=0)  # training steps of every supernet
    scratch_steps: int = num(0, ge=0)  # steps of each arch trained alone from scratch (0: supernet_steps)
    grad_conflict_every: int = num(0, ge=0)  # train.grad_conflict_every of the supernets (0: not measured)
    # train.update_freq of the archs trained in the study process (scratch, fine-tune, control); 0: the base's.
    # With `launch` on N GPUs set it to N x update_freq: an update then sees as many tokens as a supernet's
    dense_update_freq: int = num(0, ge=0)
    work_dir: str = ""  # the runs and piece records (default: benchmarks/work/<name>, ignored by git)
    results_dir: str = ""  # default: benchmarks/results
    archs: ArchSet = field(default_factory=ArchSet)
    eval: Evaluation = field(default_factory=Evaluation)
    regret: Regret = field(default_factory=Regret)
    retrain: Retrain = field(default_factory=Retrain)
    pareto: Pareto = field(default_factory=Pareto)
    estimate: Estimate = field(default_factory=Estimate)

    @property
    def steps_scratch(self) -> int:
        return self.scratch_steps or self.supernet_steps

    def variant(self, name: str) -> tuple[str, ...]:
        return dict(self.variants)[name]

    def seeds_of(self, part: str) -> tuple[int, ...]:
        """The seeds a part runs on: retrain's and pareto's own lists, or all."""
        own = getattr(self, part).seeds if part in ("retrain", "pareto") else ()
        return own or self.seeds

    def to_dict(self) -> dict[str, Any]:
        out = plain(dataclasses.asdict(self))
        out["variants"] = {k: list(v) for k, v in self.variants}
        return out


def _variants(raw: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("study: variants must be a mapping of names to override lists, e.g. {shared: [...]}")
    out = []
    for name, overrides in raw.items():
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(f"study: variant name {name!r} must be letters, digits, '_', '-' or '.'")
        items = [] if overrides is None else [overrides] if isinstance(overrides, str) else overrides
        if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
            raise ConfigError(f"study: variant {name}: expected a list of key=value overrides, got {overrides!r}")
        out.append((name, tuple(items)))
    return tuple(out)


def _check_overrides(where: str, overrides: tuple[str, ...], refused: tuple[str, ...], why: str) -> None:
    """Refuse an override of a key the study sets itself or keeps the same for every variant."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if any(key == p or (p.endswith(".") and key.startswith(p)) for p in refused):
            raise ConfigError(f"study: {where} may not set {key}: {why}")


def _check(study: StudyConfig) -> None:
    """Rules across settings; the run configs themselves are checked by `run_configs`."""
    if not study.base:
        raise ConfigError("study: base (the run config every variant starts from) is required")
    if not Path(study.base).is_file():
        raise ConfigError(f"study: base config not found: {study.base}")
    if not NAME.fullmatch(study.name):
        raise ConfigError(f"study: name {study.name!r} must be letters, digits, '_', '-' or '.'")
    if not study.seeds or len(set(study.seeds)) != len(study.seeds):
        raise ConfigError(f"study: seeds must be a non-empty list of distinct seeds, got {list(study.seeds)}")
    for part in ("retrain", "pareto"):
        extra = sorted(set(getattr(study, part).seeds) - set(study.seeds))
        if extra:
            raise ConfigError(f"study: {part}.seeds {extra} are not among the study's seeds {list(study.seeds)}")
    if len(study.pareto.latency_fractions) < 3:
        raise ConfigError("study: pareto.latency_fractions needs at least 3 budgets to draw a front")
    if not study.regret.params_fractions:
        raise ConfigError("study: regret.params_fractions needs at least one budget")
    if study.retrain.check_every > study.retrain.max_steps:
        raise ConfigError("study: retrain.check_every must be <= retrain.max_steps")
    _check_overrides("overrides", study.overrides, STUDY_KEYS, "the study sets it (supernet_steps, seeds)")
    same = "every variant has the same data, space, evaluation and stages (set it in the base config or overrides)"
    for name, overrides in study.variants:
        _check_overrides(f"variant {name}", overrides, STUDY_KEYS + SAME_FOR_ALL, same)


def load_study(path: str | Path, data: str | None = None) -> StudyConfig:
    """The validated study config of a YAML file (ConfigError, one line, for anything wrong in it or in the run
    configs it makes: unknown keys, values out of range, a missing base config, split or space); `data` (a
    corpus folder, relative to the working directory) is `data.dir` of every run."""
    raw = read_yaml(path)
    folder = Path(path).resolve().parent
    variants = _variants(raw.pop("variants", None))
    study = build(StudyConfig, raw, "")
    check_declared(study, "")
    name = study.name
    study = replace(
        study,
        variants=variants,
        base=absolute(study.base, folder) if study.base else "",
        work_dir=absolute(study.work_dir, folder) if study.work_dir else str(PROJECT / "benchmarks" / "work" / name),
        results_dir=absolute(study.results_dir, folder)
        if study.results_dir
        else str(PROJECT / "benchmarks" / "results"),
    )
    if data:
        study = replace(study, overrides=(*study.overrides, f"data.dir={Path(data).resolve()}"))
    _check(study)
    run_configs(study)
    return study


def run_overrides(study: StudyConfig, variant: str | None, seed: int) -> list[str]:
    """The overrides of the base config for one run: the study's, the variant's (none for an arch trained
    alone), then what the study fixes for every run (seed, steps, splits, evaluation samples)."""
    ev = study.eval
    fixed = [
        f"train.seed={seed}",
        f"search.seed={seed}",
        f"train.max_steps={study.supernet_steps}",
        "train.max_minutes=0",
        f"data.valid={ev.select_split}",
        f"eval.split={ev.bleu_split}",
        f"eval.limit={ev.bleu_sentences}",
        f"search.valid_sentences={ev.select_sentences}",
        "search.random_baseline=false",
    ]
    if variant is not None and study.grad_conflict_every:
        fixed.append(f"train.grad_conflict_every={study.grad_conflict_every}")
    return [*study.overrides, *(study.variant(variant) if variant is not None else ()), *fixed]


def run_config(study: StudyConfig, variant: str | None, seed: int, name: str, out_dir: Path, *extra: str) -> Config:
    """The run config of one supernet (or, with variant None, the recipe of an arch trained alone)."""
    overrides = run_overrides(study, variant, seed) + [f"name={name}", f"out_dir={out_dir}", *extra]
    return load_config(study.base, overrides)


def run_configs(study: StudyConfig) -> None:
    """Build and check every variant's run config (first seed) and the files it reads, before any work."""
    for variant in [None, *(name for name, _ in study.variants)]:
        where = "the base config" if variant is None else f"variant {variant}"
        try:
            cfg = run_config(study, variant, study.seeds[0], "check", Path(study.work_dir))
            if cfg.family != "mt":
                raise ConfigError(f"family {cfg.family}: the study scores BLEU, so it needs family mt")
            check_inputs(cfg)
        except MosnasError as e:
            raise ConfigError(f"study: {where}: {e}") from None
