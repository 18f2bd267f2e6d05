"""The BERT family's model half: the dense encoder equals Hugging Face's BertModel, the real teacher loads
offline, the supernet's largest arch starts as the teacher, the space and its exact costs."""

from __future__ import annotations

import gzip
import random
from dataclasses import replace

import pytest
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from mosnas import bert
from mosnas.bert.costs import count_flops, count_parameters
from mosnas.bert.latency_parts import latency_parts, part_workload, space_parts
from mosnas.bert.model import BertDenseConfig, BertEncoder
from mosnas.bert.space import Arch
from mosnas.bert.teacher import load_teacher, teacher_path
from mosnas.config import LatencyConfig, load_config
from mosnas.core.space import Space
from mosnas.core.supernet import Supernet
from mosnas.errors import ArchError, ConfigError, PredictorError
from tests.conftest import ROOT

WIKI = ROOT.parent / "shared" / "data" / "wikitext" / "wikitext-2-raw" / "wiki.test.raw.gz"
MINILM = ROOT / "configs" / "spaces" / "bert_minilm.yaml"


def wiki_lines(n: int) -> list[str]:
    """The first `n` paragraphs of WikiText-2 (test split), cut to 200 characters: real text of real lengths."""
    with gzip.open(WIKI, "rt", encoding="utf-8") as f:
        return [line.strip()[:200] for line in f if len(line) > 80][:n]


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


def hf_twin(cfg: BertDenseConfig, model: BertEncoder) -> transformers.BertModel:
    """A transformers BertModel of the same shape holding `model`'s weights (eager attention)."""
    hc = transformers.BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        intermediate_size=cfg.ffn,
        attn_implementation="eager",
    )
    twin = transformers.BertModel(hc).eval()
    twin.load_state_dict(model.state_dict(), strict=True)  # the same names, every one of them
    return twin


def test_dense_encoder_equals_hugging_face_bert():
    cfg = BertDenseConfig(vocab_size=120, hidden=48, layers=2, heads=4, ffn=80)
    model = BertEncoder(cfg).eval()
    twin = hf_twin(cfg, model)
    assert list(model.state_dict()) == list(twin.state_dict())
    ids = torch.randint(1, 120, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    types = (torch.arange(11) > 5).long().expand(3, -1)
    ours = model(ids, mask, types, output_attentions=True)
    theirs = twin(
        input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True, output_attentions=True
    )
    keep = mask.bool()  # padded positions are not outputs anyone reads
    assert torch.allclose(ours["hidden"][keep], theirs.last_hidden_state[keep], atol=1e-5)
    assert len(ours["hidden_states"]) == cfg.layers + 1
    for a, b in zip(ours["hidden_states"], theirs.hidden_states):
        assert torch.allclose(a[keep], b[keep], atol=1e-5)
    assert torch.allclose(ours["pooled"][[0, 2]], theirs.pooler_output[[0, 2]], atol=1e-5)
    assert torch.allclose(ours["attentions_last"][0], theirs.attentions[-1][0], atol=1e-6)
    q, k, v = ours["last_qkv"]
    last = twin.encoder.layer[-1].attention.self
    before = theirs.hidden_states[-2]
    assert torch.allclose(q, last.query(before), atol=1e-5) and torch.allclose(v, last.value(before), atol=1e-5)
    assert k.shape == (3, 11, 48)


def test_dense_encoder_builds_on_meta_and_draws_berts_init():
    cfg = BertDenseConfig(vocab_size=500, hidden=64, layers=1, heads=4, ffn=128)
    with torch.device("meta"):
        meta = BertEncoder(cfg)
    assert all(p.is_meta for p in meta.parameters())
    model = BertEncoder(cfg)
    fc = model.encoder.layer[0].intermediate.dense
    assert 0.018 < fc.weight.std().item() < 0.022 and fc.bias.abs().max() == 0
    assert model.embeddings.word_embeddings.weight[0].abs().max() == 0  # [PAD]
    assert torch.all(model.encoder.layer[0].output.LayerNorm.weight == 1)
    with pytest.raises(ValueError, match="not divisible"):
        BertDenseConfig(vocab_size=10, hidden=30, layers=1, heads=4, ffn=8)


def test_teacher_loads_offline_with_its_wordpiece_and_qkv_hooks(teacher):
    assert teacher.config.hidden_size == 384 and teacher.config.num_hidden_layers == 6
    assert len(teacher.tokenizer) == 30522
    batch = teacher.tokenizer(wiki_lines(2), padding=True, return_tensors="pt")
    out = teacher.outputs(batch["input_ids"], batch["attention_mask"], output_attentions=True)
    assert out["hidden"].shape == (2, batch["input_ids"].shape[1], 384) and len(out["hidden_states"]) == 7
    last = teacher.model.encoder.layer[-1].attention.self
    with torch.no_grad():
        assert torch.allclose(out["last_qkv"][1], last.key(out["hidden_states"][-2]), atol=1e-5)
    assert out["attentions_last"].shape[1] == 12
    assert not last.key._forward_hooks  # the hooks are removed again


def test_a_bad_teacher_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not a Hugging Face model folder"):
        load_teacher(str(tmp_path / "nowhere"))
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ConfigError, match="a BERT is needed"):
        load_teacher(str(tmp_path))
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_act": "relu"}')
    with pytest.raises(ConfigError, match="uses relu with absolute positions; the students are BERTs with exact GELU"):
        load_teacher(str(tmp_path))


