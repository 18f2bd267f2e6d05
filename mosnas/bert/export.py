"""The BERT model folder: a Hugging Face `BertModel` directory (`config.json`, `model.safetensors`, the teacher's
tokenizer files) that `transformers.AutoModel.from_pretrained` loads with no mosnas code, plus mosnas's own
records (`arch.json`, `export.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from mosnas.bert.model import BertDenseConfig, BertEncoder, num_parameters
from mosnas.bert.teacher import load_tokenizer
from mosnas.errors import CheckpointError, ConfigError
from mosnas.workspace.files import load_tensors
from mosnas.workspace.model_dir import ModelDir


def hf_config(cfg: BertDenseConfig) -> Any:
    """The `transformers.BertConfig` of a dense encoder (exact GELU, absolute positions, [PAD] = 0)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn,
        hidden_act="gelu",
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.attention_dropout,
        max_position_embeddings=cfg.max_position,
        type_vocab_size=cfg.type_vocab,
        layer_norm_eps=cfg.layer_norm_eps,
        pad_token_id=0,
        architectures=["BertModel"],
    )


def dense_config_of(raw: dict[str, Any]) -> BertDenseConfig:
    """The dense config of a Hugging Face BERT config.json (read as a dict)."""
    if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"not a BERT with exact GELU (model_type {raw.get('model_type')}, {raw.get('hidden_act')})")
    return BertDenseConfig(
        vocab_size=raw["vocab_size"],
        hidden=raw["hidden_size"],
        layers=raw["num_hidden_layers"],
        heads=raw["num_attention_heads"],
        ffn=raw["intermediate_size"],
        max_position=raw.get("max_position_embeddings", 512),
        type_vocab=raw.get("type_vocab_size", 2),
        layer_norm_eps=raw.get("layer_norm_eps", 1e-12),
        dropout=raw.get("hidden_dropout_prob", 0.1),
        attention_dropout=raw.get("attention_probs_dropout_prob", 0.1),
    )


def run_teacher(run_dir: str | Path) -> str:
    """The `bert.teacher` setting of a run folder's config.yaml ("" = the bundled teacher)."""
    path = Path(run_dir) / "config.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} is not a readable run config: {e}") from None
    return str((raw.get("bert") or {}).get("teacher", "") or "")


def save_model(
    model: BertEncoder, out_dir: str | Path, run_dir: str | Path, arch: Any = None, info: dict[str, Any] | None = None
) -> Path:
    """Write the Hugging Face folder of `model` with the tokenizer of the run's teacher (`bert.teacher` in
    `run_dir`/config.yaml), `arch.json` and, last, `export.json` (family, parameters and `info`: the run, its
    step and checkpoint record). Raises ConfigError when the folder cannot be made."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create export folder {out}: {e.strerror}") from None
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors.tmp"), metadata={"format": "pt"})
    (out / "model.safetensors.tmp").replace(ModelDir(out).weights)
    hf_config(model.cfg).to_json_file(str(out / "config.json"))
    load_tokenizer(run_teacher(run_dir)).save_pretrained(str(out))
    if arch is not None:
        ModelDir(out).arch.write_text(json.dumps(arch.to_dict(), indent=1), encoding="utf-8")
    record = {"family": "bert", "parameters": num_parameters(model), **(info or {})}
    ModelDir(out).record.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return out


def read_config(model_dir: str | Path) -> BertDenseConfig:
    """The dense config of a model folder's config.json; CheckpointError when it is missing or not a BERT."""
    path = Path(model_dir) / "config.json"
    try:
        return dense_config_of(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable BERT config: {e}") from None


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> tuple[BertEncoder, Any]:
    """(BertEncoder in eval mode, tokenizer) of an exported folder, or of any Hugging Face BERT folder (a
    `bert.` prefix is dropped, heads such as `cls.*` and integer buffers are ignored, a missing pooler keeps
    BERT's init). Raises CheckpointError when the folder does not hold a matching BERT."""
    d = Path(model_dir)
    for name in ("model.safetensors", "config.json"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d} is not a BERT model folder (missing {name})")
    model = BertEncoder(read_config(d))
    own = dict(model.named_parameters())
    found = {k.removeprefix("bert."): v for k, v in load_tensors(ModelDir(d).weights).items()}
    tensors = {k: v for k, v in found.items() if k in own and v.is_floating_point()}
    missing = [k for k in own if k not in tensors and not k.startswith("pooler.")]
    wrong = [k for k, v in tensors.items() if v.shape != own[k].shape]
    if missing or wrong:
        raise CheckpointError(f"{d}/model.safetensors does not match its config.json (e.g. {(missing + wrong)[0]})")
    model.load_state_dict(tensors, strict=False)
    try:
        tokenizer = load_tokenizer(d)
    except ConfigError as e:
        raise CheckpointError(str(e).replace("bert.teacher: ", "")) from None
    ModelDir(d).check_tokenizer(model.cfg.vocab_size, len(tokenizer))  # not another model's tokenizer files
    return model.to(device).eval(), tokenizer


def init_model(model_dir: Path) -> BertEncoder:
    """A fresh BERT init (std 0.02) of the arch of a model folder (its config.json): the from-scratch control."""
    return BertEncoder(read_config(model_dir))
