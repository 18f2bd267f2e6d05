import copy
import random

import pytest
import torch

from mosnas.engine.load import load_run
from mosnas.mt.data import EOS, read_lines
from mosnas.mt.decode import beam_search, translate
from mosnas.mt.transformer import EncoderOut
from tests.conftest import DATA, make_supernet


def _model(space, seed=0):
    torch.manual_seed(seed)
    net = make_supernet(space, "neuron", vocab=60)
    for r in net.generator.routers.values():
        torch.nn.init.normal_(r.fc2.weight, std=0.5)
    return net.export(space.sample(random.Random(seed)))


def _greedy(model, src, max_len):
    """Reference greedy decoding: the full prefix through the plain forward, no cache."""
    cfg = model.cfg
    prev = torch.tensor([[cfg.bos_id]])
    out = []
    for _ in range(max_len):
        lp = model(src, prev)[0, -1].log_softmax(-1)
        lp[cfg.pad_id] = lp[cfg.bos_id] = float("-inf")
        tok = int(lp.argmax())
        if tok == cfg.eos_id:
            break
        out.append(tok)
        prev = torch.cat([prev, torch.tensor([[tok]])], 1)
    return out


def test_incremental_decoding_matches_full_forward(space):
    model = _model(space).eval()
    src = torch.randint(4, 60, (2, 6))
    prev = torch.randint(4, 60, (2, 5))
    full = model(src, prev)
    enc = model.encode(src)
    cache = model.new_cache()
    steps = [model.decode(prev[:, t : t + 1], enc, cache, start=t) for t in range(prev.shape[1])]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_beam_one_is_greedy(space):
    for seed in range(3):
        model = _model(space, seed).eval()
        src = torch.randint(4, 60, (1, 7))
        src[0, -1] = model.cfg.eos_id
        max_len = int(1.2 * 7 + 4)
        assert beam_search(model, src, beam=1, max_len_a=1.2, max_len_b=4)[0] == _greedy(model, src, max_len)


def test_batched_beam_search_equals_one_by_one(space):
    model = _model(space, 1).eval()
    rows = [[5, 9, 11, 3], [7, 8, 3], [12, 13, 14, 15, 16, 3]]
    width = max(map(len, rows))
    src = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    batched = beam_search(model, src, beam=4, max_len_a=0, max_len_b=12)
    single = [beam_search(model, torch.tensor([r]), beam=4, max_len_a=0, max_len_b=12)[0] for r in rows]
    assert batched == single


