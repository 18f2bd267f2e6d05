"""The run config: the frozen `Config` of every section, built once from YAML plus dotted `key=value`
overrides, validated across sections; keys of earlier mosnas versions translated on load."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosnas.config.bert import BertConfig  # the bert: section (family: bert)
from mosnas.config.nasbert import NasBertConfig  # the nasbert: section (family: nasbert)
from mosnas.config.sections import (
    FAMILIES,
    DataConfig,
    DecodeConfig,
    EvalConfig,
    FinetuneConfig,
    GlueConfig,
    LatencyConfig,
    SearchConfig,
    SupernetConfig,
    TrainConfig,
)
from mosnas.config.settings import (
    build,
    check_declared,
    check_field,
    convert,
    merge,
    one_of,
    parse_overrides,
    plain,
    read_yaml,
)
from mosnas.errors import ConfigError
from mosnas.workspace.paths import PROJECT, resolve_config, resolve_raw


@dataclass(frozen=True)
class Config:
    name: str = "run"  # run name: the run folder is out_dir/name
    out_dir: str = "runs"  # folder that holds run folders
    family: str = one_of("mt", FAMILIES)  # the model family (mt: translation); configs without it are mt
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    bert: BertConfig = field(default_factory=BertConfig)
    nasbert: NasBertConfig = field(default_factory=NasBertConfig)
    glue: GlueConfig = field(default_factory=GlueConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def validate(self) -> Config:
        """Check every setting against its declaration (range, arity, choices), then across settings."""
        check_declared(self, "")
        sn = self.supernet
        if sn.expert_init == "pretrained-first" and not sn.pretrained:
            raise ConfigError("supernet.expert_init=pretrained-first needs supernet.pretrained (a safetensors file)")
        if sn.pretrained and sn.expert_init == "independent" and sn.num_experts > 1:
            raise ConfigError(
                "supernet.expert_init=independent would redraw every expert and discard supernet.pretrained; "
                "use supernet.expert_init=copy or pretrained-first"
            )
        if self.train.grad_conflict_every and self.train.sampling != "sandwich":
            raise ConfigError("train.grad_conflict_every compares a step's archs: it needs train.sampling=sandwich")
        if self.family == "bert" and self.bert.init != "random" and sn.pretrained:
            raise ConfigError(f"bert.init={self.bert.init} loads the teacher: drop supernet.pretrained")
        if self.search.parents > self.search.population:
            raise ConfigError(
                f"search.parents={self.search.parents} must be <= search.population={self.search.population}"
            )
        self.glue.check_kd()
        lc = self.latency
        held_out = lc.num_samples - round(lc.num_samples * (1 - lc.holdout))  # as the latency stage splits them
        if min(held_out, lc.num_samples - held_out) < 2:
            raise ConfigError(
                f"latency.holdout={lc.holdout} holds out {held_out} of latency.num_samples={lc.num_samples}; "
                "both the held-out and the training part need at least 2 archs"
            )
        return self


def parse_setting(key: str, value: Any, name: str | None = None) -> Any:
    """Convert and check one value as the setting `key` (e.g. 'decode.beam') is declared, for a
    command-line option `name`; for a list setting, a single value is checked as one of its entries."""
    cls, *sections, leaf = (Config, *key.split("."))
    for section in sections:
        cls = typing.get_type_hints(cls)[section]
    f = {f.name: f for f in dataclasses.fields(cls)}[leaf]
    typ = typing.get_type_hints(cls)[leaf]
    if typing.get_origin(typ) is tuple and not isinstance(value, (list, tuple)):
        typ = typing.get_args(typ)[0]
    converted = convert(name or key, value, typ)
    check_field(name or key, f, converted)
    return converted


def setting_default(key: str) -> Any:
    """The default value of the setting `key` (e.g. 'decode.beam')."""
    node: Any = Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build the validated, frozen run config from a YAML file and `key=value` overrides (paths absolute:
    a file's relative to its folder, an override's to the working directory, a default's to the project)."""
    raw = resolve_raw(read_yaml(path), Path(path).resolve().parent, fallback=PROJECT) if path else {}
    raw = merge(raw, resolve_raw(parse_overrides(overrides or []), Path.cwd()))
    return resolve_config(build(Config, migrate(raw), "")).validate()


def config_from_dict(raw: dict[str, Any]) -> Config:
    """The validated config of a dict: typed (a saved run's config.yaml read by yaml.safe_load) or text;
    relative paths (a run saved before paths were stored absolute) are relative to the project."""
    return resolve_config(build(Config, migrate(raw), "")).validate()


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier mosnas versions, so their configs and run folders keep loading:
    `train.bf16: true|false` is `train.precision: bf16|fp32` (unless precision is given too)."""
    train = raw.get("train")
    if isinstance(train, dict) and "bf16" in train:
        train = dict(train)
        legacy = convert("train.bf16", train.pop("bf16"), bool)
        train.setdefault("precision", "bf16" if legacy else "fp32")
        raw = {**raw, "train": train}
    return raw
