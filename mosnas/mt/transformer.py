"""The dense encoder-decoder Transformer: what export returns, what scratch training trains,
and what the supernet runs with generated weights (via torch.func.functional_call)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    encoder_embed_dim: int
    decoder_embed_dim: int
    qkv_dim: int
    encoder_ffn_dims: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_ffn_dims: tuple[int, ...]
    decoder_self_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_spans: tuple[int, ...]
    # One table for source, target and output, max(encoder, decoder) wide; each side uses its first columns.
    share_all_embeddings: bool = True
    prenorm: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0  # inside the FFN (fairseq's default 0: it is costly on CPU)
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3
    # Width the sinusoidal position code is computed at; each side uses its first columns, so codes nest
    # across widths (HAT). 0: each side's own width (models exported before this field existed).
    position_dim: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TransformerConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names})


def sinusoids(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal position codes (T, dim) of integer `positions` (T,): sin | cos halves over geometric
    frequencies 1 .. 1/10000 (Vaswani et al. 2017, fairseq's layout), computed on the fly: no buffers."""
    half = dim // 2
    step = -math.log(10000.0) / max(half - 1, 1)
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=positions.device) * step)
    angles = positions.float()[:, None] * freq[None, :]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))


class Attention(nn.Module):
    def __init__(self, q_dim: int, kv_dim: int, qkv_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.q_proj = nn.Linear(q_dim, qkv_dim)
        self.k_proj = nn.Linear(kv_dim, qkv_dim)
        self.v_proj = nn.Linear(kv_dim, qkv_dim)
        self.out_proj = nn.Linear(qkv_dim, q_dim)

    def _heads(self, x: Tensor) -> Tensor:  # (B, T, D) -> (B, H, T, D/H)
        return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        kv: Tensor | None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: dict[str, Tensor] | None = None,
        static_kv: bool = False,
    ) -> Tensor:
        q = self._heads(self.q_proj(x))
        if cache is not None and static_kv and "k" in cache:
            k, v = cache["k"], cache["v"]  # encoder keys/values, computed at the first decoding step
        else:
            k, v = self._heads(self.k_proj(kv)), self._heads(self.v_proj(kv))
            if cache is not None:
                if not static_kv and "k" in cache:
                    k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
                cache["k"], cache["v"] = k, v
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, qkv_dim: int, heads: int, ffn_dim: int, cfg: TransformerConfig):
        super().__init__()
        self.prenorm, self.dropout, self.activation_dropout = cfg.prenorm, cfg.dropout, cfg.activation_dropout
        self.self_attn = Attention(dim, dim, qkv_dim, heads, cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim)

    def _residual(self, x: Tensor, norm: nn.LayerNorm, fn: Any) -> Tensor:
        if self.prenorm:
            return x + F.dropout(fn(norm(x)), self.dropout, self.training)
        return norm(x + F.dropout(fn(x), self.dropout, self.training))

    def _ffn(self, x: Tensor) -> Tensor:
        h = F.relu(self.fc1(x))
        if self.activation_dropout > 0:
            h = F.dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self._residual(x, self.self_attn_norm, lambda h: self.self_attn(h, h, mask))
        return self._residual(x, self.ffn_norm, self._ffn)


class DecoderLayer(EncoderLayer):
    def __init__(
        self,
        dim: int,
        enc_dim: int,
        qkv_dim: int,
        self_heads: int,
        cross_heads: int,
        ffn_dim: int,
        span: int,
        cfg: TransformerConfig,
    ):
        super().__init__(dim, qkv_dim, self_heads, ffn_dim, cfg)
        self.span = span
        self.cross_attn = Attention(dim, enc_dim, qkv_dim, cross_heads, cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor,  # type: ignore[override]
        cache: dict[str, dict[str, Tensor]] | None = None,
    ) -> Tensor:
        self_cache = cross_cache = None
        if cache is not None:
            self_cache, cross_cache = cache.setdefault("self", {}), cache.setdefault("cross", {})
        causal = cache is None and x.shape[1] > 1
        x = self._residual(
            x, self.self_attn_norm, lambda h: self.self_attn(h, h, None, causal=causal, cache=self_cache)
        )
        x = self._residual(
            x,
            self.cross_attn_norm,
            lambda h: self.cross_attn(h, memory, memory_mask, cache=cross_cache, static_kv=True),
        )
        return self._residual(x, self.ffn_norm, self._ffn)


