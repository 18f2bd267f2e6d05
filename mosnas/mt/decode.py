"""Batched beam search with length penalty on dense (exported) Transformers, and its latency workload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from mosnas.errors import ConfigError
from mosnas.latency.measure import measure
from mosnas.mt.transformer import EncoderOut, Transformer


def reorder_cache(cache: list[dict], order: Tensor) -> None:
    """Keep the incremental state of the hypotheses in `order` (beam search's reordering)."""
    for layer in cache:
        for part in layer.values():
            for k in part:
                part[k] = part[k].index_select(0, order)


@torch.no_grad()
def beam_search(
    model: Transformer, src: Tensor, beam: int = 5, lenpen: float = 1.0, max_len_a: float = 1.2, max_len_b: int = 10
) -> list[list[int]]:
    """Best hypothesis (token ids, without BOS/EOS) for each row of `src` (B, S), padded with PAD.

    The algorithm of fairseq's `SequenceGenerator` with `BeamSearch` (Ott et al., 2019,
    fairseq/sequence_generator.py), for each sentence independently:
    - each step ranks the 2*`beam` best (hypothesis, token) extensions by summed log-probability;
    - an EOS among the first `beam` of them finalizes that hypothesis with score
      sum / len**`lenpen`, len counting EOS; an EOS ranked lower is dropped;
    - the next step's hypotheses are the first `beam` non-EOS candidates;
    - a sentence is finished once it holds `beam` finalized hypotheses, or after its step
      `max_len` = int(`max_len_a` * src_len + `max_len_b`), where only EOS is allowed: at most
      `max_len` tokens plus EOS, and every hypothesis ends in EOS, its log-probability scored.
    src_len counts the row's non-PAD tokens, its final EOS included (fairseq excludes EOS). Unlike
    fairseq, whose max length follows the longest source of the batch, each row uses its own, so
    batching never changes a result. PAD and BOS are never generated."""
    model.eval()
    cfg = model.cfg
    bsz, device = src.shape[0], src.device
    if bsz == 0:
        return []
    neg_inf = float("-inf")
    max_lens = [int(max_len_a * n + max_len_b) for n in src.ne(cfg.pad_id).sum(1).tolist()]
    enc = model.encode(src)
    order = torch.arange(bsz, device=device).repeat_interleave(beam)
    enc = EncoderOut([s.index_select(0, order) for s in enc.states], enc.pad_mask.index_select(0, order))
    cache = model.new_cache()
    tokens = torch.full((bsz * beam, 1), cfg.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(bsz, beam, device=device)
    scores[:, 1:] = neg_inf  # all beams start identical: the first step extends only the first
    finalized: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    for step in range(max(max_lens) + 1):
        lprobs = model.decode(tokens[:, -1:], enc, cache, start=step)[:, -1].float().log_softmax(-1)
        lprobs = lprobs.masked_fill(lprobs.isnan(), neg_inf)
        lprobs[:, [cfg.pad_id, cfg.bos_id]] = neg_inf
        forced = [b * beam + k for b in range(bsz) if step >= max_lens[b] for k in range(beam)]
        if forced:  # at max length only EOS may follow
            rows = torch.tensor(forced, device=device)
            eos = lprobs[rows, cfg.eos_id]
            lprobs[rows] = neg_inf
            lprobs[rows, cfg.eos_id] = eos
        vocab = lprobs.shape[-1]
        cand = (scores.view(-1, 1) + lprobs).view(bsz, beam * vocab)
        top_scores, top_idx = cand.topk(min(2 * beam, beam * vocab), dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(bsz):
            alive = []
            if not done[b]:
                for rank, (s, idx) in enumerate(zip(top_scores[b], top_idx[b])):
                    row, tok = b * beam + idx // vocab, idx % vocab
                    if tok != cfg.eos_id:
                        if len(alive) < beam:
                            alive.append((row, tok, s))
                    elif rank < beam and s > neg_inf and len(finalized[b]) < beam:
                        finalized[b].append((s / (step + 1) ** lenpen, tokens[row, 1:].tolist()))
                done[b] = len(finalized[b]) >= beam or step >= max_lens[b]
            if done[b]:
                alive = []
            alive += [(b * beam, cfg.pad_id, neg_inf)] * (beam - len(alive))  # padding: never selected again
            for row, tok, s in alive:
                next_rows.append(row)
                next_tokens.append(tok)
                next_scores.append(s)
        if all(done):
            break
        rows = torch.tensor(next_rows, device=device)
        tokens = torch.cat([tokens.index_select(0, rows), torch.tensor(next_tokens, device=device)[:, None]], 1)
        scores = torch.tensor(next_scores, device=device).view(bsz, beam)
        reorder_cache(cache, rows)
    # max() keeps the first of equal scores; a sentence whose every score was -inf (non-finite
    # model output) has no finalized hypothesis and gets the empty one.
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finalized]


def translate(
    model: Transformer,
    tokenizer,
    lines: list[str],
    beam: int = 5,
    lenpen: float = 1.0,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    batch_size: int = 64,
    progress: bool = False,
) -> list[str]:
    """Detokenized translations of raw `lines`, one line each (`data.one_line`: a translation never holds
    a line break), batched by source length, in input order; see `beam_search` for the arguments. A blank line
    (empty or whitespace only) translates to an empty line without decoding: nothing in, nothing out."""
    from tqdm import tqdm

    from mosnas.mt.data import EOS, one_line, pad_batch

    device = next(model.parameters()).device
    ids = [x + [EOS] for x in tokenizer.encode(lines)]
    order = sorted((i for i in range(len(ids)) if lines[i].strip()), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(lines)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, disable=not progress, desc="translate", dynamic_ncols=True):
        src = pad_batch([ids[i] for i in chunk]).to(device)
        for i, hyp in zip(chunk, beam_search(model, src, beam, lenpen, max_len_a, max_len_b)):
            out[i] = one_line(tokenizer.decode(hyp))
    return out


# -- the latency workload (HAT's protocol) ---------------------------------------------------------


def _fixed_tokens(model: Transformer, length: int, device: torch.device) -> Tensor:
    # ordinary (non-special) ids, the same every time: the work does not depend on the weights
    first = max(model.cfg.pad_id, model.cfg.bos_id, model.cfg.eos_id) + 1
    return first + torch.arange(length, device=device) % (model.cfg.vocab_size - first)


def _translate(model: Transformer, src: Tensor, tokens: Tensor, beam: int) -> None:
    """One fixed-length beam-search translation: encoder once, then one cached decoder step per token."""
    enc = model.encode(src)
    enc = EncoderOut([s.repeat(beam, 1, 1) for s in enc.states], enc.pad_mask.repeat(beam, 1))
    cache = model.new_cache()
    order = torch.arange(beam, device=src.device)
    for step in range(tokens.shape[1]):
        logits = model.decode(tokens[:, step : step + 1], enc, cache, start=step)
        logits[:, -1].float().log_softmax(-1).topk(2 * beam)  # beam search's scoring (result unused)
        reorder_cache(cache, order)  # and its cache reordering, with a fixed order


def latency_workload(
    model: Transformer,
    src_len: int = 30,
    tgt_len: int = 30,
    beam: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Callable[[], None]:
    """The work of one latency sample (HAT's protocol): translate one `src_len`-token sentence into `tgt_len`
    tokens with beam search. Moves `model` to `device` and casts it to `dtype` (the precision it is deployed
    in). Raises ConfigError for a length or beam < 1."""
    if min(src_len, tgt_len, beam) < 1:
        raise ConfigError(f"latency: src_len, tgt_len and beam must be >= 1, got {src_len}, {tgt_len}, {beam}")
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype).eval()
    src = _fixed_tokens(model, src_len, device)[None]
    tokens = _fixed_tokens(model, tgt_len, device)[None].repeat(beam, 1)
    return torch.no_grad()(lambda: _translate(model, src, tokens, beam))


@torch.no_grad()
def measure_latency(
    model: Transformer,
    src_len: int = 30,
    tgt_len: int = 30,
    beam: int = 5,
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Latency (ms) of translating one `src_len`-token sentence into `tgt_len` tokens (HAT's protocol), timed
    by `latency.measure` (median and mean of the middle 80% of `repeats`, after `warmup` untimed runs).
    Moves `model` to `device` and casts it to `dtype` (the precision it is deployed in)."""
    if min(src_len, tgt_len, beam, repeats) < 1 or warmup < 0:
        raise ConfigError(
            f"latency: src_len, tgt_len, beam and repeats must be >= 1 and warmup >= 0, got "
            f"{src_len}, {tgt_len}, {beam}, {repeats}, {warmup}"
        )
    work = latency_workload(model, src_len, tgt_len, beam, device, dtype)
    timing = measure(work, warmup, repeats, device, threads)
    info = timing.pop("device")
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    settings = {"src_len": src_len, "tgt_len": tgt_len, "beam": beam, "warmup": warmup, "repeats": repeats}
    return {**timing, "settings": {**settings, "precision": precision}, "device": info}
