"""Exact costs of an arch, computed from the arch alone (no model needed), and its inference memory estimate."""

from __future__ import annotations

import math

from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.mt.space import Arch


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def count_parameters(
    arch: Arch, qkv_dim: int, vocab_size: int, share_all_embeddings: bool, prenorm: bool = True
) -> int:
    """Parameters of the dense Transformer of `arch` (the exported model), embeddings included.

    Shared embeddings are one (vocab, max(e, d)) table, each side using its first e or d columns (what
    the supernet holds too), so the count never drops when a width grows; separate tables hold
    vocab * (e + d). The output layer is tied to the decoder's table."""
    e, d = arch.encoder_embed_dim, arch.decoder_embed_dim
    table = vocab_size * max(e, d) if share_all_embeddings else vocab_size * (e + d)
    return table + count_parameters_hat(arch, qkv_dim, prenorm)


def count_parameters_hat(arch: Arch, qkv_dim: int, prenorm: bool = True) -> int:
    """Parameters without the embedding table(s) and the (tied) output layer: HAT's convention
    (Wang et al. 2020, `get_sampled_params_numel`), for comparison with HAT's tables (e.g. 44.1M for
    Transformer-Base). Everything else counts: projections, FFNs, biases and LayerNorms."""
    e, d, q = arch.encoder_embed_dim, arch.decoder_embed_dim, qkv_dim
    total = 0
    for f in arch.encoder_ffn_dims:
        total += 3 * _linear(e, q) + _linear(q, e) + 2 * 2 * e + _linear(e, f) + _linear(f, e)
    for f in arch.decoder_ffn_dims:
        self_attn = 3 * _linear(d, q) + _linear(q, d)
        cross_attn = _linear(d, q) + 2 * _linear(e, q) + _linear(q, d)
        total += self_attn + cross_attn + 3 * 2 * d + _linear(d, f) + _linear(f, d)
    if prenorm:
        total += 2 * e + 2 * d
    return total


def count_flops(arch: Arch, qkv_dim: int, vocab_size: int, src_len: int, tgt_len: int) -> int:
    """Forward FLOPs (multiply-add = 2) of one teacher-forced sentence pair through the dense model.

    Counts the matrix products (projections, attention scores and values, output projection), as
    torch.utils.flop_counter does; embeddings, norms, softmax and biases cost nothing here."""
    e, d, q, s, t = arch.encoder_embed_dim, arch.decoder_embed_dim, qkv_dim, src_len, tgt_len
    mm = lambda m, k, n: 2 * m * k * n  # (m, k) @ (k, n)
    total = 0
    for f in arch.encoder_ffn_dims:
        # q/k/v/out projections, then scores (s x s) and values; heads split q, so they cost nothing
        total += 4 * mm(s, e, q) + 2 * mm(s, q, s) + mm(s, e, f) + mm(s, f, e)
    for f, k in zip(arch.decoder_ffn_dims, arch.decoder_spans):
        mem = k * s  # cross attention spans the last k encoder layers, concatenated
        self_attn = 4 * mm(t, d, q) + 2 * mm(t, q, t)  # the causal mask still computes the full t x t
        cross_attn = 2 * mm(t, d, q) + 2 * mm(mem, e, q) + 2 * mm(t, q, mem)
        total += self_attn + cross_attn + mm(t, d, f) + mm(t, f, d)
    return total + mm(t, d, vocab_size)


def costs(arch: Arch, space: Space, vocab_size: int, sn: SupernetConfig, lc: LatencyConfig) -> dict[str, float]:
    """Every cost of `arch` that results and budgets report: the exported model's parameters, HAT's count
    (without embeddings), the FLOPs of one sentence pair of the latency protocol's lengths and the estimated
    peak inference memory (`memory_mb`, MiB, fp32; the search's memory limit)."""
    q = space.qkv_dim
    parameters = count_parameters(arch, q, vocab_size, sn.share_embeddings, sn.prenorm)
    return {
        "parameters": parameters,
        "memory_mb": inference_memory_mb(arch, parameters, space, lc, vocab_size),
        "parameters_hat": count_parameters_hat(arch, q, sn.prenorm),  # without embeddings, as HAT's tables
        "flops": count_flops(arch, q, vocab_size, lc.src_len, lc.tgt_len),
    }


def inference_memory_mb(arch: Arch, parameters: int, space: Space, lc: LatencyConfig, vocab_size: int) -> float:
    """An estimate (MiB, fp32) of an exported model's peak inference memory under HAT's protocol, for the
    search's memory limit (cheap: no model): the weights, the decoder's self-attention caches after tgt_len
    steps and cross-attention keys/values (beam x k*src_len per layer), and one step's logits. The measured
    peak (mosnas.latency.memory) is reported beside it for every exported model."""
    q, s, t, b = space.qkv_dim, lc.src_len, lc.tgt_len, lc.beam
    cache = sum(2 * b * t * q + 2 * b * k * s * q for k in arch.decoder_spans)
    encoder = math.prod((b, max(arch.decoder_spans) * s, arch.encoder_embed_dim))  # states repeated for the beam
    return round(4 * (parameters + cache + encoder + 2 * b * vocab_size) / 2**20, 3)
