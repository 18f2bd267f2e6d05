"""The k-shot generator (K whole supernets under one arch-conditioned simplex), m=1 for every MoS generator, and
the router that sees a constant: reductions, collapse on export (MT and BERT), init from a dense model."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import save_file

from mosnas import bert, config
from mosnas.bert.model import BertEncoder
from mosnas.config import load_config
from mosnas.core import elastic
from mosnas.core.elastic import KSHOT, top_left
from mosnas.core.supernet import Supernet
from mosnas.engine.load import load_run
from mosnas.engine.train import train
from mosnas.errors import ConfigError
from mosnas.pipeline.export import export_arch
from tests.conftest import make_supernet
from tests.test_bert_export import ARCH, tiny_run
from tests.test_bert_model import MINILM, wiki_lines


def _key(name: str) -> str:
    return name.replace(".", "__")


def _arch_dependent(net: Supernet) -> None:
    for r in net.generator.routers.values():  # routers as after training: clearly arch-dependent mixtures
        torch.nn.init.normal_(r.fc2.weight, std=0.5)


def test_the_generator_names_agree():
    assert config.GENERATORS == elastic.GENERATORS and "kshot" in config.GENERATORS


def test_kshot_is_k_whole_supernets_under_one_simplex(space):
    net = make_supernet(space, "kshot", num_experts=3)
    shared = make_supernet(space, "shared")
    gen = net.generator
    assert not gen.shared and set(gen.experts) == set(shared.generator.shared)  # every tensor, not only the FFN
    assert any("embed" in k for k in gen.experts) and any("norm" in k for k in gen.experts)
    assert list(gen.routers) == [KSHOT] and gen.routers[KSHOT].fc2.out_features == 3
    for name, p in gen.experts.items():
        assert p.shape == (3, *shared.generator.shared[name].shape), name
    _arch_dependent(net)
    arch = space.sample(random.Random(4))
    a = net.embed(arch)
    lam = gen.mixing(a, "embed.weight")
    assert lam.shape == (3,) and torch.allclose(lam.sum(), torch.tensor(1.0))
    assert torch.equal(lam, gen.mixing(a, "decoder_layers.0.fc2.bias"))  # one simplex for all layers
    with torch.no_grad():
        weights = net.weights(arch)
    for name, w in weights.items():  # W = sum_k lambda_k W_k[top-left]
        want = sum(lam[k] * top_left(gen.experts[_key(name)][k], tuple(w.shape)) for k in range(3))
        assert torch.allclose(w, want, atol=1e-6), name


def test_kshot_mixture_depends_on_the_arch(space):
    """Export equality for kshot is tests/test_export.py's (parametrized over every generator); here: the simplex
    the exports collapse really differs between archs once the router has trained."""
    net = make_supernet(space, "kshot", num_experts=3)
    _arch_dependent(net)
    rng = random.Random(1)
    a, b = space.sample(rng), space.sample(rng)
    mix = [net.generator.mixing(net.embed(x), "encoder_layers.0.fc1.weight") for x in (a, b)]
    assert (mix[0] - mix[1]).abs().max() > 1e-3


def test_kshot_with_one_copy_equals_shared_bit_for_bit(space):
    shared, kshot = make_supernet(space, "shared"), make_supernet(space, "kshot", num_experts=1)
    kshot.generator.load_dense({n.replace("__", "."): p.detach() for n, p in shared.generator.shared.items()})
    _arch_dependent(kshot)  # with one copy the softmax is exactly 1 whatever the logits
    src, prev = torch.randint(4, 100, (2, 6)), torch.randint(4, 100, (2, 5))
    for arch in (space.largest(), space.smallest(), space.sample(random.Random(0))):
        ws, wk = shared.weights(arch), kshot.weights(arch)
        assert all(torch.equal(ws[n], wk[n]) for n in ws)
        assert torch.equal(shared.eval()(src, prev, arch), kshot.eval()(src, prev, arch))


def test_kshot_gradients_reach_every_copy_and_the_router(space):
    net = make_supernet(space, "kshot", num_experts=2)
    src, prev = torch.randint(4, 100, (2, 5)), torch.randint(4, 100, (2, 4))
    net(src, prev, space.largest()).logsumexp(-1).mean().backward()
    for name in ("embed__weight", "encoder_layers__0__self_attn_norm__weight", "decoder_layers__1__fc1__weight"):
        grad = net.generator.experts[name].grad
        assert all(grad[k].abs().sum() > 0 for k in range(2)), name
    assert net.generator.routers[KSHOT].fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("expert_init", ["independent", "copy"])
def test_kshot_init_keeps_the_dense_init(space, expert_init):
    """Independent copies are drawn sqrt(K) wider, so a near-uniform mix has the dense init's scale; constants
    (LayerNorm's ones, zero biases) stay what they are: a mix of equal constants is that constant."""
    net = make_supernet(space, "kshot", num_experts=4, expert_init=expert_init)
    e = net.generator.experts
    norm = e["encoder_layers__0__ffn_norm__weight"]
    assert torch.equal(norm, torch.ones_like(norm)) and not e["decoder_layers__0__fc1__bias"].any()
    assert torch.equal(e["embed__weight"][0], e["embed__weight"][1]) == (expert_init == "copy")
    with torch.no_grad():
        weights = net.weights(space.largest())
    for name, w in weights.items():
        if name.endswith(("fc1.weight", "fc2.weight")):
            assert w.std().item() == pytest.approx((2 / sum(w.shape)) ** 0.5, rel=0.10), name
    embed = weights["embed.weight"][1:]  # row 0 is padding (zero)
    assert embed.std().item() == pytest.approx(e["embed__weight"].shape[-1] ** -0.5, rel=0.10)


def test_kshot_loads_a_dense_model(space, tmp_path):
    """supernet.pretrained (a dense export): into every copy (copy) or copy 0 only (pretrained-first)."""
    dense = make_supernet(space, "shared").export(space.largest())
    path = tmp_path / "dense.safetensors"
    save_file(dict(dense.state_dict()), str(path))
    net = make_supernet(space, "kshot", expert_init="copy", pretrained=str(path))
    for name, t in dense.state_dict().items():
        assert all(torch.equal(net.generator.experts[_key(name)][k], t) for k in range(2)), name
    net = make_supernet(space, "kshot", expert_init="pretrained-first", pretrained=str(path))
    emb = net.generator.experts["embed__weight"]
    assert torch.equal(emb[0], dense.embed.weight) and not torch.equal(emb[1], dense.embed.weight)


def test_bert_kshot_exports_a_student_equal_to_the_supernet(tmp_path):
    run = tiny_run(tmp_path, "kshot")
    assert not run.net.generator.shared  # embeddings, LayerNorms and the pooler are mixed too
    _arch_dependent(run.net)
    folder = export_arch(run, ARCH, tmp_path / "export")
    model, tokenizer = bert.load_model(folder)
    assert isinstance(model, BertEncoder)
    batch = tokenizer(wiki_lines(2), padding=True, return_tensors="pt")
    with torch.no_grad():
        want = run.net(batch["input_ids"], batch["attention_mask"], ARCH)["hidden"]
        got = model(batch["input_ids"], batch["attention_mask"])["hidden"]
    assert torch.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("init", ["teacher", "teacher-first"])
def test_bert_kshot_starts_from_the_teacher(init):
    """bert.init=teacher copies the teacher into every copy, so the largest arch is the teacher; teacher-first
    copies it into copy 0 only (the others are fresh BERT draws), as for the other generators."""
    from mosnas.bert.teacher import load_teacher

    overrides = ["family=bert", f"supernet.space={MINILM}", "supernet.generator=kshot", f"bert.init={init}"]
    cfg = load_config(None, [*overrides, "supernet.dropout=0", "supernet.attention_dropout=0"])
    space = bert.load_space(MINILM)
    net = Supernet(space, 30522, bert.supernet_config(cfg), bert).eval()
    teacher = load_teacher(cfg.bert.teacher)
    query = teacher.model.encoder.layer[2].attention.self.query.weight
    experts = net.generator.experts["encoder__layer__2__attention__self__query__weight"]
    assert torch.equal(experts[0], query) and torch.equal(experts[1], query) == (init == "teacher")
    if init == "teacher":
        batch = teacher.tokenizer(wiki_lines(1), return_tensors="pt")
        want = teacher.outputs(batch["input_ids"], batch["attention_mask"])
        with torch.no_grad():
            got = net(batch["input_ids"], batch["attention_mask"], space.largest())
        assert torch.allclose(got["hidden"], want["hidden"], atol=1e-4)


@pytest.mark.parametrize("generator", ["layer", "neuron", "kshot"])
def test_one_expert_trains_and_exports(tiny_cfg, generator):
    """m=1 (the ablation's plain sharing with a router that can do nothing) trains, and collapses exactly."""
    cfg = tiny_cfg(f"supernet.generator={generator}", "supernet.num_experts=1", "train.max_steps=2")
    run = load_run(train(cfg, show_progress=False))
    assert all(p.shape[0] == 1 for p in run.net.generator.experts.values())
    arch = run.space.sample(random.Random(3))
    src, prev = torch.randint(4, run.net.vocab_size, (2, 7)), torch.randint(4, run.net.vocab_size, (2, 5))
    with torch.no_grad():
        assert (run.net.export(arch)(src, prev) - run.net(src, prev, arch)).abs().max() <= 1e-5


@pytest.mark.parametrize("generator", ["layer", "neuron", "kshot"])
def test_a_constant_router_input_mixes_every_arch_alike(space, generator):
    name = "encoder_layers.0.fc1.weight"
    mixes = {}
    for router_input in ("arch", "constant"):
        net = make_supernet(space, generator, num_experts=3, router_input=router_input)
        _arch_dependent(net)
        archs = (space.largest(), space.smallest(), space.sample(random.Random(2)))
        mixes[router_input] = [net.generator.mixing(net.embed(a), name) for a in archs]
        if router_input == "constant":  # the very mixture the generated weights use
            small = net.generator(net.embed(archs[1]), {name: (8, 16)}, {name: name})[name]
            big = net.generator(net.embed(archs[0]), {name: (8, 16)}, {name: name})[name]
            assert torch.equal(small, big)
    same, differ = mixes["constant"], mixes["arch"]
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])
    assert (differ[0] - differ[1]).abs().max() > 1e-3 and (differ[1] - differ[2]).abs().max() > 1e-4


def test_router_input_is_a_checked_setting():
    assert load_config(None, ["supernet.router_input=constant"]).supernet.router_input == "constant"
    assert load_config(None, []).supernet.router_input == "arch"
    with pytest.raises(ConfigError, match="supernet.router_input: unknown value 'zeros'"):
        load_config(None, ["supernet.router_input=zeros"])
    assert load_config(None, ["supernet.generator=kshot"]).supernet.generator == "kshot"
