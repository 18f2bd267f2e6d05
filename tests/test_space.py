import random

import pytest

from mosnas.errors import ArchError, ConfigError
from mosnas.mt.space import Arch, load_space, space_from_dict


def test_arch_json_round_trip_and_hashable(space):
    arch = space.sample(random.Random(3))
    assert Arch.from_json(arch.to_json()) == arch
    assert len({arch, Arch.from_json(arch.to_json())}) == 1
    with pytest.raises(AttributeError):
        arch.encoder_embed_dim = 1  # frozen


def test_samples_are_valid_and_cover_the_space(space):
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(200)]
    for a in archs:
        assert space.validate(a) is a
    assert {a.decoder_layers for a in archs} == set(space.decoder_layers)
    assert {a.encoder_embed_dim for a in archs} == set(space.encoder_embed_dim)
    assert {f for a in archs for f in a.decoder_ffn_dims} == set(space.decoder_ffn_dim)


def test_smallest_largest_and_embedding(space):
    big, small = space.largest(), space.smallest()
    assert big.decoder_layers == max(space.decoder_layers) and set(big.encoder_ffn_dims) == {64}
    assert small.decoder_embed_dim == 16 and set(small.decoder_spans) == {1}
    assert space.embed(big) == [1.0] * space.embed_dim
    emb = space.embed(small)
    assert len(emb) == 10 and all(0 < x <= 1 for x in emb)
    assert emb[0] == 16 / 32 and emb[2] == 1.0  # the encoder depth is fixed in this space


def test_value_outside_the_space_names_dimension_and_choices(space):
    bad = Arch.from_dict({**space.largest().to_dict(), "decoder_ffn_dims": [64, 100]})
    with pytest.raises(ArchError, match=r"decoder_ffn_dims\[1\] = 100 is outside space 'tiny' \(allowed: 32, 48, 64\)"):
        space.validate(bad)
    wrong_len = Arch.from_dict({**space.largest().to_dict(), "decoder_spans": [1]})
    with pytest.raises(ArchError, match="decoder_spans has 1 entries but the arch has 2 layers"):
        space.validate(wrong_len)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"encoder_embed_dim": 16}', "missing"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_arch_json(space, text, message):
    with pytest.raises(ArchError, match=message):
        space.parse_arch(text)


def test_parse_arch_from_file_and_names(space, tmp_path):
    a = space.sample(random.Random(1))
    f = tmp_path / "a.json"
    f.write_text(a.to_json())
    assert space.parse_arch(str(f)) == a
    assert space.parse_arch("largest") == space.largest()
    with pytest.raises(ArchError, match="arch file not found"):
        space.parse_arch(str(tmp_path / "missing.json"))


def test_bundled_spaces_load():
    hat = load_space("configs/spaces/hat_wmt14_ende.yaml")
    assert hat.encoder_ffn_dim == (1024, 2048, 3072) and hat.qkv_dim == 512 and hat.decoder_layers == (1, 2, 3, 4, 5, 6)
    m30k = load_space("configs/spaces/multi30k.yaml")
    assert m30k.encoder_embed_dim == (128, 192, 256)


def test_bad_space_files(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("encoder_embed_dim: [16]\nfoo: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_space(p)
    with pytest.raises(ConfigError, match="search-space file not found"):
        load_space(tmp_path / "none.yaml")
    base = load_space("configs/spaces/tiny.yaml").to_dict()
    with pytest.raises(ConfigError, match="not divisible"):
        space_from_dict({**base, "encoder_heads": [3]})
    with pytest.raises(ConfigError, match="needs at least that many encoder layers"):
        space_from_dict({**base, "decoder_span": [1, 2, 3]})


def _deep_space(space):
    # layer counts that vary on both sides, to exercise truncating and extending per-layer lists
    raw = space.to_dict() | {"name": "deep", "encoder_layers": [1, 2, 3], "decoder_layers": [1, 2, 3]}
    return space_from_dict(raw | {"decoder_span": [1]})


@pytest.mark.parametrize("deep", [False, True])
def test_mutate_and_crossover_give_valid_archs(space, deep):
    space = _deep_space(space) if deep else space
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(20)]
    seen_layers = set()
    for seed in range(300):
        rng = random.Random(seed)
        a, b = rng.choice(archs), rng.choice(archs)
        for child in (space.mutate(a, rng, 0.3), space.mutate(a, rng, 1.0), space.crossover(a, b, rng)):
            assert space.validate(child) is child
            seen_layers.add((child.encoder_layers, child.decoder_layers))
    if deep:
        assert len(seen_layers) == 9  # every combination of layer counts was reached


def test_mutate_and_crossover_respect_their_parents(space):
    rng = random.Random(1)
    a = space.sample(rng)
    assert space.mutate(a, rng, 0.0) == a
    assert space.crossover(a, a, rng) == a
    assert {space.mutate(a, random.Random(s), 1.0) for s in range(30)} != {a}
    big, small = space.largest(), space.smallest()
    for seed in range(50):
        child = space.crossover(big, small, random.Random(seed))
        assert child.encoder_embed_dim in (big.encoder_embed_dim, small.encoder_embed_dim)
        for name in ("encoder_ffn_dims", "decoder_ffn_dims", "decoder_spans"):
            ours, theirs = getattr(big, name), getattr(small, name)
            for i, v in enumerate(getattr(child, name)):
                assert v in {ours[i]} | ({theirs[i]} if i < len(theirs) else set()), (name, i, child)
    assert space.mutate(a, random.Random(7), 0.3) == space.mutate(a, random.Random(7), 0.3)
