"""Collapse is exact: the exported dense model is the supernet's subnet, to float tolerance."""

import dataclasses
import random

import pytest
import torch

from mosnas.mt.costs import count_parameters
from mosnas.mt.export import load_model, save_model
from mosnas.mt.transformer import Transformer, TransformerConfig, num_parameters, sinusoids
from tests.conftest import make_supernet


@pytest.mark.parametrize("generator", ["shared", "layer", "neuron", "kshot"])
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


def _position_code(model, side: str, length: int = 12) -> torch.Tensor:
    """What the model adds for positions 0..length-1 on `side`: its embedding of all-zero rows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("embed.weight"):
                p.zero_()
        return model.eval()._embed(torch.full((1, length), 5), side)[0]  # (length, width)


@pytest.mark.parametrize("share", [True, False])
def test_position_codes_nest_across_widths(space, share):
    """A narrower arch's position code is the prefix of the widest one's (HAT slices one max-width code),
    so every width sees the same codes in the shared table; before, each width had its own frequencies."""
    net = make_supernet(space, "shared", share_embeddings=share)
    widest = _position_code(net.export(space.largest()), "encoder")
    assert widest.shape == (12, 32)
    for e, d in [(16, 24), (24, 16), (32, 16)]:
        arch = dataclasses.replace(space.largest(), encoder_embed_dim=e, decoder_embed_dim=d)
        model = net.export(arch)
        assert torch.equal(_position_code(model, "encoder"), widest[:, :e])
        assert torch.equal(_position_code(model, "decoder"), widest[:, :d])


def test_models_exported_before_position_dim_keep_their_codes(space):
    net = make_supernet(space, "shared")
    arch = dataclasses.replace(space.smallest(), encoder_embed_dim=16, decoder_embed_dim=16)
    raw = net.export(arch).cfg.to_dict()
    del raw["position_dim"]  # an old config.json
    old = Transformer(TransformerConfig.from_dict(raw))
    assert old.cfg.position_dim == 0
    assert torch.equal(_position_code(old, "encoder"), sinusoids(torch.arange(12), 16))


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_unequal_widths_export_one_shared_table(space, generator):
    """With shared embeddings an arch of encoder width e and decoder width d holds one (V, max(e, d)) table,
    as the supernet does, and still equals the supernet."""
    net = make_supernet(space, generator, num_experts=2).eval()
    arch = dataclasses.replace(space.sample(random.Random(3)), encoder_embed_dim=32, decoder_embed_dim=16)
    model = net.export(arch)
    assert model.embed.weight.shape == (100, 32) and not hasattr(model, "decoder_embed")
    src, prev = torch.randint(4, 100, (2, 6)), torch.randint(4, 100, (2, 5))
    assert (model(src, prev) - net(src, prev, arch)).abs().max() <= 1e-5
    assert num_parameters(model) == count_parameters(arch, space.qkv_dim, 100, True)
