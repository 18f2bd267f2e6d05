"""Knowledge distillation at GLUE fine-tuning: the loss of a batch given the KD teacher's outputs, and, with
`glue.kd_intermediate`, Distiller's intermediate terms (mosnas.bert.distiller.pipeline) from the teacher run
beside the student on the same batch.

Prediction layer (the MoS paper's recipe at a = 0.5, T = 1): loss = (1 - a) hard + a soft; hard = CE to the gold
label, soft = `glue.kd_loss` of the student's logits against the teacher's (mosnas.bert.distiller.losses.
logit_loss: `ce` = T^2 KL of the softened distributions, the soft cross-entropy's gradient; `mse` of the logits
/ T). Regression (STS-B): MSE to the gold score, and MSE to the teacher's prediction. With intermediate terms:
loss += glue.kd_intermediate_weight * their sum."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mosnas.bert.distiller.losses import logit_loss
from mosnas.bert.distiller.pipeline import Captured, KDPipeline, Shape, capture
from mosnas.config import GlueConfig


def kd_loss(
    logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor | None, regression: bool, gc: GlueConfig
) -> torch.Tensor:
    """The prediction-layer loss of a batch: logits (B, C) or (B, 1), target (B,), teacher outputs like logits."""
    logits = logits.float()
    hard = F.mse_loss(logits.squeeze(-1), target) if regression else F.cross_entropy(logits, target)
    if teacher is None:
        return hard
    soft = logit_loss(logits, teacher.float(), gc.kd_loss, gc.kd_temperature)
    return (1 - gc.kd_alpha) * hard + gc.kd_alpha * soft


def pipeline_for(gc: GlueConfig, student: Any, teacher: Any) -> KDPipeline | None:
    """The intermediate terms between these two classifiers (None without glue.kd_intermediate); their own
    parameters (projections, critics) are drawn from the current torch seed."""
    if not gc.kd_intermediate:
        return None
    return KDPipeline(gc, Shape.of(student.config), Shape.of(teacher.config)).to(next(student.parameters()).device)


def step_outputs(model: Any, batch: dict[str, Tensor], pipeline: KDPipeline | None, teacher: Any) -> tuple:
    """(the student's logits, the intermediate terms {name: scalar}) of one batch; the teacher runs without
    gradients on the same token ids."""
    if pipeline is None:
        return model(**batch).logits, {}
    layers_s, layers_t = pipeline.layers()
    student: Captured = capture(model, batch, layers_s)
    with torch.no_grad():
        reference: Captured = capture(teacher, batch, layers_t)
    return student.logits, pipeline(student, reference, batch["attention_mask"])
