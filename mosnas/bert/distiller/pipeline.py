"""One student's KD pipeline at GLUE fine-tuning (Distiller's design axes as `glue.kd_*` settings): the
intermediate terms between a student and its fine-tuned teacher, with what they train beside the student
(hidden-state projections, MI-α critics), and the capture of the representations they need from any Hugging
Face BERT classifier (or a NAS-BERT student's, hidden states only).

- `hidden`: for each layer pair (s, t) of the layer map (mosnas.bert.distiller.layers), the student's hidden state
  after layer s against the teacher's after layer t; `mse`, `cos` and `pkd` through a learned Linear d_s -> d_t when
  the widths differ (TinyBERT's W_h, started as the identity on the first columns), `mi`: -I_α of the
  real-token means of both states (B, d_s) and (B, d_t) with one critic per pair (mosnas.bert.distiller.mi;
  Distiller flattens whole padded sequences, which needs one fixed length: the mean keeps any length).
- `attention`: each layer pair's attention distributions, from the layers' own query and key projections
  (mosnas.bert.distiller.losses.attention_probs), head-averaged when the head counts differ.
- `relations`: the student's last layer against its mapped teacher layer, MiniLMv2's Q-Q / K-K / V-V relations
  (mosnas.bert.distill.relation_kl) in as many relation heads as the teacher has attention heads.
The terms are summed (over layer pairs too, as TinyBERT and Distiller do)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mosnas.bert.distill import HiddenProjection, relation_kl
from mosnas.bert.distiller.layers import layer_map
from mosnas.bert.distiller.losses import attention_loss, attention_probs, hidden_loss
from mosnas.bert.distiller.mi import MIAlpha
from mosnas.config import GlueConfig
from mosnas.errors import ConfigError

_QKV = re.compile(r"(?:^|\.)layer\.(\d+)\.attention\.self\.(query|key|value)$")  # BertSelfAttention's Linear layers


@dataclass(frozen=True)
class Shape:
    """What the pipeline needs to know of a model: layers (BERT layers; NAS-BERT: its sublayers), width, heads
    (None: no attention in every layer, a NAS-BERT student)."""

    layers: int
    width: int
    heads: int | None

    @classmethod
    def of(cls, config: Any) -> Shape:
        """From a Hugging Face config (BertConfig, or NAS-BERT's with its `ops` list)."""
        if hasattr(config, "ops"):
            return cls(len(config.ops), config.width, None)
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads)


def check_pipeline(gc: GlueConfig, student: Shape, teacher: Shape, where: str = "") -> None:
    """Raise ConfigError (one line) when `gc`'s pipeline cannot run between these shapes: attention or relations
    of a student or teacher without attention in every layer, relation heads that do not divide a width, or a
    layer map that does not fit the depths."""
    gc.check_kd()
    if not gc.kd_intermediate:
        return
    layer_map(gc.kd_layer_map, student.layers, teacher.layers)
    for rep in ("attention", "relations"):
        if rep in gc.kd_intermediate and (student.heads is None or teacher.heads is None):
            raise ConfigError(
                f"glue.kd_intermediate={rep}: {where or 'the model'} has no self-attention in every layer (a "
                "NAS-BERT student); distil its hidden states (kd_intermediate=hidden)"
            )
    if "relations" in gc.kd_intermediate and (student.width % teacher.heads or teacher.width % teacher.heads):
        raise ConfigError(
            f"glue.kd_intermediate=relations: the teacher's {teacher.heads} relation heads must divide the student's "
            f"width {student.width} and the teacher's {teacher.width}"
        )


@dataclass
class Captured:
    """A forward pass's representations: logits (B, C), hidden_states (1 + L tensors (B, T, d)), and the query,
    key and value projections (B, T, d) of the layers asked for, by layer number (from 1)."""

    logits: Tensor
    hidden: tuple[Tensor, ...] = ()
    qkv: dict[int, dict[str, Tensor]] = field(default_factory=dict)


