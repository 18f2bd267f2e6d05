"""Task-agnostic distillation losses of a BERT student against its teacher, for any student width.

`relations`: the last layer's self-attention relations (MiniLMv2, Wang et al. 2021, sec. 3.1; AutoDistil's
objective). For each of query, key and value, the (B, T, H) projections are split into R relation heads of
H / R dims and turned into relation distributions R = softmax(A A^T / sqrt(H / R)) over the keys; the loss is
KL(teacher || student) per relation head and query token, averaged over heads, summed over the three
relation types (Q-Q, K-K, V-V, each weight 1) and over the real query tokens. Relations are T x T whatever
the width, so a student of any hidden size learns from any teacher (R must divide both widths).

`hidden`: TinyBERT's hidden-state loss (Jiao et al. 2020, eq. 8), MSE(H_S W_h, H_T) of the last layer, per
token averaged over the teacher's width and summed over real tokens. W_h is learned with the supernet: one
projection from the space's widest hidden size, its first `h` input columns serving a student of width `h`
(it starts as the identity on the first columns, which is exact for the teacher-initialized largest arch). It
belongs to the distillation, never to an exported student.

`pooled`: the pooler's output (tanh(W_p h_[CLS]), what a GLUE head reads) through the same projection, MSE
per sequence averaged over the teacher's width, counted once per sequence against the teacher's.

`both`: relations + hidden. `full` (the default): relations + hidden + pooled, the objective under which every
trainable tensor of a student gets a gradient: the relations reach only the last layer's query, key and value
(its attention output, FFN, LayerNorms and the pooler get none, so MoS's experts and routers of the top FFN
would never train), the final hidden states reach the rest of the last layer, the pooled output the pooler.

The relation term's divergence is `relation_loss`: `kl` (MiniLMv2's) or `mse` (AutoDistil's Eq. 4: the mean
squared difference of the relation probabilities over the real keys, per query token). Every loss is divided
by `denominator` (default: the real tokens of the batch)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mosnas.errors import ConfigError

OBJECTIVES = ("relations", "hidden", "both", "full")
RELATION_LOSSES = ("kl", "mse")
_TERMS = {"relations": ("relations",), "hidden": ("hidden",), "both": ("relations", "hidden")}
_TERMS["full"] = ("relations", "hidden", "pooled")


def check_relation_heads(heads: int, widths: list[int], teacher_hidden: int) -> None:
    """Raise ConfigError unless `heads` divides the teacher's and every student hidden size."""
    bad = [w for w in [teacher_hidden, *widths] if w % heads]
    if bad:
        raise ConfigError(
            f"bert.relation_heads={heads} must divide every hidden size of the space and the teacher's "
            f"({teacher_hidden}); {bad[0]} is not divisible"
        )


