"""MI-α: Distiller's mutual-information objective (He et al. 2021), the interpolated lower bound I_α on the mutual
information between a student representation x and the teacher's y of Poole et al. 2019 ("On Variational
Bounds of Mutual Information", ICML; its section on nonlinearly interpolated lower bounds):

    I_α = 1 + E_{p(x_1:K) p(y|x_1)} [ log( e^{f(x_1,y)} / (α m(y; x_1:K) + (1 - α) q(y)) ) ]
            - E_{p(x_1:K) p(y)}     [ e^{f(x_1,y)} / (α m(y; x_1:K) + (1 - α) q(y)) ],
    m(y; x_1:K) = (1/K) sum_k e^{f(x_k, y)},

with a learned critic f and a learned baseline q(y) > 0 (here log q is an MLP of y). The batch is the set of K
samples: pair i is (x_i, y_i); the positive term's m(y_i) averages over all K students, the negative term takes
every x_j, j != i, as a sample independent of y_i and its m over the K - 1 such samples (the leave-one-out mean,
as Distiller does). The ends are the bounds the paper names: α = 1 gives InfoNCE (van den Oord et al. 2018;
low variance, at most log K), α = 0 gives TUBA with baseline q (Poole et al. eq. 8; unbiased, high variance),
which with log q = 1 is NWJ (Nguyen et al. 2010). `infonce`, `tuba` and `nwj` compute those directly, for the
tests and for readers. The distillation loss is -I_α."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def _negatives(scores: Tensor) -> tuple[Tensor, Tensor]:
    """The off-diagonal entries of (K, K) `scores` (f(x_j, y_i) at [j, i]) as (K - 1, K): column i holds y_i's
    scores against every x_j, j != i; and the diagonal (K,)."""
    k = scores.shape[0]
    off = ~torch.eye(k, dtype=torch.bool, device=scores.device)
    return scores.t()[off].view(k, k - 1).t(), scores.diagonal()


def interpolated_bound(scores: Tensor, log_baseline: Tensor, alpha: float) -> Tensor:
    """I_α of a batch (module docstring). scores: (K, K), scores[j, i] = f(x_j, y_i), pairs on the diagonal;
    log_baseline: (K,) log q(y_i); alpha in [0, 1]. Returns a scalar in nats. Raises ValueError for K < 2 or an
    alpha outside [0, 1]."""
    k = scores.shape[0]
    if k < 2 or scores.shape != (k, k) or log_baseline.shape != (k,):
        raise ValueError(f"interpolated_bound needs (K, K) scores and (K,) baselines with K >= 2, got {scores.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    negatives, positives = _negatives(scores)  # (K - 1, K), (K,)
    log_m_all = torch.logsumexp(scores, 0) - math.log(k)  # (K,): log m(y_i; x_1:K)
    log_m_loo = torch.logsumexp(negatives, 0) - math.log(k - 1)  # (K,): over the K - 1 independent x_j

    def log_denominator(log_m: Tensor) -> Tensor:
        if alpha == 1.0:
            return log_m
        if alpha == 0.0:
            return log_baseline
        return torch.logaddexp(math.log(alpha) + log_m, math.log(1 - alpha) + log_baseline)

    positive = (positives - log_denominator(log_m_all)).mean()
    negative = (negatives - log_denominator(log_m_loo)[None, :]).exp().mean()
    return 1.0 + positive - negative


def infonce(scores: Tensor) -> Tensor:
    """InfoNCE: mean_i [ f(x_i, y_i) - log (1/K) sum_j e^{f(x_j, y_i)} ] (scores as in interpolated_bound)."""
    return (scores.diagonal() - torch.logsumexp(scores, 0) + math.log(scores.shape[0])).mean()


def tuba(scores: Tensor, log_baseline: Tensor) -> Tensor:
    """TUBA: 1 + mean_i [f(x_i, y_i) - log q(y_i)] - mean_{i, j != i} e^{f(x_j, y_i)} / q(y_i)."""
    negatives, positives = _negatives(scores)
    return 1.0 + (positives - log_baseline).mean() - (negatives - log_baseline[None, :]).exp().mean()


def nwj(scores: Tensor) -> Tensor:
    """NWJ: mean_i f(x_i, y_i) - e^{-1} mean_{i, j != i} e^{f(x_j, y_i)} (TUBA with log q = 1)."""
    negatives, positives = _negatives(scores)
    return positives.mean() - negatives.exp().mean() / math.e


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))


class MIAlpha(nn.Module):
    """-I_α between student vectors (K, d_s) and teacher vectors (K, d_t) as a loss, with its critic and baseline
    (trained with the student, by the same optimizer). The critic is separable, f(x, y) = g(x) . h(y) with g, h
    MLPs of `hidden` ReLU units to `out` dims (Distiller's mlp_critic: 128, 64); log q(y) is an MLP of y to one
    output. The gradient reaches the student through x."""

    def __init__(self, student_dim: int, teacher_dim: int, alpha: float, hidden: int = 128, out: int = 64):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha
        self.g, self.h = _mlp(student_dim, hidden, out), _mlp(teacher_dim, hidden, out)
        self.log_baseline = _mlp(teacher_dim, hidden, 1)

    def bound(self, student: Tensor, teacher: Tensor) -> Tensor:
        """I_α (nats) of the batch: student (K, d_s), teacher (K, d_t), row i of both the same example."""
        scores = self.g(student.float()) @ self.h(teacher.float()).t()  # [j, i] = f(x_j, y_i)
        return interpolated_bound(scores, self.log_baseline(teacher.float()).squeeze(-1), self.alpha)

    def forward(self, student: Tensor, teacher: Tensor) -> Tensor:
        return -self.bound(student, teacher)
