"""Costs are exact: parameter counts equal the exported model's numel, FLOPs equal torch's flop counter."""

import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mosnas.costs import count_flops, count_parameters
from mosnas.models.transformer import num_parameters
from tests.conftest import make_supernet


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