@pytest.mark.parametrize("generator", ["shared", "layer", "neuron"])
def test_largest_arch_starts_as_the_teacher(generator, teacher):
    """bert.init=teacher: the supernet's largest arch (the teacher's shape) reproduces the teacher, for plain
    sharing and for MoS with every expert copied from the teacher's FFN."""
    cfg = load_config(
        None,
        [
            "family=bert",
            f"supernet.space={MINILM}",
            f"supernet.generator={generator}",
            "supernet.dropout=0",
            "supernet.attention_dropout=0",
        ],
    )
    sn = bert.supernet_config(cfg)
    assert sn.expert_init == "copy" and sn.pretrained.endswith("model.safetensors")
    space = bert.load_space(MINILM)
    net = Supernet(space, 30522, sn, bert).eval()
    batch = teacher.tokenizer(wiki_lines(1), return_tensors="pt")
    want = teacher.outputs(batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        got = net(batch["input_ids"], batch["attention_mask"], space.largest())
    assert torch.allclose(got["hidden"], want["hidden"], atol=1e-4)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got["last_qkv"], want["last_qkv"]))


def test_init_settings_choose_the_experts_start():
    base = ["family=bert", f"supernet.space={MINILM}"]
    first = bert.supernet_config(load_config(None, [*base, "bert.init=teacher-first"]))
    assert first.expert_init == "pretrained-first" and first.pretrained
    rand = load_config(None, [*base, "bert.init=random"])
    assert bert.supernet_config(rand) == rand.supernet and not rand.supernet.pretrained
    assert bert.init_info(load_config(None, base))["expert_init"] == "copy"
    with pytest.raises(ConfigError, match="bert.init=teacher loads the teacher"):
        load_config(None, [*base, "supernet.pretrained=x.safetensors", "supernet.expert_init=copy"])
    with pytest.raises(ConfigError, match="bert.init"):
        load_config(None, [*base, "bert.init=zeros"])


def test_moS_mixes_the_ffn_and_attention_only_when_asked():
    ffn = ("encoder.layer.3.intermediate.dense.weight", "encoder.layer.3.output.dense.bias")
    assert bert.mixed_group(ffn[0], False) == ("encoder.layer.3", "encoder.layer.3.intermediate.dense")
    assert bert.mixed_group(ffn[1], False) == ("encoder.layer.3", "encoder.layer.3.output.dense")
    attn = ("encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.output.dense.bias")
    assert all(bert.mixed_group(n, False) is None for n in attn)
    assert bert.mixed_group(attn[1], True) == ("encoder.layer.0", "encoder.layer.0.attention.output.dense")
    for never in ("encoder.layer.0.attention.output.LayerNorm.weight", "pooler.dense.weight"):
        assert bert.mixed_group(never, True) is None


def test_spaces_span_the_students_and_refuse_heads_that_do_not_divide(tmp_path):
    minilm, base = bert.load_space(MINILM), bert.load_space(ROOT / "configs" / "spaces" / "bert_base.yaml")
    assert minilm.largest() == Arch(layers=6, hidden=384, heads=12, ffn=1536)
    assert 4e6 < count_parameters(minilm.smallest(), 30522) < 5e6
    assert count_parameters(minilm.largest(), 30522) == 22_713_216  # all-MiniLM-L6-v2's own count
    assert 5e6 < count_parameters(base.smallest(), 30522) and count_parameters(base.largest(), 30522) < 67.5e6
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlayers: [2]\nhidden: [120, 128]\nheads: [12]\nffn: [64]\n")
    with pytest.raises(ConfigError, match="hidden 128 is not divisible by heads 12"):
        bert.load_space(bad)
    with pytest.raises(ArchError, match="outside space"):
        minilm.validate(Arch(layers=6, hidden=400, heads=8, ffn=1536))
    assert minilm.embed(minilm.largest()) == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("arch", [Arch(2, 24, 4, 48), Arch(1, 32, 2, 64)])
