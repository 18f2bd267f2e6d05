"""Batched beam search with length penalty on dense (exported) Transformers."""

from __future__ import annotations

import torch
from torch import Tensor

from mosnas.models.transformer import EncoderOut, Transformer


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
    """Best hypothesis (token ids, without BOS/EOS) for each row of `src` (B, S).

    Scores are summed log-probabilities divided by length**lenpen (length counts EOS), as in
    fairseq. A sentence is finished once it holds `beam` finished hypotheses."""
    model.eval()
    cfg = model.cfg
    bsz, device = src.shape[0], src.device
    src_lens = src.ne(cfg.pad_id).sum(1)
    max_len = int(max_len_a * int(src_lens.max()) + max_len_b)
    enc = model.encode(src)
    order = torch.arange(bsz, device=device).repeat_interleave(beam)
    enc = EncoderOut([s.index_select(0, order) for s in enc.states], enc.pad_mask.index_select(0, order))
    cache = model.new_cache()
    tokens = torch.full((bsz * beam, 1), cfg.bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(bsz, beam, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: keep only the first alive
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    per_sent_max = (max_len_a * src_lens.float() + max_len_b).long().tolist()
    for step in range(max_len):
        logits = model.decode(tokens[:, -1:], enc, cache, start=step)[:, -1].float()
        lprobs = logits.log_softmax(-1)
        lprobs[:, cfg.pad_id] = float("-inf")
        lprobs[:, cfg.bos_id] = float("-inf")
        vocab = lprobs.shape[-1]
        cand = (scores.view(-1, 1) + lprobs).view(bsz, beam * vocab)
        top_scores, top_idx = cand.topk(2 * beam, dim=1)
        top_scores, top_idx = top_scores.tolist(), top_idx.tolist()
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(bsz):
            alive = []
            if not done[b]:
                for s, idx in zip(top_scores[b], top_idx[b]):
                    if s == float("-inf"):
                        break
                    row, tok = b * beam + idx // vocab, idx % vocab
                    if tok == cfg.eos_id or step + 1 >= per_sent_max[b]:
                        if len(finished[b]) < beam:
                            hyp = tokens[row, 1:].tolist() + ([] if tok == cfg.eos_id else [tok])
                            finished[b].append((s / (step + 1) ** lenpen, hyp))
                    else:
                        alive.append((row, tok, s))
                    if len(alive) == beam:
                        break
                done[b] = len(finished[b]) >= beam or not alive
            while len(alive) < beam:  # padding beams for finished sentences: never selected again
                alive.append((b * beam, cfg.pad_id, float("-inf")))
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
    out = []
    for b in range(bsz):
        if not finished[b]:  # ran out of length: take the best alive hypothesis
            best = int(scores[b].argmax())
            finished[b].append((0.0, tokens[b * beam + best, 1:].tolist()))
        out.append(max(finished[b], key=lambda x: x[0])[1])
    return out


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
    """Detokenized translations of raw `lines`, batched by source length (output in input order)."""
    from tqdm import tqdm

    from mosnas.data import EOS, pad_batch

    device = next(model.parameters()).device
    ids = [x + [EOS] for x in tokenizer.encode(lines)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(lines)
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for chunk in tqdm(chunks, disable=not progress, desc="translate", dynamic_ncols=True):
        src = pad_batch([ids[i] for i in chunk]).to(device)
        for i, hyp in zip(chunk, beam_search(model, src, beam, lenpen, max_len_a, max_len_b)):
            out[i] = tokenizer.decode(hyp)
    return out