def capture(model: nn.Module, batch: dict[str, Tensor], layers: set[int]) -> Captured:
    """Run `model` (a sequence classifier) on `batch` with its hidden states, and with forward hooks on the
    query/key/value projections of `layers` (numbered from 1). Raises ConfigError when a layer has none."""
    found: dict[int, dict[str, Tensor]] = {}

    def keep(number: int, kind: str) -> Any:
        return lambda module, inputs, output: found.setdefault(number, {}).update({kind: output})

    hooks = []
    for name, module in model.named_modules():
        m = _QKV.search(name)
        if m and int(m.group(1)) + 1 in layers:
            hooks.append(module.register_forward_hook(keep(int(m.group(1)) + 1, m.group(2))))
    try:
        out = model(**batch, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    missing = sorted(n for n in layers if set(found.get(n, {})) != {"query", "key", "value"})
    if missing:
        raise ConfigError(f"no query/key/value projections found in layer {missing[0]} of {type(model).__name__}")
    return Captured(out.logits, tuple(out.hidden_states or ()), found)


def token_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """The mean over real tokens: hidden (B, T, d), mask (B, T) -> (B, d)."""
    real = mask.float()[..., None]
    return (hidden * real).sum(1) / real.sum(1).clamp(min=1)


class KDPipeline(nn.Module):
    """The intermediate terms of `gc` between a student and a teacher of these shapes, and their trained
    parameters (projections or MI-α critics, one per layer pair). forward(student, teacher, mask) -> {term:
    scalar}; mask (B, T), 1 = real token."""

    def __init__(self, gc: GlueConfig, student: Shape, teacher: Shape):
        super().__init__()
        check_pipeline(gc, student, teacher)
        self.gc, self.student, self.teacher = gc, student, teacher
        self.pairs = layer_map(gc.kd_layer_map, student.layers, teacher.layers) if gc.kd_intermediate else []
        self.critics = self.projections = None
        if "hidden" in gc.kd_intermediate:
            if gc.kd_hidden_loss == "mi":
                self.critics = nn.ModuleList(MIAlpha(student.width, teacher.width, gc.kd_mi_alpha) for _ in self.pairs)
            elif student.width != teacher.width:
                self.projections = nn.ModuleList(HiddenProjection(student.width, teacher.width) for _ in self.pairs)

    def layers(self) -> tuple[set[int], set[int]]:
        """The (student, teacher) layers whose query/key/value projections the terms read."""
        if not {"attention", "relations"} & set(self.gc.kd_intermediate):
            return set(), set()
        pairs = self.pairs if "attention" in self.gc.kd_intermediate else self.pairs[-1:]
        return {s for s, _ in pairs}, {t for _, t in pairs}

    def forward(self, student: Captured, teacher: Captured, mask: Tensor) -> dict[str, Tensor]:
        gc, out = self.gc, {}
        if "hidden" in gc.kd_intermediate:
            terms = []
            for i, (s, t) in enumerate(self.pairs):
                hs, ht = student.hidden[s].float(), teacher.hidden[t].float()
                if self.critics is not None:
                    terms.append(self.critics[i](token_mean(hs, mask), token_mean(ht, mask)))
                    continue
                hs = self.projections[i](hs) if self.projections is not None else hs
                terms.append(hidden_loss(hs, ht, mask, gc.kd_hidden_loss))
            out["hidden"] = torch.stack(terms).sum()
        if "attention" in gc.kd_intermediate:
            terms = []
            for s, t in self.pairs:
                a_s = attention_probs(student.qkv[s]["query"], student.qkv[s]["key"], self.student.heads, mask)
                a_t = attention_probs(teacher.qkv[t]["query"], teacher.qkv[t]["key"], self.teacher.heads, mask)
                terms.append(attention_loss(a_s, a_t, mask, gc.kd_attention_loss))
            out["attention"] = torch.stack(terms).sum()
        if "relations" in gc.kd_intermediate:
            s, t = self.pairs[-1]
            qkv_s = tuple(student.qkv[s][k] for k in ("query", "key", "value"))
            qkv_t = tuple(teacher.qkv[t][k] for k in ("query", "key", "value"))
            out["relations"] = relation_kl(qkv_s, qkv_t, mask, self.teacher.heads)
        return out


def shapes(student_dir: Path, teacher_dir: Path) -> tuple[Shape, Shape]:
    """The Shapes of two Hugging Face folders, from their config.json."""
    from transformers import AutoConfig

    from mosnas.bert.nasbert.hf_modeling import register

    register()
    read = lambda folder: Shape.of(AutoConfig.from_pretrained(str(folder), local_files_only=True))  # noqa: E731
    return read(student_dir), read(teacher_dir)
