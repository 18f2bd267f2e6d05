"""NAS-BERT's end-to-end distillation of a picked arch (issue 27, stage one of the paper's two): on real
Wikipedia text the exported student's held-out loss to the teacher's last hidden state falls in a few updates,
every weight of it moves, the run is seeded, and a run with no cap is refused."""

import pytest
import torch

from mosnas.bert.data import load_text, text_files
from mosnas.bert.nasbert.distill import distill_whole, heldout_loss
from mosnas.bert.nasbert.model import NasBertSupernet, export
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.bert.teacher import load_teacher
from tests.conftest import ROOT

WIKI = ROOT.parent / "shared" / "data" / "wikipedia-en-20190720-plain"
ARCH = ("mha64", "conv3_64", "identity", "ffn64", "mha64", "ffn64")


@pytest.fixture(scope="module")
def teacher():
    return load_teacher()


@pytest.fixture(scope="module")
def texts(teacher):
    tok = teacher.tokenizer
    train = load_text(text_files(WIKI, "train"), tok, 32, 8, 40, 0, 1)
    held = load_text(text_files(WIKI, "valid"), tok, 32, 8, 0, 16, 0)
    return train, held


def _student(teacher):
    torch.manual_seed(0)
    net = NasBertSupernet(NasBertSpace(sublayers=6, blocks=3, hidden_sizes=(64,), kernels=(3,)))
    net.init_from_teacher(teacher.model, 32)
    return export(net, ARCH, teacher.model.embeddings, 30522, teacher.model.pooler.dense)


def test_end_to_end_kd_lowers_the_heldout_loss_and_trains_every_weight(teacher, texts):
    train, held = texts
    model = _student(teacher)
    start = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = distill_whole(model, teacher, train, held, steps=20, lr=3e-3, progress=False)
    assert rec["steps"] == 20 and len(rec["losses"]) == 20
    assert rec["whole_loss_before"] == pytest.approx(heldout_loss(_student(teacher), teacher, held), rel=1e-5)
    assert rec["whole_loss_after"] < 0.85 * rec["whole_loss_before"], rec
    assert rec["whole_loss_after"] == pytest.approx(heldout_loss(model, teacher, held), rel=1e-5)
    still = [k for k, v in model.named_parameters() if torch.equal(v, start[k]) and k in start]
    used = [k for k in still if "token_type" not in k and "pooler" not in k]  # unused by a last-hidden-state loss
    assert not used, used


def test_end_to_end_kd_is_seeded_and_needs_a_cap(teacher, texts):
    train, held = texts
    a = distill_whole(_student(teacher), teacher, train, held, steps=3, lr=1e-3, seed=5, progress=False)
    b = distill_whole(_student(teacher), teacher, train, held, steps=3, lr=1e-3, seed=5, progress=False)
    assert a["losses"] == b["losses"]
    with pytest.raises(ValueError, match="needs a cap"):
        distill_whole(_student(teacher), teacher, train, held, steps=0, minutes=0, progress=False)