# -- fairseq's beam search, written plainly as the reference ---------------------------------------------
@torch.no_grad()
def _fairseq_reference(model, src_ids: list[int], beam: int, lenpen: float, max_len_a: float, max_len_b: int, seen):
    """fairseq's SequenceGenerator + BeamSearch for one sentence: no batch, no cache, no padding beams.

    Each step ranks the 2*beam best extensions of the live hypotheses; an EOS among the first `beam`
    finalizes its hypothesis (score / len**lenpen, len counting EOS), an EOS ranked lower is dropped; the
    first `beam` non-EOS extensions live on; at step max_len only EOS may follow; `beam` finalized
    hypotheses end the search. `seen` counts the events the test must exercise."""
    cfg = model.cfg
    max_len = int(max_len_a * len(src_ids) + max_len_b)
    enc = model.encode(torch.tensor([src_ids]))
    hyps, scores, finalized = [[]], torch.zeros(1), []  # one live hypothesis at the start
    for step in range(max_len + 1):
        n = len(hyps)
        prefix = torch.tensor([[cfg.bos_id] + h for h in hyps])
        enc_n = EncoderOut([s.expand(n, -1, -1) for s in enc.states], enc.pad_mask.expand(n, -1))
        lprobs = model.decode(prefix, enc_n)[:, -1].float().log_softmax(-1)  # the whole prefix, every step
        lprobs[:, [cfg.pad_id, cfg.bos_id]] = float("-inf")
        if step == max_len:
            lprobs[:, : cfg.eos_id] = float("-inf")
            lprobs[:, cfg.eos_id + 1 :] = float("-inf")
        vocab = lprobs.shape[1]
        cand = (scores[:, None] + lprobs).flatten()  # (hypothesis, token) -> summed log-probability
        ranked = cand.argsort(descending=True, stable=True)[: 2 * beam].tolist()
        if len(finalized) < beam:
            seen["dropped EOS"] += sum(i % vocab == cfg.eos_id for i in ranked[beam:])
        for i in ranked[:beam]:
            if i % vocab == cfg.eos_id and cand[i] > float("-inf") and len(finalized) < beam:
                finalized.append((float(cand[i]) / (step + 1) ** lenpen, hyps[i // vocab]))
        if len(finalized) == beam or step == max_len:
            seen["forced EOS" if step == max_len else "full beam"] += 1
            break
        live = [i for i in ranked if i % vocab != cfg.eos_id][:beam]
        hyps, scores = [hyps[i // vocab] + [i % vocab] for i in live], cand[live]
    return max(finalized, key=lambda f: f[0])[1]


@pytest.fixture(scope="module")
def trained(tiny_run_dir):
    """The largest subnet of the shared 8-step run and its tokenizer."""
    run = load_run(tiny_run_dir)
    return run.net.export(run.space.largest()).eval(), run.tokenizer


def _eos_bonus(model, bonus: float):
    """A copy of `model` whose EOS logit is `bonus` higher everywhere (through the final LayerNorm's bias)."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        e = model.embed.weight[model.cfg.eos_id, : model.cfg.decoder_embed_dim]  # the decoder's columns
        model.decoder_norm.bias += bonus * e / e.dot(e)
    return model


# The 8-step model rarely ends a hypothesis before max length, so the sample is split into slices decoded
# with growing EOS bonuses: whatever the training code makes of the model, some slices end at max length
# (forced EOS), some early (a full beam of finalized hypotheses), and EOS is ranked just below the top
# `beam` candidates (dropped) in many steps. The guard below keeps the test from passing vacuously.
@pytest.mark.parametrize(
    "beam, lenpen, max_len_a, max_len_b",
    [
        (4, 0.6, 0.2, 3),
        pytest.param(5, 1.0, 0.3, 1, marks=pytest.mark.slow),
        pytest.param(2, 1.5, 0.3, 2, marks=pytest.mark.slow),
    ],
)
def test_translate_equals_fairseq_reference(trained, beam, lenpen, max_len_a, max_len_b):
    model, tok = trained
    assert model.cfg.prenorm  # _eos_bonus shifts the decoder's final LayerNorm
    lines = read_lines(DATA / "val.en.gz")[:210]
    seen = dict.fromkeys(["forced EOS", "full beam", "dropped EOS"], 0)
    wrong = []
    for k, bonus in enumerate((0, 1, 2, 3, 4, 5, 6)):
        slice_ = lines[30 * k : 30 * (k + 1)]
        m = _eos_bonus(model, bonus)
        got = translate(m, tok, slice_, beam, lenpen, max_len_a, max_len_b, batch_size=16)
        for line, ids, out in zip(slice_, tok.encode(slice_), got):
            if out != tok.decode(_fairseq_reference(m, ids + [EOS], beam, lenpen, max_len_a, max_len_b, seen)):
                wrong.append((bonus, line))
    assert min(seen.values()) > 0, seen
    assert not wrong, f"{len(wrong)} of {len(lines)} differ from fairseq's algorithm, first {wrong[0]}"


def test_blank_lines_translate_to_empty_lines(trained):
    """Nothing in, nothing out: blank lines are not decoded (an untrained model would otherwise emit words for
    them); the other lines translate exactly as they do without the blanks around them."""
    model, tok = trained
    lines = read_lines(DATA / "val.en.gz")[:3]
    mixed = ["", lines[0], "   ", lines[1], "\t", lines[2]]
    got = translate(model, tok, mixed, 2, 1.0, 0.2, 3, batch_size=2)
    assert got[0] == got[2] == got[4] == "" and got[1::2] == translate(model, tok, lines, 2, 1.0, 0.2, 3, batch_size=2)
    assert all(got[1::2])
