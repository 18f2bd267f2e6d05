import random

import torch

from mosnas.decode import beam_search
from tests.conftest import make_supernet


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
