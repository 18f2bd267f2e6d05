"""The BERT family's distillation half: packed Wikipedia text, the relation and hidden-state losses against the
real teacher, and the task's exact resume of its trained projection."""

from __future__ import annotations

import pytest
import torch

from mosnas import bert
from mosnas.bert.data import (
    MIN_TOKENS,
    TextData,
    load_text,
    pack,
    read_documents,
    sample_documents,
    sample_sequences,
    text_files,
)
from mosnas.bert.distill import Distiller, HiddenProjection, check_relation_heads, hidden_mse, relation_kl
from mosnas.bert.model import BertDenseConfig, BertEncoder
from mosnas.bert.teacher import load_teacher
from mosnas.config import load_config
from mosnas.core.supernet import Supernet
from mosnas.errors import ConfigError
from tests.conftest import ROOT

WIKIPEDIA = ROOT.parent / "shared" / "data" / "wikipedia-en-20190720-plain"
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext" / "wikitext-2-raw" / "wiki.test.raw.gz"
MINILM = ROOT / "configs" / "spaces" / "bert_minilm.yaml"


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def valid(teacher) -> TextData:
    """16 real held-out sequences of 48 tokens."""
    return load_text(text_files(WIKIPEDIA, "valid"), teacher.tokenizer, 48, 4, limit_seqs=16)


def test_text_is_packed_per_document_with_cls_and_sep(teacher):
    docs = read_documents(text_files(WIKIPEDIA, "valid"))
    assert len(docs) == 150  # the data README: 150 documents in valid
    ids = pack(docs[:3], teacher.tokenizer, 64)
    tok = teacher.tokenizer
    assert ids.shape[1] == 64 and (ids[:, 0] == tok.cls_token_id).all()
    lengths = ids.ne(tok.pad_token_id).sum(1)
    assert (ids[torch.arange(len(ids)), lengths - 1] == tok.sep_token_id).all()  # [SEP] ends every sequence
    assert (lengths >= MIN_TOKENS + 2).all()
    # every document's tokens are in order, none crosses into the next: the first doc's pieces rebuild its text
    first = pack(docs[:1], tok, 64)
    words = tok.decode([t for row in first for t in row.tolist() if t not in tok.all_special_ids])
    assert (
        words.replace(" ", "")[:200]
        == tok.decode(tok(docs[0][0], add_special_tokens=False)["input_ids"]).replace(" ", "")[:200]
    )


def test_wikitext_headings_start_documents_and_samples_are_seeded():
    docs = read_documents([WIKITEXT])
    assert docs[0][0].strip() == "= Robert Boulter =" and len(docs) > 50
    titles = [(i, line) for d in docs for i, line in enumerate(d) if line.startswith("= ") and line.endswith(" =")]
    assert all(i == 0 for i, line in titles if "= =" not in line)  # a title opens its document ('= = x = =' not)
    a, b, c = (sample_documents(docs, 40, seed) for seed in (1, 1, 2))
    assert a == b and a != c and sum(map(len, a)) >= 40 > sum(map(len, a[:-1]))
    assert sample_documents(docs, 0, 1) == docs


def test_held_out_samples_span_the_documents_and_nest(teacher, tmp_path):
    """A held-out sample is drawn across every document of the split (not its first sequences, 2 of 150
    documents at 64 sequences), the same whatever the run's seed, and a larger sample holds a smaller one."""
    files = text_files(WIKIPEDIA, "valid")
    docs = read_documents(files)
    per_doc = [len(pack([d], teacher.tokenizer, 48)) for d in docs]
    owner = [i for i, n in enumerate(per_doc) for _ in range(n)]  # packed sequence -> its document
    picked = sample_sequences(len(owner), 64)
    spread = len({owner[i] for i in picked})  # documents weigh by their length: 29 here
    assert picked == sorted(picked) and spread >= 20 and len({owner[i] for i in range(64)}) <= 3, spread
    assert set(sample_sequences(len(owner), 16)) <= set(picked) and sample_sequences(len(owner), 0) == list(
        range(len(owner))
    )
    a = load_text(files, teacher.tokenizer, 48, 4, limit_seqs=16, seed=1).ids
    b = load_text(files, teacher.tokenizer, 48, 4, limit_seqs=16, seed=7).ids
    whole = pack(docs, teacher.tokenizer, 48)
    assert (
        torch.equal(a, b) and torch.equal(a, whole[sample_sequences(len(whole), 16)]) and not torch.equal(a, whole[:16])
    )


