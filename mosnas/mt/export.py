"""The translation model folder: `model.safetensors`, `config.json`, `spm.model`, `arch.json`, `export.json`;
loaded without any supernet code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mosnas.errors import CheckpointError, ConfigError
from mosnas.mt.data import load_tokenizer
from mosnas.mt.space import Arch
from mosnas.mt.transformer import Transformer, TransformerConfig, num_parameters
from mosnas.workspace.files import load_tensors
from mosnas.workspace.model_dir import ModelDir


def save_model(
    model: Transformer,
    out_dir: str | Path,
    tokenizer_file: str | Path,
    arch: Arch | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write `model.safetensors`, `config.json`, `spm.model` (+ `arch.json`, `export.json`)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create export folder {out}: {e.strerror}") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / "model.safetensors.tmp"))
    (out / "model.safetensors.tmp").replace(ModelDir(out).weights)
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1), encoding="utf-8")
    if Path(tokenizer_file).resolve() != (out / "spm.model").resolve():
        shutil.copyfile(tokenizer_file, out / "spm.model")
    if arch is not None:
        ModelDir(out).arch.write_text(json.dumps(arch.to_dict(), indent=1), encoding="utf-8")
    ModelDir(out).record.write_text(
        json.dumps({"parameters": num_parameters(model), **(info or {})}, indent=1), encoding="utf-8"
    )
    return out


def load_model(model_dir: str | Path, device: str | torch.device = "cpu"):
    """(Transformer, tokenizer) from an exported folder; needs no supernet code or checkpoint."""
    d = Path(model_dir)
    for name in ("model.safetensors", "config.json", "spm.model"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d} is not an exported model folder (missing {name})")
    try:
        cfg = TransformerConfig.from_dict(json.loads((d / "config.json").read_text(encoding="utf-8")))
        with torch.device("meta"):
            model = Transformer(cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{d}/config.json is not a valid model config: {e}") from None
    tensors = load_tensors(ModelDir(d).weights)
    own = dict(model.named_parameters())
    if set(own) != set(tensors) or any(own[k].shape != tensors[k].shape for k in own):
        raise CheckpointError(f"{d}/model.safetensors does not match its config.json")
    model.load_state_dict(tensors, assign=True)
    tokenizer = load_tokenizer(d / "spm.model")
    ModelDir(d).check_tokenizer(cfg.vocab_size, tokenizer.get_piece_size())  # not another run's spm.model
    return model.to(device).eval(), tokenizer
