"""Exact costs of an arch, computed from the arch alone (no model needed)."""

from __future__ import annotations

from mosnas.space import Arch


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count_parameters(
    arch: Arch, qkv_dim: int, vocab_size: int, share_all_embeddings: bool, prenorm: bool = True
) -> int:
    """Parameters of the dense Transformer of `arch` (the exported model), embeddings included."""
    e, d, q = arch.encoder_embed_dim, arch.decoder_embed_dim, qkv_dim
    total = vocab_size * e if share_all_embeddings else vocab_size * (e + d)
    for f in arch.encoder_ffn_dims:
        total += 3 * _linear(e, q) + _linear(q, e) + 2 * 2 * e + _linear(e, f) + _linear(f, e)
    for f in arch.decoder_ffn_dims:
        self_attn = 3 * _linear(d, q) + _linear(q, d)
        cross_attn = _linear(d, q) + 2 * _linear(e, q) + _linear(q, d)
        total += self_attn + cross_attn + 3 * 2 * d + _linear(d, f) + _linear(f, d)
    if prenorm:
        total += 2 * e + 2 * d
    return total