@dataclass
class EncoderOut:
    states: list[Tensor]  # outputs of the last max-span encoder layers, (B, S, D) each
    pad_mask: Tensor  # (B, S), True at padding


class Transformer(nn.Module):
    """Encoder-decoder Transformer with per-layer widths, heads and encoder-attention spans."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        e, d = cfg.encoder_embed_dim, cfg.decoder_embed_dim
        if cfg.position_dim and cfg.position_dim < max(e, d):
            raise ValueError(f"position_dim {cfg.position_dim} is narrower than the embed dims ({e}, {d})")
        if cfg.share_all_embeddings:
            self.embed = nn.Embedding(cfg.vocab_size, max(e, d))
        else:
            self.encoder_embed = nn.Embedding(cfg.vocab_size, e)
            self.decoder_embed = nn.Embedding(cfg.vocab_size, d)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(e, cfg.qkv_dim, h, f, cfg) for h, f in zip(cfg.encoder_heads, cfg.encoder_ffn_dims)
        )
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(d, e, cfg.qkv_dim, sh, ch, f, k, cfg)
            for sh, ch, f, k in zip(
                cfg.decoder_self_heads, cfg.decoder_cross_heads, cfg.decoder_ffn_dims, cfg.decoder_spans
            )
        )
        if cfg.prenorm:
            self.encoder_norm = nn.LayerNorm(e)
            self.decoder_norm = nn.LayerNorm(d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.is_meta:
                continue
            if name.endswith("embed.weight"):
                nn.init.normal_(p, std=p.shape[1] ** -0.5)
                nn.init.zeros_(p[self.cfg.pad_id])
            elif "norm" in name:
                nn.init.ones_(p) if name.endswith("weight") else nn.init.zeros_(p)
            elif p.dim() == 2:
                nn.init.xavier_uniform_(p)
            else:
                nn.init.zeros_(p)

    def _embed_table(self, side: str) -> Tensor:
        """(V, width of `side`): the shared table's first columns, or the side's own table."""
        if self.cfg.share_all_embeddings:
            dim = self.cfg.encoder_embed_dim if side == "encoder" else self.cfg.decoder_embed_dim
            return self.embed.weight[:, :dim]
        return (self.encoder_embed if side == "encoder" else self.decoder_embed).weight

    def _embed(self, tokens: Tensor, side: str, start: int = 0) -> Tensor:
        table = self._embed_table(side)
        dim = table.shape[1]
        x = F.embedding(tokens, table) * math.sqrt(dim)
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = x + sinusoids(pos, self.cfg.position_dim or dim)[:, :dim].to(x.dtype)
        return F.dropout(x, self.cfg.dropout, self.training)

    def encode(self, src: Tensor) -> EncoderOut:
        pad = src.eq(self.cfg.pad_id)
        mask = ~pad[:, None, None, :]  # (B, 1, 1, S): True where attention is allowed
        x = self._embed(src, "encoder")
        outs = []
        for layer in self.encoder_layers:
            x = layer(x, mask)
            outs.append(x)
        max_span = max(self.cfg.decoder_spans)
        norm = self.encoder_norm if self.cfg.prenorm else (lambda h: h)
        return EncoderOut([norm(h) for h in outs[-max_span:]], pad)

    def decode(
        self, prev: Tensor, enc: EncoderOut, cache: list[dict[str, Any]] | None = None, start: int = 0
    ) -> Tensor:
        """Logits (B, T, V) for target prefix `prev`; with a cache, `prev` holds only new tokens."""
        x = self._embed(prev, "decoder", start)
        memories: dict[int, tuple[Tensor, Tensor]] = {}
        for i, layer in enumerate(self.decoder_layers):
            k = layer.span
            if k not in memories:
                # HAT's arbitrary encoder-decoder attention: keys/values are the last k encoder
                # layers' outputs concatenated along the sequence axis.
                memory = torch.cat(enc.states[-k:], dim=1)
                memories[k] = (memory, ~enc.pad_mask.repeat(1, k)[:, None, None, :])
            memory, memory_mask = memories[k]
            x = layer(x, memory, memory_mask, None if cache is None else cache[i])
        if self.cfg.prenorm:
            x = self.decoder_norm(x)
        return F.linear(x, self._embed_table("decoder"))

    def forward(self, src: Tensor, prev: Tensor) -> Tensor:
        return self.decode(prev, self.encode(src))

    def new_cache(self) -> list[dict[str, Any]]:
        return [{} for _ in self.decoder_layers]


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