def test_a_document_never_continues_into_the_next_shard(tmp_path):
    """Two shards, the first without a blank line at its end: its last document ends with the file."""
    (tmp_path / "train-0.txt").write_text("alpha one\nalpha two\n", encoding="utf-8")
    (tmp_path / "train-1.txt").write_text("beta one\n\ngamma one\n", encoding="utf-8")
    docs = read_documents(text_files(tmp_path, "train"))
    assert docs == [["alpha one", "alpha two"], ["beta one"], ["gamma one"]]


def test_batches_are_deterministic_per_seed_and_epoch(valid):
    assert valid.batches(3) == valid.batches(3) and valid.batches(3) != valid.batches(4)
    assert sorted(i for b in valid.batches(1) for i in b) == list(range(len(valid)))
    batch = valid.collate(valid.batches(0)[0])
    assert batch.input_ids.shape == batch.attention_mask.shape and batch.attention_mask[:, 0].all()


def test_relation_loss_is_zero_for_the_teacher_initialized_largest_and_positive_for_others(teacher, valid):
    """bert.init=teacher: the largest arch is the teacher, so its relations match exactly (KL 0, and with the
    identity-initialized projection the hidden MSE is 0 too); a smaller arch's are not."""
    cfg = load_config(None, ["family=bert", f"supernet.space={MINILM}", "supernet.generator=shared"])
    space = bert.load_space(MINILM)
    net = Supernet(space, 30522, bert.supernet_config(cfg), bert).eval()
    both = Distiller("both", 12, max(space.hidden), 384)
    b = valid.collate(valid.batches(0, shuffle=False)[0])
    with torch.no_grad():
        target = teacher.outputs(b.input_ids, b.attention_mask)
        largest = net(b.input_ids, b.attention_mask, space.largest())
        smallest = net(b.input_ids, b.attention_mask, space.smallest())
        assert float(relation_kl(largest["last_qkv"], target["last_qkv"], b.attention_mask, 12)) < 1e-4
        assert float(both(largest, target, b.attention_mask)) < 1e-4
        assert float(relation_kl(smallest["last_qkv"], target["last_qkv"], b.attention_mask, 12)) > 0.01
        assert float(both(smallest, target, b.attention_mask)) > 0.01
        for loss in ("kl", "mse"):  # the default objective, with either divergence of the relations
            full = Distiller("full", 12, max(space.hidden), 384, relation_loss=loss)
            assert (
                float(full(largest, target, b.attention_mask)) < 1e-4 < float(full(smallest, target, b.attention_mask))
            )


def test_relation_mse_is_autodistils_mean_squared_probability_gap():
    """On hand-made relations: one query token whose teacher puts all mass on key 0 and a student uniform over
    its 2 real keys (the third is padding): MSE = ((1 - 1/2)^2 + (0 - 1/2)^2) / 2 = 0.25 per relation type."""
    big = 30.0  # q.q scores: the teacher's token attends to itself (key 0) only
    t = torch.tensor([[[big], [0.0], [0.0]]])  # (B=1, T=3, H=1): token 0's self-score 900, others 0
    s = torch.zeros(1, 3, 1)  # every score 0: uniform
    mask = torch.tensor([[1, 1, 0]])
    mse = relation_kl((s,) * 3, (t,) * 3, mask, heads=1, denominator=1.0, divergence="mse")
    # token 0: teacher [1, 0], student [1/2, 1/2] -> 0.25; token 1: both [1/2, 1/2] (scores 0 and 0) -> 0
    assert float(mse) == pytest.approx(3 * 0.25, abs=1e-6)
    assert float(relation_kl((t,) * 3, (t,) * 3, mask, 1, 1.0, "mse")) == 0.0
    with pytest.raises(ConfigError, match="bert.relation_loss must be one of kl, mse"):
        Distiller("full", 1, 8, 8, relation_loss="l1")


