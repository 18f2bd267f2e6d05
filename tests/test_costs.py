"""Costs are exact: parameter counts equal the exported model's numel, FLOPs equal torch's flop counter."""

import dataclasses
import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mosnas.config import SupernetConfig
from mosnas.mt import dense_config
from mosnas.mt.costs import count_flops, count_parameters, count_parameters_hat
from mosnas.mt.space import Arch, load_space
from mosnas.mt.transformer import Transformer, num_parameters
from tests.conftest import ROOT, make_supernet


def _counted_flops(model, src_len: int, tgt_len: int) -> int:
    src = torch.randint(4, model.cfg.vocab_size, (1, src_len))
    prev = torch.randint(4, model.cfg.vocab_size, (1, tgt_len))
    # The counter has no formula for CPU's fused attention kernel (it would count attention as 0 FLOPs);
    # the math backend runs the score and value products as bmm, which it counts.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(src, prev)
    return counter.get_total_flops()


@pytest.mark.parametrize("share", [True, False])
def test_flops_equal_flop_counter(space, share):
    net = make_supernet(space, "shared", vocab=100, share_embeddings=share)
    rng = random.Random(0)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(5)]
    for i, arch in enumerate(archs):
        src_len, tgt_len = 3 + 2 * i, 11 - i  # unequal lengths catch a swapped src/tgt term
        expected = _counted_flops(net.export(arch), src_len, tgt_len)
        assert count_flops(arch, space.qkv_dim, 100, src_len, tgt_len) == expected, arch


def test_flops_grow_with_the_arch(space):
    small, big = space.smallest(), space.largest()
    assert count_flops(small, space.qkv_dim, 100, 30, 30) < count_flops(big, space.qkv_dim, 100, 30, 30)
    assert count_flops(big, space.qkv_dim, 100, 30, 30) < count_flops(big, space.qkv_dim, 100, 31, 30)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("prenorm", [True, False])
def test_parameters_equal_exported_numel(space, share, prenorm):
    net = make_supernet(space, "shared", vocab=100, share_embeddings=share, prenorm=prenorm)
    rng = random.Random(1)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]:
        model = net.export(arch)
        expected = count_parameters(arch, space.qkv_dim, 100, model.cfg.share_all_embeddings, prenorm)
        assert num_parameters(model) == expected, arch


HAT_SPACE = load_space(ROOT / "configs" / "spaces" / "hat_wmt14_ende.yaml")


@pytest.mark.parametrize("share", [True, False])
def test_parameters_grow_with_every_width_in_hat_space(share):
    """e640/d512 used to count two embedding tables (100.7M) and e640/d640 one (91.4M): parameter budgets
    rejected archs for being narrower. Now widening any dimension never lowers the count."""
    space, vocab = HAT_SPACE, 32000
    count = lambda a: count_parameters(a, space.qkv_dim, vocab, share, prenorm=False)
    largest = space.largest()
    narrow_decoder = dataclasses.replace(largest, decoder_embed_dim=512)
    assert count(narrow_decoder) < count(largest)
    rng = random.Random(0)
    for arch in [space.smallest()] + [space.sample(rng) for _ in range(50)]:
        for field in ("encoder_embed_dim", "decoder_embed_dim"):
            wider = dataclasses.replace(arch, **{field: 640})
            assert count(arch) <= count(wider), (field, arch)
        wider_ffn = dataclasses.replace(arch, encoder_ffn_dims=(3072,) * arch.encoder_layers)
        assert count(arch) <= count(wider_ffn)
    with torch.device("meta"):  # the dense model of e640/d512 holds exactly what is counted
        cfg = SupernetConfig(share_embeddings=share, prenorm=False)
        model = Transformer(dense_config(narrow_decoder, space, vocab, cfg))
    assert num_parameters(model) == count(narrow_decoder)


@pytest.mark.parametrize("share", [True, False])
def test_hat_convention_counts_all_but_embeddings(space, share):
    """HAT's tables leave out embeddings and the (tied) output layer; Transformer-Base is 44.1M there."""
    net = make_supernet(space, "shared", vocab=100, share_embeddings=share)
    rng = random.Random(2)
    for arch in [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(4)]:
        model = net.export(arch)
        body = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("embed.weight"))
        assert count_parameters_hat(arch, space.qkv_dim) == body
    base = Arch(512, 512, (2048,) * 6, (8,) * 6, (2048,) * 6, (8,) * 6, (8,) * 6, (1,) * 6)
    assert round(count_parameters_hat(base, 512, prenorm=False) / 1e6, 1) == 44.1
