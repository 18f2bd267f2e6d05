"""The per-representation distillation losses of Distiller (He et al. 2021; its code builds on TextBrewer), for
one batch. S = student, T = teacher, M = the real-token mask (B, T), 1 = real token; a student's hidden states
reach the teacher's width through a learned projection first (mosnas.bert.distiller.pipeline). Each loss is 0
when the student's representation equals the teacher's (MI-α, a bound, is not a distance: mosnas.bert.distiller.mi).

Prediction layer, logits (B, C) (`kd_loss`):
- `ce`: tau^2 * mean_i [ -sum_c softmax(z_T / tau)_c log softmax(z_S / tau)_c ] - H(softmax(z_T / tau)), i.e. the
  KL divergence; its gradient is the soft cross-entropy's (Hinton et al. 2015, times tau^2 so that its scale does
  not depend on tau). Distiller's kd_ce has no tau^2 factor: the same at its default tau = 1.
- `mse`: mean of (z_S / tau - z_T / tau)^2 (Distiller's kd_mse); for a regression head, MSE of the predictions.

Hidden states h (B, T, d) of one mapped layer pair (`kd_hidden_loss`):
- `mse`: TinyBERT's (Jiao et al. 2020, eq. 8) mean over the teacher's width, averaged over real tokens;
- `cos`: mean over real tokens of 1 - cos(h_S, h_T) (DistilBERT's cosine embedding loss);
- `pkd`: || h_S[CLS] / ||h_S[CLS]|| - h_T[CLS] / ||h_T[CLS]|| ||^2, averaged over the batch (Sun et al. 2019,
  Patient KD, eq. 3).

Attention distributions (B, H, T, T) of one mapped layer pair (`kd_attention_loss`; head-averaged on both sides
when the head counts differ): `mse` of the probabilities over the real keys, per query; `kl`: KL(T || S) over
the real keys, per query; both averaged over heads and the real query tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mosnas.bert.distill import hidden_mse


def logit_loss(student: Tensor, teacher: Tensor, kind: str, temperature: float = 1.0) -> Tensor:
    """Prediction-layer KD between logits (B, C) (regression: (B, 1)), a scalar. kind: `ce` or `mse` (above); a
    one-column head (regression) always takes `mse` of the raw predictions."""
    s, t = student.float(), teacher.float()
    if s.shape[-1] == 1:
        return F.mse_loss(s, t)
    if kind == "mse":
        return F.mse_loss(s / temperature, t / temperature)
    log_p_s, log_p_t = F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1).mean() * temperature**2


def cosine_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Mean over real tokens of 1 - cos(student, teacher); both (B, T, d)."""
    real = mask.bool()
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1))[real].mean()


def pkd_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Patient KD: squared distance of the L2-normalized [CLS] states (B, T, d) -> (B, d), averaged over B."""
    s, t = F.normalize(student[:, 0].float(), dim=-1), F.normalize(teacher[:, 0].float(), dim=-1)
    return (s - t).pow(2).sum(-1).mean()


def hidden_loss(student: Tensor, teacher: Tensor, mask: Tensor, kind: str) -> Tensor:
    """One layer pair's hidden-state loss (`mse`, `cos` or `pkd`; MI-α is mosnas.bert.distiller.mi.MIAlpha)."""
    if kind == "cos":
        return cosine_loss(student, teacher, mask)
    if kind == "pkd":
        return pkd_loss(student, teacher)
    return hidden_mse(student, teacher, mask)


def attention_probs(query: Tensor, key: Tensor, heads: int, mask: Tensor) -> Tensor:
    """softmax(Q K^T / sqrt(d_head)) per head, padded keys at probability 0: query, key (B, T, d) -> (B, heads,
    T, T). The attention a BERT layer computes (before its dropout), from its query and key projections."""
    b, t, d = query.shape
    q = query.float().view(b, t, heads, d // heads).transpose(1, 2)
    k = key.float().view(b, t, heads, d // heads).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / (d // heads) ** 0.5
    return scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min).softmax(-1)


def attention_loss(student: Tensor, teacher: Tensor, mask: Tensor, kind: str) -> Tensor:
    """Attention distillation of one layer pair: student (B, H_s, T, T), teacher (B, H_t, T, T) probabilities."""
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
    keys = mask.bool()[:, None, None, :]
    s, t = student.float(), teacher.float()
    if kind == "kl":
        per_query = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).masked_fill(~keys, 0.0).sum(-1)
    else:
        real_keys = mask.sum(-1).clamp(min=1)[:, None, None]
        per_query = (s - t).pow(2).masked_fill(~keys, 0.0).sum(-1) / real_keys  # (B, H, T)
    real = mask.bool()
    return per_query.mean(1)[real].mean()
