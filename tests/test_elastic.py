"""The MoS generators: reductions, gradients, routing, layout."""

import random

import pytest
import torch

from mosnas import mt
from mosnas.config import SupernetConfig
from mosnas.core.elastic import WeightGenerator, _key
from mosnas.core.supernet import Supernet
from mosnas.engine.load import load_run
from mosnas.engine.train import train
from mosnas.errors import ConfigError
from mosnas.mt.space import load_space
from tests.conftest import make_supernet


def _copy_shared_into_experts(shared_net, mos_net):
    """Give an m=1 MoS supernet exactly the shared supernet's tensors."""
    dense = {n.replace("__", "."): p.detach() for n, p in shared_net.generator.shared.items()}
    mos_net.generator.load_dense(dense, experts="all")


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_one_expert_equals_shared_bit_for_bit(space, generator):
    shared = make_supernet(space, "shared")
    mos = make_supernet(space, generator, num_experts=1)
    _copy_shared_into_experts(shared, mos)
    # Random routers: with one expert the softmax is exactly 1 whatever the logits are.
    for r in mos.generator.routers.values():
        torch.nn.init.normal_(r.fc2.weight)
    rng = random.Random(0)
    src, prev = torch.randint(4, 100, (3, 7)), torch.randint(4, 100, (3, 6))
    for _ in range(5):
        arch = space.sample(rng)
        ws, wm = shared.weights(arch), mos.weights(arch)
        assert ws.keys() == wm.keys()
        for name in ws:
            assert torch.equal(ws[name], wm[name]), name
        assert torch.equal(shared.eval()(src, prev, arch), mos.eval()(src, prev, arch))


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_gradients_reach_every_expert_and_router(space, generator):
    net = make_supernet(space, generator, num_experts=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    src, prev = torch.randint(4, 100, (2, 5)), torch.randint(4, 100, (2, 4))
    arch = space.largest()
    for _ in range(2):
        opt.zero_grad()
        net(src, prev, arch).logsumexp(-1).mean().backward()
        for name, p in net.generator.experts.items():
            for k in range(3):
                assert p.grad[k].abs().sum() > 0, f"expert {k} of {name} got no gradient"
        for name, r in net.generator.routers.items():
            assert r.fc2.weight.grad.abs().sum() > 0, name
            assert r.fc1.weight.grad.abs().sum() > 0, name
        opt.step()


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_archs_mix_differently_from_the_start(space, generator):
    net = make_supernet(space, generator)
    name = "decoder_layers.0.fc1.weight"
    a, b = (net.generator.mixing(net.embed(arch), name) for arch in (space.largest(), space.smallest()))
    assert (a - b).abs().max() > 1e-3  # arch-dependent at step 0: the symmetry `copy` experts need broken
    assert (a - 0.5).abs().max() < 0.25  # yet near-uniform: no expert dominates before training
    assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)))


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_copy_experts_diverge_in_real_training(tiny_cfg, generator):
    """Identical experts with zero router outputs were a fixed point (differences stayed 0.0). With
    arch-dependent mixtures, the sandwich's archs weight each expert's gradient differently."""
    cfg = tiny_cfg(f"supernet.generator={generator}", "supernet.expert_init=copy", "train.max_steps=4")
    torch.manual_seed(cfg.train.seed)
    initial = Supernet(load_space(cfg.supernet.space), 200, cfg.supernet, mt)  # what train() starts from
    net = load_run(train(cfg, show_progress=False)).net
    big, small = net.embed(net.space.largest()), net.embed(net.space.smallest())
    for key, experts in net.generator.experts.items():
        # Layers every arch of the sandwich trains. (Decoder layer 1 is trained by the 2-layer archs only,
        # here the largest alone: Adam normalizes away the scale alpha_k of one arch's gradient, so its
        # experts move alike, up to Adam's epsilon: relative spread ~1e-5..1e-4.)
        if key.endswith("weight") and not key.startswith("decoder_layers__1"):
            spread = (experts[0] - experts[1]).abs().max() / experts[0].abs().max()
            assert spread > 1e-3, (key, spread.item())  # 4e-3 .. 1.4e-2 after 4 steps
    name = "encoder_layers.1.fc2.weight"
    a, b = net.generator.mixing(big, name), net.generator.mixing(small, name)
    assert (a - b).abs().max() > 1e-3
    assert (a - initial.generator.mixing(big, name)).abs().max() > 1e-4  # the routers learned too