def _log_relations(x: Tensor, heads: int, keys: Tensor) -> Tensor:
    """log softmax(A A^T / sqrt(d)) of x (B, T, H) in `heads` relation heads: (B, heads, T, T); padded keys
    (keys: (B, 1, 1, T) bool) get probability 0."""
    b, t, h = x.shape
    a = x.float().view(b, t, heads, h // heads).transpose(1, 2)  # (B, R, T, d)
    scores = a @ a.transpose(-1, -2) / math.sqrt(h // heads)
    return scores.masked_fill(~keys, torch.finfo(scores.dtype).min).log_softmax(-1)


def relation_kl(
    student: tuple[Tensor, ...],
    teacher: tuple[Tensor, ...],
    mask: Tensor,
    heads: int,
    denominator: Tensor | float | None = None,
    divergence: str = "kl",
) -> Tensor:
    """MiniLMv2's relation loss: sum over (Q, K, V) of KL(teacher || student) of the relation distributions
    (`divergence="mse"`: AutoDistil's mean squared difference of the probabilities over the real keys),
    averaged over relation heads, summed over real query tokens / `denominator`.

    student, teacher: (q, k, v) of the last layer, (B, T, H_s) and (B, T, H_t); mask: (B, T), 1 = real token."""
    keys = mask.bool()[:, None, None, :]
    per_token = torch.zeros(mask.shape, device=mask.device)
    real_keys = mask.sum(-1).clamp(min=1)[:, None, None]  # (B, 1, 1)
    for s, t in zip(student, teacher):
        log_s, log_t = _log_relations(s, heads, keys), _log_relations(t, heads, keys)
        if divergence == "mse":
            div = (log_t.exp() - log_s.exp()).pow(2).masked_fill(~keys, 0.0).sum(-1) / real_keys  # (B, R, T)
        else:
            div = (log_t.exp() * (log_t - log_s)).masked_fill(~keys, 0.0).sum(-1)  # (B, R, T)
        per_token = per_token + div.mean(1)
    real = mask.bool()
    return per_token[real].sum() / (real.sum() if denominator is None else denominator)


class HiddenProjection(nn.Module):
    """TinyBERT's W_h: student hidden (B, T, h) -> teacher hidden (B, T, H_t) for any h <= `max_hidden`."""

    def __init__(self, max_hidden: int, teacher_hidden: int):
        super().__init__()
        self.proj = nn.Linear(max_hidden, teacher_hidden)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(teacher_hidden, max_hidden))
            self.proj.bias.zero_()

    def forward(self, hidden: Tensor) -> Tensor:
        return F.linear(hidden, self.proj.weight[:, : hidden.shape[-1]], self.proj.bias)


def hidden_mse(projected: Tensor, teacher: Tensor, mask: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Squared error of projected student states and the teacher's (B, T, H_t), averaged over H_t, summed over
    real tokens / `denominator`."""
    real = mask.bool()
    per_token = (projected.float() - teacher.float()).pow(2).mean(-1)
    return per_token[real].sum() / (real.sum() if denominator is None else denominator)


def pooled_mse(projected: Tensor, teacher: Tensor, mask: Tensor, denominator: Tensor | float | None = None) -> Tensor:
    """Squared error of projected pooled outputs and the teacher's (B, H_t), averaged over H_t, summed over the
    sequences and divided as the token losses are (`denominator`, default the real tokens): each sequence counts
    once, like one token."""
    per_sequence = (projected.float() - teacher.float()).pow(2).mean(-1)
    return per_sequence.sum() / (mask.bool().sum() if denominator is None else denominator)


class Distiller(nn.Module):
    """One distillation objective (`relations`, `hidden`, `both` or `full`, see the module docstring) and its
    trained parameters (the projection, for every objective but `relations`)."""

    def __init__(
        self, objective: str, relation_heads: int, max_hidden: int, teacher_hidden: int, relation_loss: str = "kl"
    ):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ConfigError(f"bert.objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if relation_loss not in RELATION_LOSSES:
            raise ConfigError(f"bert.relation_loss must be one of {', '.join(RELATION_LOSSES)}, got {relation_loss!r}")
        self.objective, self.heads, self.relation_loss, self.terms = (
            objective,
            relation_heads,
            relation_loss,
            _TERMS[objective],
        )
        self.projection = HiddenProjection(max_hidden, teacher_hidden) if objective != "relations" else None

    def forward(self, student: dict, teacher: dict, mask: Tensor, denominator: Tensor | float | None = None) -> Tensor:
        """The loss of student outputs against teacher outputs (dicts with "last_qkv", "hidden" and "pooled")."""
        loss = torch.zeros((), device=mask.device)
        if "relations" in self.terms:
            qkv_s, qkv_t = student["last_qkv"], teacher["last_qkv"]
            loss = loss + relation_kl(qkv_s, qkv_t, mask, self.heads, denominator, self.relation_loss)
        if "hidden" in self.terms:
            projected = self.projection(student["hidden"].float())
            loss = loss + hidden_mse(projected, teacher["hidden"], mask, denominator)
        if "pooled" in self.terms:
            loss = loss + pooled_mse(self.projection(student["pooled"].float()), teacher["pooled"], mask, denominator)
        return loss
