"""Collapse is exact: the exported dense model is the supernet's subnet, to float tolerance."""

import random

import pytest
import torch

from mosnas.costs import count_parameters
from mosnas.export import load_model, save_model
from mosnas.models.transformer import Transformer, num_parameters
from tests.conftest import make_supernet


@pytest.mark.parametrize("generator", ["shared", "layer", "neuron"])
@pytest.mark.parametrize("share", [True, False])
def test_exported_logits_equal_supernet(space, generator, share):
    net = make_supernet(space, generator, num_experts=3, share_embeddings=share)
    for r in net.generator.routers.values():  # routers as after training: arch-dependent mixtures
        torch.nn.init.normal_(r.fc2.weight, std=0.5)
    net.eval()
    rng = random.Random(1)
    src = torch.randint(4, 100, (3, 9))
    src[0, 6:] = 0  # padding
    prev = torch.randint(4, 100, (3, 7))
    for _ in range(6):
        arch = space.sample(rng)
        model = net.export(arch)
        assert isinstance(model, Transformer)
        assert not any("router" in n or "expert" in n for n, _ in model.named_parameters())
        diff = (model(src, prev) - net(src, prev, arch)).abs().max().item()
        assert diff <= 1e-5, diff
        assert num_parameters(model) == count_parameters(arch, space.qkv_dim, 100, model.cfg.share_all_embeddings)


def test_saved_model_loads_without_supernet(space, tmp_path, spm_model):
    import json

    net = make_supernet(space, "neuron", vocab=spm_model.vocab).eval()
    arch = space.sample(random.Random(5))
    model = net.export(arch)
    out = save_model(model, tmp_path / "m", spm_model.path, arch)
    loaded, tok = load_model(out)
    src, prev = torch.randint(4, spm_model.vocab, (2, 5)), torch.randint(4, spm_model.vocab, (2, 4))
    assert torch.equal(loaded(src, prev), model(src, prev))
    assert json.loads((out / "arch.json").read_text()) == arch.to_dict()
    assert tok.get_piece_size() == spm_model.vocab


def test_load_model_rejects_incomplete_folder(tmp_path):
    from mosnas.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not an exported model folder"):
        load_model(tmp_path)
