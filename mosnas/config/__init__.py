"""Run configuration: YAML plus dotted `key=value` overrides -> one validated, frozen `Config`, built once.

`from mosnas.config import Config, load_config` is the face; the folder holds the engine's sections
(sections.py), the BERT family's section (bert.py), NAS-BERT's (nasbert.py), the root `Config` with its loading
(schema.py), the typed settings machinery (settings.py) and the generated reference of every key (reference.py)."""

from mosnas.config.bert import BertConfig
from mosnas.config.nasbert import NasBertConfig
from mosnas.config.schema import Config, config_from_dict, load_config, parse_setting, setting_default
from mosnas.config.sections import (
    BLEU_TOKENIZERS,
    EXPERT_INITS,
    GENERATORS,
    PRECISIONS,
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
from mosnas.config.settings import parse_overrides

__all__ = [
    "BLEU_TOKENIZERS",
    "EXPERT_INITS",
    "GENERATORS",
    "PRECISIONS",
    "BertConfig",
    "Config",
    "DataConfig",
    "DecodeConfig",
    "EvalConfig",
    "FinetuneConfig",
    "GlueConfig",
    "NasBertConfig",
    "LatencyConfig",
    "SearchConfig",
    "SupernetConfig",
    "TrainConfig",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "parse_setting",
    "setting_default",
]
