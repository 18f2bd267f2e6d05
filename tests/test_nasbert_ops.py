"""NAS-BERT's ops and supernet (issue 27): each op of the elastic sublayer equals its standalone dense module
and an independent computation (the widest MHA + FFN equal the real teacher's layer), identity is the input,
padding never leaks into a conv, a block's distillation loss falls on real text in a few steps, and the exported
encoder (identities left out) equals the supernet, round-trips through safetensors and equals its ONNX export."""

import random

import pytest
import torch
import torch.nn.functional as F

from mosnas.bert.model import BertDenseConfig, BertEmbeddings
from mosnas.bert.nasbert.model import NasBertSupernet, block_loss, export, export_onnx, load_model, save_model
from mosnas.bert.nasbert.ops import DenseSublayer, ElasticSublayer, Op, op_parameters
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.bert.teacher import load_teacher
from mosnas.errors import CheckpointError, ConfigError
from tests.conftest import ROOT
from tests.test_bert_model import wiki_lines

SMALL = NasBertSpace(width=64, sublayers=4, blocks=2, hidden_sizes=(32, 64), head_dim=16)


def _randomized(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module


def _batch(width: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 9, width, generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    return x, mask


def test_the_default_space_is_nas_berts_recipe_scaled_down():
    space = NasBertSpace()
    names = space.op_names()
    assert len(names) == 21 and names[-1] == "identity"  # 4 hidden sizes x (MHA, FFN, 3 convs) + identity
    assert {"mha128", "mha384", "ffn256", "conv3_128", "conv7_384"} <= set(names)
    assert space.block_size() == 21**4 and space.teacher_layers(6) == [0, 2, 4, 6]
    assert space.largest_path() == ("mha384", "ffn384", "mha384", "ffn384")
    with pytest.raises(ConfigError, match="not in the space"):
        space.validate(["mha512"] * 12)
    with pytest.raises(ConfigError, match="do not split"):
        NasBertSpace(sublayers=12, blocks=5)
    with pytest.raises(ValueError, match="unknown NAS-BERT op"):
        Op.parse("conv4")


@pytest.mark.parametrize("name", SMALL.op_names())
def test_each_elastic_op_equals_its_dense_module_and_counts_its_parameters(name):
    layer = _randomized(ElasticSublayer(SMALL.ops(), SMALL.width, SMALL.head_dim))
    dense = layer.dense(name)
    x, mask = _batch(SMALL.width)
    assert torch.allclose(layer(x, mask, name), dense(x, mask), atol=1e-6)
    assert sum(p.numel() for p in dense.parameters()) == op_parameters(Op.parse(name), SMALL.width, SMALL.head_dim)
    if name == "identity":
        assert torch.equal(dense(x, mask), x)


@pytest.mark.parametrize("kernel", [3, 5, 7])
def test_the_conv_op_is_a_masked_depthwise_convolution_between_pointwise_maps(kernel):
    op = Op("conv", 32, kernel)
    dense = _randomized(DenseSublayer(op.name, 64, 16))
    x, mask = _batch(64)
    keep = mask[..., None].float()
    h = (x @ dense.down.weight.T + dense.down.bias) * keep  # (B, T, 32)
    padded = F.pad(h, (0, 0, kernel // 2, kernel // 2))  # zeros before and after in time
    w = dense.conv.weight[:, 0, :]  # (32, k): one filter per channel
    conv = sum(padded[:, j : j + h.shape[1], :] * w[:, j] for j in range(kernel)) + dense.conv.bias
    y = (F.gelu(conv) * keep) @ dense.up.weight.T + dense.up.bias
    expected = F.layer_norm(x + y, (64,), dense.norm.weight, dense.norm.bias, 1e-12)
    assert torch.allclose(dense(x, mask), expected, atol=1e-5)
    # what sits in padding does not reach a real token
    noisy = x.clone()
    noisy[mask == 0] = 100.0
    real = mask.bool()
    assert torch.allclose(dense(noisy, mask)[real], dense(x, mask)[real], atol=1e-5)


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def text(teacher):
    enc = teacher.tokenizer(wiki_lines(8), padding=True, truncation=True, max_length=48, return_tensors="pt")
    out = teacher.outputs(enc["input_ids"], enc["attention_mask"])
    return enc["input_ids"], enc["attention_mask"], out["hidden_states"]


def test_the_widest_mha_and_ffn_are_the_teachers_layer(teacher, text):
    """With the teacher's weights, sublayers mha384 then ffn384 compute the teacher's layer on real text."""
    _, mask, states = text
    net = NasBertSupernet(NasBertSpace())
    assert net.init_from_teacher(teacher.model, 32) == 12
    real = mask.bool()
    for i in range(6):
        out = net.sublayers[2 * i + 1](net.sublayers[2 * i](states[i], mask, "mha384"), mask, "ffn384")
        assert torch.allclose(out[real], states[i + 1][real], atol=1e-4), i


def test_one_blocks_loss_falls_on_real_text_in_a_few_steps(teacher, text):
    space = NasBertSpace()
    torch.manual_seed(0)
    net = NasBertSupernet(space)
    _, mask, states = text
    bounds = space.teacher_layers(6)
    opt = torch.optim.AdamW(net.sublayers[4:8].parameters(), lr=1e-3)
    path = ("conv5_192", "ffn256", "mha128", "identity")
    losses = []
    for _ in range(8):
        loss = block_loss(net, 1, states[bounds[1]], states[bounds[2]], mask, path)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
    # single-path sampling draws other paths of the block from the same weights
    sampled = {space.sample_path(random.Random(s)) for s in range(20)}
    assert len(sampled) == 20 and all(len(p) == 4 for p in sampled)


def test_the_exported_encoder_leaves_identities_out_and_round_trips(tmp_path):
    torch.manual_seed(0)
    net = _randomized(NasBertSupernet(SMALL), 1)
    embeddings = _randomized(BertEmbeddings(BertDenseConfig(100, 64, 0, 4, 256, max_position=32)), 2)
    arch = ("mha64", "conv3_32", "identity", "ffn32")
    model = export(net, arch, embeddings, 100)
    assert len(model.layers) == 3 and model.config.ops == ["mha64", "conv3_32", "ffn32"]
    ids = torch.randint(1, 100, (3, 9))
    _, mask = _batch(64)
    with torch.no_grad():
        x = embeddings(ids, torch.zeros_like(ids))
        assert torch.allclose(model(ids, mask).last_hidden_state, net(x, mask, arch), atol=1e-6)
        folder = save_model(model, tmp_path / "m", arch)
        again = load_model(folder)
        assert torch.equal(again(ids, mask).last_hidden_state, model(ids, mask).last_hidden_state)
    (folder / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a NAS-BERT model"):
        load_model(folder)


def test_the_onnx_export_equals_pytorch(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    net = _randomized(NasBertSupernet(SMALL), 3)
    embeddings = _randomized(BertEmbeddings(BertDenseConfig(100, 64, 0, 4, 256, max_position=32)), 4)
    model = export(net, ("conv7_64", "mha32", "ffn64", "conv3_32"), embeddings, 100)
    path = export_onnx(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (b, t) in enumerate([(1, 5), (3, 9), (2, 17)]):  # dynamic batch and sequence axes
        ids = torch.randint(1, 100, (b, t), generator=torch.Generator().manual_seed(seed))
        mask = torch.ones_like(ids)
        mask[-1, t // 2 :] = 0
        with torch.no_grad():
            ref = model(ids, mask).last_hidden_state.numpy()
        got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        assert got.shape == ref.shape and abs(got - ref).max() < 1e-4


def test_the_exported_folder_is_a_hugging_face_model_that_runs_without_mosnas(tmp_path, teacher):
    """save_model writes a transformers folder with its modeling file: a Python without mosnas loads it through
    AutoModel / AutoModelForSequenceClassification (trust_remote_code) and computes what mosnas computes."""
    import subprocess
    import sys

    import numpy as np

    torch.manual_seed(0)
    space = NasBertSpace(sublayers=6, blocks=3, hidden_sizes=(64,), kernels=(3,))
    net = NasBertSupernet(space)
    net.init_from_teacher(teacher.model, 32)
    arch = ("mha64", "conv3_64", "identity", "ffn64", "mha64", "identity")
    model = export(net, arch, teacher.model.embeddings, 30522, teacher.model.pooler.dense)
    folder = save_model(model, tmp_path / "m", arch, teacher.tokenizer)
    assert {"modeling_nasbert.py", "config.json", "model.safetensors", "tokenizer.json", "arch.json"} <= {
        p.name for p in folder.iterdir()
    }
    enc = teacher.tokenizer(["A man rides a bike.", "Two dogs play in the snow near a tree."], padding=True,
                            return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        ours = model(enc["input_ids"], enc["attention_mask"])
    np.save(tmp_path / "ids.npy", enc["input_ids"].numpy())
    np.save(tmp_path / "mask.npy", enc["attention_mask"].numpy())
    script = f"""
import sys, numpy as np, torch
from transformers import AutoModel, AutoModelForSequenceClassification
assert not any(m.startswith("mosnas") for m in sys.modules)
ids, mask = (torch.from_numpy(np.load("{tmp_path}/" + n)) for n in ("ids.npy", "mask.npy"))
m = AutoModel.from_pretrained("{folder}", trust_remote_code=True, local_files_only=True).eval()
with torch.no_grad():
    out = m(input_ids=ids, attention_mask=mask)
np.save("{tmp_path}/hidden.npy", out.last_hidden_state.numpy())
np.save("{tmp_path}/pooled.npy", out.pooler_output.numpy())
c = AutoModelForSequenceClassification.from_pretrained("{folder}", trust_remote_code=True, num_labels=3)
assert c(input_ids=ids, attention_mask=mask).logits.shape == (2, 3)
assert not any(k.startswith("mosnas") for k in sys.modules)
"""
    env = {"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.abs(np.load(tmp_path / "hidden.npy") - ours.last_hidden_state.numpy()).max() < 1e-5
    assert np.abs(np.load(tmp_path / "pooled.npy") - ours.pooler_output.numpy()).max() < 1e-5
    assert torch.equal(load_model(folder).pooler.weight, teacher.model.pooler.dense.weight)


def test_mosnas_glue_fine_tunes_a_nasbert_student(tmp_path, teacher, capsys):
    """The exported folder goes through `mosnas glue` as any student (the classes registered, no remote code)."""
    from mosnas.cli.main import main

    space = NasBertSpace(sublayers=6, blocks=3, hidden_sizes=(64,), kernels=(3,))
    net = NasBertSupernet(space)
    arch = ("mha64", "conv3_64", "identity", "ffn64", "identity", "identity")
    model = export(net, arch, teacher.model.embeddings, 30522, teacher.model.pooler.dense)
    folder = save_model(model, tmp_path / "student", arch, teacher.tokenizer)
    data = ROOT.parent / "shared" / "data" / "glue"
    args = ["glue", str(folder), "--task", "RTE", "--data", str(data), "--out", str(tmp_path / "out")]
    args += ["--train-limit", "16", "--dev-limit", "16"]
    assert main([*args, "--epochs", "1", "--batch-size", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "RTE dev accuracy" in out and "16 of 277 dev examples" in out, out
    assert (tmp_path / "out" / "glue" / "RTE" / "result.json").is_file()


def test_glue_fine_tuning_does_not_decay_a_nasbert_students_layer_norms(teacher):
    from mosnas.bert.glue.train import _optimizer
    from mosnas.bert.nasbert.hf_modeling import NasBertConfig, NasBertForSequenceClassification
    from mosnas.config import GlueConfig

    model = NasBertForSequenceClassification(NasBertConfig(ops=["mha64", "conv3_64"], num_labels=2))
    decayed, kept = _optimizer(model, GlueConfig(), 1e-4).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] > 0 and kept["weight_decay"] == 0.0
    no_decay = {names[id(p)] for p in kept["params"]}
    assert {"nasbert.layers.0.norm.weight", "nasbert.embeddings.LayerNorm.weight"} <= no_decay
    assert not any(n.endswith("norm.weight") or n.endswith("bias") for n in (names[id(p)] for p in decayed["params"]))
