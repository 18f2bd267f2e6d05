"""The translation family's per-layer latency lookup table: which layer shapes an arch is made of, and the work
of timing one shape alone under HAT's protocol (the idea of NAS-BERT, Xu et al. 2021: measure each layer
shape once, sum over an arch's layers; mosnas.latency.table fits and calibrates the sum).

An arch's latency splits into three groups of parts:
- `base` (e, d): source embedding + encoder norm once, then per decoder step the target embedding, decoder
  norm, output projection over the vocabulary, log-softmax and top-2k (beam search's scoring);
- `encoder` (e, f, h): one encoder layer over the `src_len`-token sentence, once;
- `decoder` (d, e, f, hs, hc, k): one decoder layer for `tgt_len` cached steps of `beam` hypotheses, with
  encoder-decoder attention over the last k encoder layers (HAT's arbitrary attention: k * src_len keys),
  its cache reordered each step as beam search does."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

from mosnas.config import LatencyConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.errors import PredictorError
from mosnas.latency.table import parse_part_key, part_key
from mosnas.mt.space import Arch
from mosnas.mt.transformer import DecoderLayer, EncoderLayer, Transformer, TransformerConfig

GROUPS = ("base", "encoder", "decoder")


def latency_parts(arch: Arch) -> dict[str, list[str]]:
    """The table keys `arch`'s latency sums, per group (GROUPS): one base, one per encoder/decoder layer."""
    e, d = arch.encoder_embed_dim, arch.decoder_embed_dim
    enc = [part_key("enc", e=e, f=f, h=h) for f, h in zip(arch.encoder_ffn_dims, arch.encoder_heads)]
    layers = zip(arch.decoder_ffn_dims, arch.decoder_self_heads, arch.decoder_cross_heads, arch.decoder_spans)
    dec = [part_key("dec", d=d, e=e, f=f, hs=hs, hc=hc, k=k) for f, hs, hc, k in layers]
    return {"base": [part_key("base", e=e, d=d)], "encoder": enc, "decoder": dec}


def space_parts(space: Space) -> list[str]:
    """Every key an arch of `space` can use (the table to measure)."""
    c = space.choices
    keys = [part_key("base", e=e, d=d) for e, d in itertools.product(c["encoder_embed_dim"], c["decoder_embed_dim"])]
    keys += [
        part_key("enc", e=e, f=f, h=h)
        for e, f, h in itertools.product(c["encoder_embed_dim"], c["encoder_ffn_dim"], c["encoder_heads"])
    ]
    dims = (c["decoder_embed_dim"], c["encoder_embed_dim"], c["decoder_ffn_dim"], c["decoder_self_heads"])
    dims += (c["decoder_cross_heads"], c["decoder_span"])
    keys += [part_key("dec", d=d, e=e, f=f, hs=hs, hc=hc, k=k) for d, e, f, hs, hc, k in itertools.product(*dims)]
    return keys


def part_workload(
    key: str,
    space: Space,
    vocab_size: int,
    sn: SupernetConfig,
    lc: LatencyConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> Callable[[], None]:
    """The work of timing one layer shape alone (randomly initialized: the time does not depend on the
    weights), on `device` in `dtype`, with the protocol's `src_len`, `tgt_len` and `beam` of `lc`."""
    kind, v = parse_part_key(key, "translation")
    cfg = _config(v.get("e", 0), v.get("d", 0), space, vocab_size, sn)
    s, t, beam, q = lc.src_len, lc.tgt_len, lc.beam, space.qkv_dim
    new = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)
    if kind == "enc":
        layer = EncoderLayer(v["e"], q, v["h"], v["f"], cfg).to(device, dtype).eval()
        x, mask = new(1, s, v["e"]), torch.ones(1, 1, 1, s, dtype=torch.bool, device=device)
        return torch.no_grad()(lambda: layer(x, mask))
    if kind == "dec":
        layer = DecoderLayer(v["d"], v["e"], q, v["hs"], v["hc"], v["f"], v["k"], cfg).to(device, dtype).eval()
        states = [new(beam, s, v["e"]) for _ in range(v["k"])]
        mask = torch.ones(beam, 1, 1, v["k"] * s, dtype=torch.bool, device=device)
        x, order = new(beam, 1, v["d"]), torch.arange(beam, device=device)
        return torch.no_grad()(lambda: _decoder_steps(layer, x, states, mask, order, t))
    if kind == "base":
        return _base_work(v["e"], v["d"], space, vocab_size, sn, lc, device, dtype)
    raise PredictorError(f"not a layer-shape key of the translation family: {key!r}")


def _decoder_steps(layer: DecoderLayer, x, states, mask, order, steps: int) -> None:
    cache: dict = {}
    for _ in range(steps):
        memory = torch.cat(states, dim=1)  # what Transformer.decode builds per step for span k
        layer(x, memory, mask, cache)
        for part in cache.values():  # beam search's cache reordering
            for k in part:
                part[k] = part[k].index_select(0, order)


def _config(e: int, d: int, space: Space, vocab_size: int, sn: SupernetConfig) -> TransformerConfig:
    """A layerless dense config (embeddings, norms and output only) of widths e and d."""
    return TransformerConfig(
        vocab_size=vocab_size,
        encoder_embed_dim=e,
        decoder_embed_dim=d,
        qkv_dim=space.qkv_dim,
        encoder_ffn_dims=(),
        encoder_heads=(),
        decoder_ffn_dims=(),
        decoder_self_heads=(),
        decoder_cross_heads=(),
        decoder_spans=(),
        share_all_embeddings=sn.share_embeddings,
        prenorm=sn.prenorm,
        dropout=0.0,
        position_dim=max(*space.encoder_embed_dim, *space.decoder_embed_dim),
    )


def _base_work(e, d, space, vocab_size, sn, lc, device, dtype) -> Callable[[], None]:
    cfg = _config(e, d, space, vocab_size, sn)
    model = Transformer(cfg).to(device, dtype).eval()
    first = max(cfg.pad_id, cfg.bos_id, cfg.eos_id) + 1
    src = (first + torch.arange(lc.src_len, device=device) % (vocab_size - first))[None]
    tok = torch.full((lc.beam, 1), first, device=device)
    norm = lambda h, side: getattr(model, f"{side}_norm")(h) if sn.prenorm else h

    @torch.no_grad()
    def work() -> None:
        norm(model._embed(src, "encoder"), "encoder")
        for step in range(lc.tgt_len):
            x = norm(model._embed(tok, "decoder", step), "decoder")
            logits = torch.nn.functional.linear(x, model._embed_table("decoder"))
            logits[:, -1].float().log_softmax(-1).topk(2 * lc.beam)

    return work
