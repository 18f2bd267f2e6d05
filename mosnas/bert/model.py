"""The dense BERT encoder: Hugging Face `BertModel`'s computation and tensor names, so export is a save.

What export returns, what a fine-tuning or a scratch control trains, and what the supernet runs with generated
weights (via torch.func.functional_call). Post-LayerNorm blocks with exact (erf) GELU, as Devlin et al. (2019)
and `transformers`' BertModel compute them; no buffers, so the module builds on the meta device and
functional_call needs only its parameters."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class BertDenseConfig:
    """One BERT encoder's shape (hashable: the supernet caches a meta model per config)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int  # attention head size = hidden / heads
    ffn: int  # the intermediate (FFN) width, the same in every layer (Hugging Face's BertConfig)
    max_position: int = 512
    type_vocab: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # hidden_dropout_prob
    attention_dropout: float = 0.1  # attention_probs_dropout_prob

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by heads {self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions)[None])


class BertSelfAttention(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.query = nn.Linear(cfg.hidden, cfg.hidden)
        self.key = nn.Linear(cfg.hidden, cfg.hidden)
        self.value = nn.Linear(cfg.hidden, cfg.hidden)


class BertSelfOutput(nn.Module):  # also BERT's FFN output ("output"): dense, dropout, residual, LayerNorm
    def __init__(self, n_in: int, cfg: BertDenseConfig):
        super().__init__()
        self.dense = nn.Linear(n_in, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg.hidden, cfg)


class BertIntermediate(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.ffn)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.cfg = cfg
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertSelfOutput(cfg.ffn, cfg)

    def forward(self, x: Tensor, mask: Tensor, probs: bool = False) -> tuple[Tensor, tuple, Tensor | None]:
        """x (B, T, H), mask (B, 1, 1, T) additive (0 or the dtype's min) -> (x, (q, k, v) each (B, T, H),
        attention probabilities (B, heads, T, T) when `probs`)."""
        cfg, att = self.cfg, self.attention
        q, k, v = att.self.query(x), att.self.key(x), att.self.value(x)
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, cfg.heads, -1).transpose(1, 2)  # (B, heads, T, head size)
        p_drop = cfg.attention_dropout if self.training else 0.0
        weights = None
        if probs:  # Hugging Face's eager path, written out: softmax(q k^T / sqrt(d) + mask) v
            scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(cfg.hidden // cfg.heads) + mask
            weights = scores.softmax(-1)
            ctx = F.dropout(weights, p_drop, self.training) @ split(v)
        else:
            ctx = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask, dropout_p=p_drop)
        ctx = ctx.transpose(1, 2).reshape(b, t, cfg.hidden)
        h = att.output.LayerNorm(x + F.dropout(att.output.dense(ctx), cfg.dropout, self.training))
        f = self.output.dense(F.gelu(self.intermediate.dense(h)))  # exact GELU: BERT's "gelu"
        out = self.output.LayerNorm(h + F.dropout(f, cfg.dropout, self.training))
        return out, (q, k, v), weights


class BertEncoderStack(nn.Module):  # Hugging Face's `encoder` (its layers live in encoder.layer.{i})
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.layers))


class BertPooler(nn.Module):
    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)


class BertEncoder(nn.Module):
    """BERT's encoder with pooler; `state_dict()` names are exactly Hugging Face `BertModel`'s."""

    def __init__(self, cfg: BertDenseConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoderStack(cfg)
        self.pooler = BertPooler(cfg)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT's init (`initializer_range` 0.02): normal(0, 0.02) weights and embeddings (the padding row 0),
        zero biases, LayerNorm weight 1 and bias 0. Meta tensors (shapes only) are left alone."""
        for name, p in self.named_parameters():
            if p.is_meta:
                continue
            if "LayerNorm" in name:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=0.02)
        word = self.embeddings.word_embeddings.weight
        if not word.is_meta:
            with torch.no_grad():
                word[0].zero_()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_attentions: bool = False,
    ) -> dict[str, Any]:
        """input_ids (B, T) long, attention_mask (B, T) 1 for tokens / 0 for padding, token_type_ids (B, T)
        (default 0) -> {"hidden": last hidden state (B, T, H), "hidden_states": (layers + 1) tensors (B, T, H),
        the embeddings' output first, "last_qkv": the last layer's query, key and value projections (B, T, H)
        each, before the head split (MiniLM-v2's relations), "pooled": tanh(dense(hidden[:, 0])) (B, H), and
        with `output_attentions` "attentions_last": the last layer's attention probabilities (B, heads, T, T)}.
        Padding positions get the dtype's most negative score, as in `transformers`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = F.dropout(self.embeddings(input_ids, token_type_ids), self.cfg.dropout, self.training)
        dtype = x.dtype
        mask = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min  # (B, 1, 1, T)
        states, qkv, probs = [x], None, None
        last = len(self.encoder.layer) - 1
        for i, layer in enumerate(self.encoder.layer):
            x, qkv, p = layer(x, mask, probs=output_attentions and i == last)
            probs = p if p is not None else probs
            states.append(x)
        out = {"hidden": x, "hidden_states": tuple(states), "last_qkv": qkv}
        out["pooled"] = torch.tanh(self.pooler.dense(x[:, 0]))
        if output_attentions:
            out["attentions_last"] = probs
        return out


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
