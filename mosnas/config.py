"""Run configuration: frozen dataclasses built once from YAML plus dotted `key=value` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mosnas.errors import ConfigError

GENERATORS = ("shared", "layer", "neuron")
EXPERT_INITS = ("copy", "independent", "pretrained-first")
SAMPLINGS = ("sandwich", "uniform", "fixed")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("inverse_sqrt", "cosine")


@dataclass(frozen=True)
class DataConfig:
    dir: str = "../shared/data/multi30k"  # folder with {split}.{lang}[.gz] files, one sentence a line
    src_lang: str = "en"
    tgt_lang: str = "de"
    train: str = "train"
    valid: str = "val"
    test: str = "test_2016_flickr"
    vocab_size: int = 6000  # joint sentencepiece vocabulary of both sides
    max_tokens: int = 4096  # padded tokens (source + target side, the larger) per batch
    max_len: int = 128  # training pairs longer than this (in subwords) are dropped
    train_limit: int = 0  # use only the first N training pairs (0: all)
    valid_limit: int = 0
    tokenizer: str = ""  # an existing sentencepiece model to use instead of training one (fine-tuning)


@dataclass(frozen=True)
class SupernetConfig:
    space: str = "configs/spaces/multi30k.yaml"
    generator: str = "neuron"  # shared (HAT) | layer (layer-wise MoS) | neuron (neuron-wise MoS)
    num_experts: int = 2
    router_hidden: int = 128
    expert_init: str = "independent"  # copy | independent | pretrained-first
    pretrained: str = ""  # safetensors of a dense model (export) for copy / pretrained-first
    mos_attention: bool = False  # also mix the attention projections (default: FFN only, as the paper)
    prenorm: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    share_embeddings: bool = True  # one vocabulary table for encoder, decoder and output


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    max_steps: int = 2000
    max_minutes: float = 0.0  # wall budget; 0: none
    sampling: str = "sandwich"  # sandwich (largest + smallest + n random) | uniform (HAT) | fixed
    num_random: int = 1
    fixed_arch: str = "largest"  # with sampling=fixed: largest | smallest | path to an arch JSON
    distill: float = 0.0  # weight of in-place distillation from the largest arch (0: off)
    lr: float = 1e-3
    warmup: int = 400
    schedule: str = "inverse_sqrt"  # after warm-up: inverse_sqrt | cosine (to min_lr at max_steps, HAT's recipe)
    min_lr: float = 0.0  # the cosine schedule's floor
    update_freq: int = 1  # batches accumulated per optimizer update (fairseq's --update-freq)
    betas: tuple[float, ...] = (0.9, 0.98)
    weight_decay: float = 0.0001
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    precision: str = "auto"  # auto (bf16 only where it is fast: CUDA with bf16, CPUs with native bf16) | fp32 | bf16
    threads: int = 0  # torch intra-op threads; 0: torch's default
    log_every: int = 20
    valid_every: int = 250
    ckpt_every: int = 250
    keep_last: int = 3
    tensorboard: bool = False
    valid_bleu: int = 0  # with sampling=fixed: also BLEU on the first N validation sentences at each validation


@dataclass(frozen=True)
class DecodeConfig:
    beam: int = 5
    lenpen: float = 1.0
    max_len_a: float = 1.2  # max output length = a * source length + b
    max_len_b: int = 10
    batch_size: int = 64


@dataclass(frozen=True)
class LatencyConfig:
    num_samples: int = 200  # archs measured to train the predictor (largest and smallest included)
    holdout: float = 0.2  # fraction held out to report the predictor's accuracy
    src_len: int = 30  # HAT's protocol: one sentence of this length, beam search for tgt_len steps
    tgt_len: int = 30
    beam: int = 5
    warmup: int = 5
    repeats: int = 10
    threads: int = 1  # CPU threads while measuring (fixed, recorded with every sample)
    device: str = "auto"  # cpu | cuda | cuda:N | auto (cuda when available); recorded with every sample
    precision: str = "auto"  # dtype of the exported model while timed: auto | fp32 | bf16
    hidden: int = 128  # predictor MLP
    num_layers: int = 3
    fit_steps: int = 2000
    seed: int = 1


@dataclass(frozen=True)
class SearchConfig:
    latency_ms: tuple[float, ...] = ()  # one search per latency budget (ms, via the predictor)
    latency_fractions: tuple[
        float, ...
    ] = ()  # budgets between the smallest (0) and largest (1) arch's predicted latency
    max_params: int = 0  # extra limits on every budget (0: none)
    max_flops: int = 0
    population: int = 125
    parents: int = 25
    mutations: int = 50
    crossovers: int = 50
    mutation_prob: float = 0.3
    generations: int = 30
    valid_sentences: int = 300  # fixed validation subset for the fitness (supernet validation loss)
    random_baseline: bool = True  # also run random search with the same number of evaluations
    precision: str = "auto"  # of the fitness evaluations: auto | fp32 | bf16
    seed: int = 1


@dataclass(frozen=True)
class FinetuneConfig:
    steps: int = 0  # fine-tune each search winner this many steps (0: skip)
    lr: float = 5e-4
    warmup: int = 50
    valid_every: int = 100
    valid_bleu: int = 200  # BLEU on this many validation sentences at each validation
    precision: str = "auto"  # auto | fp32 | bf16


@dataclass(frozen=True)
class EvalConfig:
    archs: tuple[str, ...] = ("largest", "smallest")  # what `mosnas run` exports and scores
    split: str = ""  # default: data.test
    limit: int = 0  # score only the first N sentences (0: all)
    bleu_tokenize: str = ""  # sacreBLEU tokenizer; "" chooses by target language as the sacrebleu CLI does


@dataclass(frozen=True)
class Config:
    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def validate(self) -> Config:
        _choice("supernet.generator", self.supernet.generator, GENERATORS)
        _choice("supernet.expert_init", self.supernet.expert_init, EXPERT_INITS)
        _choice("train.sampling", self.train.sampling, SAMPLINGS)
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        for section in ("train", "latency", "search", "finetune"):
            _choice(f"{section}.precision", getattr(self, section).precision, PRECISIONS)
        if self.supernet.expert_init == "pretrained-first" and not self.supernet.pretrained:
            raise ConfigError("supernet.expert_init=pretrained-first needs supernet.pretrained (a safetensors file)")
        positive = {
            "supernet.num_experts": self.supernet.num_experts,
            "supernet.router_hidden": self.supernet.router_hidden,
            "data.vocab_size": self.data.vocab_size,
            "data.max_tokens": self.data.max_tokens,
            "data.max_len": self.data.max_len,
            "train.max_steps": self.train.max_steps,
            "train.lr": self.train.lr,
            "decode.beam": self.decode.beam,
            "decode.batch_size": self.decode.batch_size,
            "train.keep_last": self.train.keep_last,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be > 0, got {value}")
        if not 0.0 <= self.train.distill <= 1.0:
            raise ConfigError(f"train.distill must be in [0, 1], got {self.train.distill}")
        for v in self.search.latency_ms:
            if v <= 0:
                raise ConfigError(f"search.latency_ms budgets must be > 0 ms, got {v}")
        for v in self.search.latency_fractions:
            if not 0.0 < v <= 1.0:
                raise ConfigError(f"search.latency_fractions must be in (0, 1], got {v}")
        if not 0.0 < self.latency.holdout < 1.0:
            raise ConfigError(f"latency.holdout must be in (0, 1), got {self.latency.holdout}")
        if self.latency.num_samples < 10:
            raise ConfigError(f"latency.num_samples must be >= 10, got {self.latency.num_samples}")
        if not 0.0 <= self.supernet.dropout < 1.0:
            raise ConfigError(f"supernet.dropout must be in [0, 1), got {self.supernet.dropout}")
        return self


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}; expected one of {', '.join(allowed)}")


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(key: str, value: Any, typ: Any) -> Any:
    """Convert a YAML value to the declared field type (PyYAML reads 1e-3 as a string)."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        (item_type, *_rest) = typing.get_args(typ)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(key, v, item_type) for v in value)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in _TRUE | _FALSE:
                return str(value).strip().lower() in _TRUE
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if isinstance(value, (dict, list)) or value is None:
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported type {typ}")


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f" in section '{prefix[:-1]}'" if prefix else ""
        raise ConfigError(f"unknown config key{where}: {', '.join(prefix + u for u in unknown)}")
    kwargs = {}
    for name, value in raw.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a section (mapping), got {value!r}")
            kwargs[name] = _build(typ, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _convert(prefix + name, value, typ)
    return cls(**kwargs)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[leaf] = value


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ['train.lr=3e-4', ...] into a nested dict; values are read as YAML scalars."""
    raw: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        _set_dotted(raw, key.strip(), value)
    return raw


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with one-line errors for missing, malformed or non-mapping files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier mosnas versions, so their configs and run folders keep loading:
    `train.bf16: true|false` is `train.precision: bf16|fp32` (unless precision is given too)."""
    train = raw.get("train")
    if isinstance(train, dict) and "bf16" in train:
        train = dict(train)
        legacy = _convert("train.bf16", train.pop("bf16"), bool)
        train.setdefault("precision", "bf16" if legacy else "fp32")
        raw = {**raw, "train": train}
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build the validated, frozen run config from a YAML file and `key=value` overrides."""
    raw = read_yaml(path) if path else {}
    raw = _merge(raw, parse_overrides(overrides or []))
    return _build(Config, _migrate(raw), "").validate()


def config_from_dict(raw: dict[str, Any]) -> Config:
    return _build(Config, _migrate(raw), "").validate()