def test_losses_ignore_padding_and_gradients_reach_student_and_projection(teacher, valid):
    """Padding columns change nothing; both losses send gradients into the student and the projection."""
    b = valid.collate(valid.batches(0, shuffle=False)[0])
    torch.manual_seed(0)
    dense = BertDenseConfig(vocab_size=30522, hidden=48, layers=1, heads=4, ffn=64, dropout=0.0, attention_dropout=0.0)
    student = BertEncoder(dense).eval()
    pad = torch.zeros(len(b.input_ids), 7, dtype=torch.long)
    padded = (torch.cat([b.input_ids, pad], 1), torch.cat([b.attention_mask, pad], 1))
    with torch.no_grad():
        t, t_pad = teacher.outputs(b.input_ids, b.attention_mask), teacher.outputs(*padded)
        s, s_pad = student(b.input_ids, b.attention_mask), student(*padded)
    kl, kl_pad = (
        relation_kl(x["last_qkv"], y["last_qkv"], m, 4)
        for x, y, m in ((s, t, b.attention_mask), (s_pad, t_pad, padded[1]))
    )
    assert torch.allclose(kl, kl_pad, atol=1e-5) and kl > 0
    distiller = Distiller("both", 4, 64, 384)
    loss = distiller(student(b.input_ids, b.attention_mask), t, b.attention_mask)
    loss.backward()
    assert student.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert distiller.projection.proj.weight.grad[:, :48].abs().sum() > 0
    assert distiller.projection.proj.weight.grad[:, 48:].abs().sum() == 0  # columns of wider students only


def test_projection_slices_one_max_width_matrix():
    proj = HiddenProjection(64, 32)
    x = torch.randn(2, 3, 48)
    assert proj(x).shape == (2, 3, 32)
    assert torch.equal(proj(x)[..., :32], x[..., :32])  # identity on the first columns at the start
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    t = torch.randn(2, 3, 32)
    expected = ((x[..., :32] - t) ** 2).mean(-1)[mask.bool()].sum() / 3
    assert torch.allclose(hidden_mse(proj(x), t, mask), expected)


def test_relation_heads_must_divide_every_width():
    check_relation_heads(12, [120, 384], 384)
    with pytest.raises(ConfigError, match="relation_heads=5"):
        check_relation_heads(5, [120, 384], 384)
    with pytest.raises(ConfigError, match="bert.objective"):
        Distiller("logits", 4, 32, 32)


def test_the_teacher_is_cut_to_a_narrower_shallower_space(tmp_path):
    """bert.init=teacher under a sub-space smaller than the teacher (AutoDistil's tiny): the supernet's largest
    arch starts as the teacher's top-left sub-network; a space the teacher fits gets no cut copy."""
    from safetensors.torch import load_file

    from mosnas.bert.subspace import CROPPED, crop_teacher
    from mosnas.bert.teacher import teacher_weights

    assert not crop_teacher(teacher_weights(), bert.load_space(MINILM), 30522, tmp_path / CROPPED)
    assert not (tmp_path / CROPPED).exists()
    small = tmp_path / "small.yaml"
    small.write_text("name: small\nlayers: [2, 3]\nhidden: [96, 192]\nheads: [6, 12]\nffn: [512, 768]\n")
    space = bert.load_space(small)
    assert crop_teacher(teacher_weights(), space, 30522, tmp_path / CROPPED)
    full, cut = load_file(str(teacher_weights())), load_file(str(tmp_path / CROPPED))
    assert "encoder.layer.3.output.dense.weight" not in cut and "encoder.layer.2.output.dense.weight" in cut
    assert torch.equal(
        cut["encoder.layer.2.intermediate.dense.weight"], full["encoder.layer.2.intermediate.dense.weight"][:768, :192]
    )
    cfg = load_config(None, ["family=bert", f"supernet.space={small}", f"out_dir={tmp_path}", "name=."])
    net = Supernet(space, 30522, bert.supernet_config(cfg), bert)
    weights = net.weights(space.largest())
    assert torch.equal(weights["embeddings.word_embeddings.weight"], full["embeddings.word_embeddings.weight"][:, :192])