def test_costs_count_what_hugging_face_holds_and_runs(arch):
    sn, lc = load_config(None, ["family=bert"]).supernet, LatencyConfig(src_len=13)
    space = Space.from_dict({"layers": [1, 2], "hidden": [24, 32], "heads": [2, 4], "ffn": [48, 64]}, bert.SCHEMA)
    got = bert.costs(arch, space, 30522, sn, lc)
    model = BertEncoder(bert.dense_config(arch, space, 30522, sn))
    twin = hf_twin(model.cfg, model)
    assert got["parameters"] == sum(p.numel() for p in twin.parameters())
    emb = twin.embeddings
    assert got["parameters_nonembedding"] == got["parameters"] - sum(p.numel() for p in emb.parameters())
    ids = torch.randint(1000, 30522, (1, 13))
    with FlopCounterMode(display=False) as counter:  # eager attention: its matmuls are counted (CPU SDPA's not)
        twin(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert got["flops"] == counter.get_total_flops() == count_flops(arch, 13)


def test_time_model_times_one_fixed_length_batch():
    model = BertEncoder(BertDenseConfig(vocab_size=2000, hidden=32, layers=1, heads=2, ffn=64))
    lc = LatencyConfig(src_len=9, warmup=1, repeats=3)
    sample = bert.time_model(model, lc, torch.device("cpu"), torch.float32)
    assert sample["latency_ms"] > 0 and len(sample["times_ms"]) == 3
    assert sample["settings"] == {"seq_len": 9, "batch": 1, "warmup": 1, "repeats": 3, "precision": "fp32"}
    with pytest.raises(ConfigError, match="at most 512"):
        bert.time_model(model, replace(lc, src_len=600), torch.device("cpu"), torch.float32)


def test_teacher_path_defaults_to_the_bundled_model():
    assert (teacher_path("") / "model.safetensors").is_file()


def test_latency_table_parts_cover_every_arch_and_run_alone():
    space = bert.load_space(ROOT / "configs" / "spaces" / "bert_tiny.yaml")
    keys = space_parts(space)
    assert len(keys) == len(set(keys)) == 3 + 3 * 2 * 3  # a base per hidden size, a layer per (h, a, f)
    arch = Arch(layers=2, hidden=24, heads=4, ffn=48)
    assert latency_parts(arch) == {"base": ["base h=24"], "encoder": ["layer h=24 a=4 f=48"] * 2}
    rng = random.Random(0)
    for a in [space.sample(rng) for _ in range(20)]:
        assert all(k in keys for group in latency_parts(a).values() for k in group)
    lc, sn = LatencyConfig(src_len=7), load_config(None, ["family=bert"]).supernet
    for key in ("base h=24", "layer h=24 a=4 f=48"):
        part_workload(key, space, 30522, sn, lc, torch.device("cpu"), torch.float32)()
    with pytest.raises(PredictorError, match="not a layer-shape key"):
        part_workload("enc e=3", space, 30522, sn, lc, torch.device("cpu"), torch.float32)
    model = BertEncoder(BertDenseConfig(vocab_size=2000, hidden=24, layers=2, heads=4, ffn=48))
    out = bert.workload(model, lc, torch.device("cpu"), torch.float32)()
    assert out["hidden"].shape == (1, 7, 24)


def test_teacher_first_puts_the_teacher_in_expert_zero_only(teacher):
    cfg = load_config(
        None, ["family=bert", f"supernet.space={MINILM}", "supernet.generator=layer", "bert.init=teacher-first"]
    )
    net = Supernet(bert.load_space(MINILM), 30522, bert.supernet_config(cfg), bert)
    name = "encoder.layer.2.intermediate.dense.weight"
    experts = net.generator.experts[name.replace(".", "__")]
    want = teacher.model.state_dict()[name]
    assert torch.equal(experts[0], want) and not torch.allclose(experts[1], want, atol=1e-3)
    assert 0.015 < experts[1].std().item() < 0.025  # a fresh BERT draw (std 0.02) beside it
    shared = net.generator.shared["embeddings__word_embeddings__weight"]
    assert torch.equal(shared, teacher.model.state_dict()["embeddings.word_embeddings.weight"])
