"""Importance-ordered students: the teacher's heads, FFN neurons and hidden channels ranked on real text and
permuted without changing its function; shallower students take the most important layers."""

from __future__ import annotations

import copy

import pytest
import torch

from mosnas import bert
from mosnas.bert.data import load_text, text_files
from mosnas.bert.importance import depth_layers, first_k, importance, layer_order, ordered_teacher, orders, permute
from mosnas.bert.teacher import load_teacher
from mosnas.config import SupernetConfig, load_config
from mosnas.core.supernet import Supernet
from tests.conftest import ROOT

WIKIPEDIA = ROOT.parent / "shared" / "data" / "wikipedia-en-20190720-plain"
MINILM = ROOT / "configs" / "spaces" / "bert_minilm.yaml"


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def batches(teacher):
    text = load_text(text_files(WIKIPEDIA, "valid"), teacher.tokenizer, 48, 8, limit_seqs=16)
    return [(b.input_ids, b.attention_mask) for b in map(text.collate, text.batches(0, shuffle=False))]


@pytest.fixture(scope="module")
def scored(teacher, batches):
    return importance(teacher.model, batches)


def test_the_permuted_teacher_computes_the_same_function(teacher, batches, scored):
    """Heads, FFN neurons and hidden channels permuted by importance: every output equals the original's in the
    permuted order (hidden states and pooled output by the channel order, q/k/v by whole heads)."""
    order = orders(scored)
    assert order["hidden"] != list(range(384)) and any(h != list(range(12)) for h in order["heads"])
    tensors = {k: v for k, v in teacher.model.state_dict().items() if v.is_floating_point()}
    model = copy.deepcopy(teacher.model)
    model.load_state_dict(permute(tensors, order, 12), strict=False)
    ids, mask = batches[0]
    with torch.no_grad():
        a = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        b = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        p = torch.tensor(order["hidden"])
        for x, y in zip(a.hidden_states, b.hidden_states):
            torch.testing.assert_close(x[..., p], y, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(a.pooler_output[:, p], b.pooler_output, atol=2e-5, rtol=1e-4)
    # the identity order changes nothing at all
    same = permute(tensors, first_k(384, 6, 12, 1536), 12)
    assert all(torch.equal(same[k], tensors[k]) for k in tensors)


def test_scores_rank_the_units_and_the_orders_follow_them(scored):
    assert scored["hidden"].shape == (384,) and scored["heads"].shape == (6, 12) and scored["ffn"].shape == (6, 1536)
    assert (scored["hidden"] > 0).all() and (scored["heads"] > 0).all() and (scored["layers"] > 0).all()
    order = orders(scored)
    ranked = scored["ffn"][2][order["ffn"][2]]
    assert (ranked[:-1] >= ranked[1:]).all()  # most important first
    assert sorted(order["layers"]) == list(range(6))


def test_a_shallower_student_takes_the_most_important_layers_in_order():
    assert depth_layers((5, 4, 0, 3, 2, 1), 3) == [0, 4, 5] and depth_layers((), 3) == [0, 1, 2]
    space = bert.load_space(MINILM)
    net = Supernet(
        space, 200, SupernetConfig(generator="neuron", router_hidden=8, layer_order=(5, 4, 0, 3, 2, 1)), bert
    ).eval()
    three = bert.Arch(layers=3, hidden=192, heads=6, ffn=512)
    names = bert.source_names(three, ["encoder.layer.0.output.dense.weight", "encoder.layer.2.attention.self.key.bias",
                                      "pooler.dense.weight"], net.cfg)  # fmt: skip
    assert names == {
        "encoder.layer.0.output.dense.weight": "encoder.layer.0.output.dense.weight",
        "encoder.layer.2.attention.self.key.bias": "encoder.layer.5.attention.self.key.bias",
        "pooler.dense.weight": "pooler.dense.weight",
    }
    ids, mask = torch.randint(5, 200, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    with torch.no_grad():  # export equals the supernet for a re-layered arch too
        torch.testing.assert_close(net.export(three)(ids, mask)["hidden"], net(ids, mask, three)["hidden"])
        w = net.weights(three)
        top = net.generator(net.embed(three), {"x": tuple(w["encoder.layer.2.output.dense.weight"].shape)},
                            {"x": "encoder.layer.5.output.dense.weight"})["x"]  # fmt: skip
        assert torch.equal(w["encoder.layer.2.output.dense.weight"], top)
    with pytest.raises(Exception, match="is not an order of the space's layers"):
        bert.source_names(three, ["encoder.layer.0.output.dense.weight"], SupernetConfig(layer_order=(0, 0, 1)))


def test_a_run_writes_its_ordered_teacher_once_and_starts_the_supernet_from_it(tmp_path):
    cfg = load_config(
        ROOT / "configs" / "bert_quickstart.yaml",
        [f"out_dir={tmp_path}", "bert.importance_sequences=16", "data.train_limit=200"],
    )
    folder = ordered_teacher(cfg, cfg.run_dir)
    record = (folder / "importance.json").read_text()
    assert ordered_teacher(cfg, cfg.run_dir) == folder and (folder / "importance.json").read_text() == record
    sn = bert.supernet_config(cfg)
    assert sn.pretrained == str(folder / "model.safetensors") and sorted(sn.layer_order) == list(range(6))
    assert layer_order(cfg.run_dir, 6) == sn.layer_order
    first = bert.supernet_config(load_config(ROOT / "configs" / "bert_quickstart.yaml", [f"out_dir={tmp_path / 'f'}"]))
    assert first.layer_order == () and "teacher" not in first.pretrained.split("/")[-2:-1]