@pytest.mark.parametrize("generator", ["shared", "layer", "neuron"])
@pytest.mark.parametrize("num_experts", [1, 2, 4])
@pytest.mark.parametrize("expert_init", ["independent", "copy"])
def test_generated_weights_start_at_the_dense_init_scale(space, generator, num_experts, expert_init):
    """A uniform mix of m independent experts used to shrink the std by 1/sqrt(m) (0.144, 0.101, 0.074 here).
    Tolerance 10%: the std of >= 2048 xavier-uniform draws is within ~2% of its value, and near-uniform
    mixtures add sqrt(1 + var(logits)) - 1 ~ 2-4%; a 1/sqrt(2) shrink is 29% off."""
    net = make_supernet(space, generator, num_experts=num_experts, expert_init=expert_init)
    with torch.no_grad():
        weights = net.weights(space.largest())
    for name, w in weights.items():
        if name.endswith(("fc1.weight", "fc2.weight")):
            xavier = (2 / sum(w.shape)) ** 0.5  # the dense Transformer's init of this shape
            assert w.std().item() == pytest.approx(xavier, rel=0.10), name


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_routing_stays_fp32_under_autocast(space, generator):
    net = make_supernet(space, generator, num_experts=3, mos_attention=True)
    for r in net.generator.routers.values():  # arch-dependent mixtures, as after training
        torch.nn.init.normal_(r.fc2.weight, std=0.5)
    arch = space.sample(random.Random(2))
    a = net.embed(arch)
    names = ["encoder_layers.0.fc1.weight", "decoder_layers.0.cross_attn.q_proj.weight"]
    with torch.no_grad():
        plain = [net.generator.mixing(a, n) for n in names]
        weights = net.weights(arch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = [net.generator.mixing(a, n) for n in names]
            auto_weights = net.weights(arch)
    for x, y in zip(plain, mixed):
        assert y.dtype == torch.float32 and torch.equal(x, y)
    for name in weights:  # export computes these in fp32: training mixes the very same tensors
        assert auto_weights[name].dtype == torch.float32 and torch.equal(weights[name], auto_weights[name]), name


def test_neuron_router_slicing_keeps_each_neurons_logits():
    m, out_max, out = 3, 8, 5
    shapes = {
        "encoder_layers.0.fc1.weight": (out_max, 4),
        "encoder_layers.0.fc1.bias": (out_max,),
        "encoder_layers.0.fc2.weight": (4, out_max),
        "encoder_layers.0.fc2.bias": (4,),
    }
    gen = WeightGenerator(shapes, "neuron", m, 8, 10, {n: mt.mixed_group(n, False) for n in shapes})
    router = gen.routers[_key("encoder_layers.0.fc1")]
    torch.nn.init.normal_(router.fc2.weight)
    torch.nn.init.normal_(router.fc2.bias)
    a = torch.rand(10)
    full = router(a).view(out_max, m)  # neuron-major: row i = neuron i's m logits
    narrow = gen.mixing(a, "encoder_layers.0.fc1.weight", out=out)
    assert torch.allclose(narrow, full[:out].softmax(-1))
    # An expert-major reading of the same logits would pair neuron 1 with other logits:
    expert_major = router(a).view(m, out_max).t()[:out].softmax(-1)
    assert not torch.allclose(narrow, expert_major)
    # And the generated weight row i mixes the experts with neuron i's coefficients.
    E = gen.experts[_key("encoder_layers.0.fc1.weight")]
    with torch.no_grad():
        E.normal_()
    name = "encoder_layers.0.fc1.weight"
    w = gen(a, {name: (out, 3)}, {name: name})
    i = 4
    expected = sum(narrow[i, k] * E[k, i, :3] for k in range(m))
    assert torch.allclose(w["encoder_layers.0.fc1.weight"][i], expected, atol=1e-6)


def test_expert_init_copy_vs_independent(space):
    copy = make_supernet(space, "layer", expert_init="copy")
    indep = make_supernet(space, "layer", expert_init="independent")
    for name, p in copy.generator.experts.items():
        if name.endswith("weight"):
            assert torch.equal(p[0], p[1]), name
            assert not torch.equal(indep.generator.experts[name][0], indep.generator.experts[name][1]), name


def test_pretrained_first_loads_expert_zero(space, tmp_path):
    from safetensors.torch import save_file

    dense = make_supernet(space, "shared").export(space.largest())
    path = tmp_path / "dense.safetensors"
    save_file(dict(dense.state_dict()), str(path))
    net = make_supernet(space, "neuron", expert_init="pretrained-first", pretrained=str(path))
    e = net.generator.experts[_key("encoder_layers.1.fc2.weight")]
    assert torch.equal(e[0], dense.encoder_layers[1].fc2.weight)
    assert not torch.equal(e[1], dense.encoder_layers[1].fc2.weight)
    # With a pretrained expert 0 and `copy`, every expert is the pretrained tensor.
    net = make_supernet(space, "neuron", expert_init="copy", pretrained=str(path))
    expert_1 = net.generator.experts[_key("encoder_layers.1.fc2.weight")][1]
    assert torch.equal(expert_1, dense.encoder_layers[1].fc2.weight)


def test_ffn_only_by_default_attention_optional(space):
    default = make_supernet(space, "layer")
    names = {k.replace("__", ".") for k in default.generator.experts}
    assert names and all(".fc1." in n or ".fc2." in n for n in names)
    with_attn = make_supernet(space, "layer", mos_attention=True)
    assert any("self_attn.q_proj" in k.replace("__", ".") for k in with_attn.generator.experts)
    assert not any("embed" in k or "norm" in k for k in with_attn.generator.experts)


@pytest.mark.parametrize("generator", ["layer", "neuron"])
def test_a_mos_generator_that_mixes_nothing_is_an_error(space, generator):
    """MoS over no tensor would silently be plain sharing: a family whose groups name none of the model's
    tensors (e.g. other tensor names) is refused, naming the setting."""
    shapes = {"encoder.fc1.weight": (8, 4), "encoder.fc1.bias": (8,)}
    with pytest.raises(ConfigError, match=f"supernet.generator={generator} mixes no tensor"):
        WeightGenerator(shapes, generator, 2, 8, 10, {})
    with pytest.raises(ConfigError, match="mixes no tensor"):  # groups that name tensors the model lacks
        WeightGenerator(shapes, generator, 2, 8, 10, {"decoder_layers.0.fc1.weight": ("l", "l.fc1")})
    assert not WeightGenerator(shapes, "shared", 2, 8, 10, {}).experts  # plain sharing mixes nothing, by design
    with pytest.raises(ConfigError, match="mixes no tensor"):  # through the supernet: a family that mixes nothing

        class Unmixed:
            dense_config, dense_model = staticmethod(mt.dense_config), staticmethod(mt.dense_model)
            mixed_group = staticmethod(lambda name, mos_attention: None)

        Supernet(space, 100, SupernetConfig(generator=generator, router_hidden=8), Unmixed)
