"""The first of NAS-BERT's two distillation stages for a picked arch (Xu et al., KDD 2021, §4.1.2: the picked arch
is pre-trained with prediction-layer KD, then fine-tuned with KD again; the paper pre-trains it from scratch,
here it starts from its supernet weights): the standalone encoder, every
weight of it (embeddings included), learns the teacher on unlabeled text, end to end. The paper distils the
prediction (MLM) layer; all-MiniLM-L6-v2 has no MLM head, so the target is its last hidden state, as proposed in
../shared/design/seed-systems.md §1.7.

Loss: MSE per real token and channel between the student's last hidden state (B, T, 384) and the teacher's (the
same measure as the selection's "whole loss", mosnas.bert.nasbert.select.whole_loss), AdamW, fp32. The paper's
stage distils on its pre-training corpus for a full schedule; here it is capped by updates and/or wall minutes.
`mosnas run` (family nasbert) runs it on each pick with `nasbert.distill_steps` / `distill_minutes`."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from mosnas.bert.data import TextData


def token_squared_error(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """The squared error averaged over channels, summed over real tokens (a 0-d tensor): student, teacher
    (B, T, C), mask (B, T) 1 for a real token."""
    keep = mask[..., None].to(student.dtype)
    return ((student - teacher) ** 2 * keep).sum() / student.shape[-1]


def masked_mse(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Squared error per real token and channel: `token_squared_error` over the real tokens."""
    return token_squared_error(student, teacher, mask) / mask.sum().clamp(min=1)


@torch.no_grad()
def heldout_loss(model: Any, teacher: Any, data: TextData) -> float:
    """The encoder `model` (input_ids, attention_mask -> .last_hidden_state) against `teacher`'s last hidden state
    on every sequence of `data`: squared error per real token and channel."""
    was = model.training
    model.eval()
    total, tokens = 0.0, 0
    for idx in data.batches(0, shuffle=False):
        b = data.collate(idx)
        target = teacher.outputs(b.input_ids, b.attention_mask)["hidden_states"][-1]
        out = model(b.input_ids, b.attention_mask).last_hidden_state
        total += float(token_squared_error(out, target, b.attention_mask))
        tokens += int(b.attention_mask.sum())
    model.train(was)
    return total / max(tokens, 1)


def distill_whole(
    model: Any,
    teacher: Any,
    train: TextData,
    heldout: TextData,
    steps: int,
    minutes: float = 0.0,
    lr: float = 1e-4,
    seed: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Distil `model` from `teacher` end to end for `steps` updates (0: no cap) and/or `minutes` of wall time
    (0: no cap; ValueError when both are 0), batches of `train` in seeded order. Returns {"steps", "wall_s",
    "lr", "seed", "whole_loss_before", "whole_loss_after", "losses" (every update's training loss)}."""
    from tqdm import tqdm

    if steps <= 0 and minutes <= 0:
        raise ValueError("distill_whole needs a cap: steps > 0 or minutes > 0")
    torch.manual_seed(seed)
    was = model.training
    before = heldout_loss(model, teacher, heldout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    t0, losses, epoch = time.perf_counter(), [], 0
    bar = tqdm(total=steps or None, desc="NAS-BERT end-to-end KD", unit="step", disable=not progress)
    while True:
        for idx in train.batches(epoch):
            b = train.collate(idx)
            with torch.no_grad():
                target = teacher.outputs(b.input_ids, b.attention_mask)["hidden_states"][-1]
            loss = masked_mse(model(b.input_ids, b.attention_mask).last_hidden_state, target, b.attention_mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(round(loss.item(), 6))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            over = minutes > 0 and time.perf_counter() - t0 >= 60 * minutes
            if (steps and len(losses) >= steps) or over:
                bar.close()
                after = heldout_loss(model, teacher, heldout)
                model.train(was)
                wall = round(time.perf_counter() - t0, 1)
                return {"steps": len(losses), "wall_s": wall, "lr": lr, "seed": seed, "whole_loss_before": before,
                        "whole_loss_after": after, "losses": losses}  # fmt: skip
        epoch += 1
