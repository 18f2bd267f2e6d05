"""The translation family: encoder-decoder Transformers on parallel corpora (HAT's space, BLEU).

This package is what the engine (run folder, training loop, search, latency, supernet, space, pipeline,
report) asks a model family for; a second family is a sibling package of the same shape."""

from __future__ import annotations

import re

from mosnas.config import SupernetConfig
from mosnas.models.transformer import Transformer, TransformerConfig
from mosnas.mt.space import SCHEMA, Arch, load_space
from mosnas.mt.task import prepare, task
from mosnas.space import Space

__all__ = ["SCHEMA", "Arch", "dense_config", "dense_model", "load_space", "mixed_group", "prepare", "task"]

dense_model = Transformer  # config -> the dense encoder-decoder (what export returns)

_FFN = re.compile(r"^((?:encoder|decoder)_layers\.\d+)\.(fc1|fc2)\.(weight|bias)$")
_ATTN = re.compile(r"^((?:encoder|decoder)_layers\.\d+)\.((?:self|cross)_attn\.(?:q|k|v|out)_proj)\.(weight|bias)$")


def mixed_group(name: str, mos_attention: bool) -> tuple[str, str] | None:
    """(layer, linear) that owns tensor `name` if MoS mixes it (the FFNs; with `mos_attention` the attention
    projections too), else None: embeddings and LayerNorms are always sliced."""
    m = _FFN.match(name) or (_ATTN.match(name) if mos_attention else None)
    if m is None:
        return None
    return m.group(1), f"{m.group(1)}.{m.group(2)}"


def dense_config(arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> TransformerConfig:
    """The dense Transformer config of one arch of the supernet.

    With shared embeddings the dense model holds one table, max(e, d) wide (each side uses its first
    columns): what the supernet holds too, so parameter counts grow with every width. Position codes
    are computed at the space's widest embedding and sliced (HAT), so they nest across archs."""
    return TransformerConfig(
        vocab_size=vocab_size,
        encoder_embed_dim=arch.encoder_embed_dim,
        decoder_embed_dim=arch.decoder_embed_dim,
        qkv_dim=space.qkv_dim,
        encoder_ffn_dims=arch.encoder_ffn_dims,
        encoder_heads=arch.encoder_heads,
        decoder_ffn_dims=arch.decoder_ffn_dims,
        decoder_self_heads=arch.decoder_self_heads,
        decoder_cross_heads=arch.decoder_cross_heads,
        decoder_spans=arch.decoder_spans,
        share_all_embeddings=cfg.share_embeddings,
        prenorm=cfg.prenorm,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        position_dim=max(*space.encoder_embed_dim, *space.decoder_embed_dim),
    )
