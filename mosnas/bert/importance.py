"""Students that start from the teacher's best parts: rank the teacher's attention heads, FFN neurons, hidden
channels and layers by importance, and permute the teacher once so that every sliced student holds the most
important ones (its first heads, neurons and channels; for depth, its most important layers).

Importance is activation-based, as Minitron computes it (Muralidharan et al. 2024, "Compact Language Models via
Pruning and Knowledge Distillation", sec. 2.2), on a seeded sample of the distillation text: forward passes of
the teacher only (no labels, no loss, no gradients: cheap on a CPU, and Minitron found it on par with
gradient-based scores), averaged over the real (non-padding) tokens:
- an FFN neuron: the mean |activation| after GELU, per layer;
- a head: the mean L2 norm of its context vector (the attention output before the output projection), per layer;
- a hidden channel: the mean |x| of the channel at every LayerNorm output (embeddings and each sub-layer), summed:
  the residual stream is one set of channels for the whole model;
- a layer: Minitron's block importance, 1 - mean cos(x_in, x_out) of the layer's input and output states.

Heads, neurons and channels are permuted (a permutation of a layer's units or of the residual channels leaves
the function unchanged: the permuted teacher's outputs are the original's, in the permuted channel order). Layers
cannot be reordered without changing the function; a student of depth k takes the k most important layers in
their original order instead (`depth_layers`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def importance(model: Any, batches: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Scores of a Hugging Face BertModel on `batches` of (input_ids, attention_mask), each (B, T):
    {"hidden": (H,), "heads": (L, A), "ffn": (L, F), "layers": (L,)}; larger is more important."""
    cfg = model.config
    L, A, H, F = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size, cfg.intermediate_size
    sums = {"hidden": torch.zeros(H), "heads": torch.zeros(L, A), "ffn": torch.zeros(L, F), "layers": torch.zeros(L)}
    real: dict[str, Tensor] = {}
    hooks = []

    def channels(module, args, out):  # a LayerNorm's output (B, T, H)
        sums["hidden"] += out[real["mask"]].abs().sum(0).float()

    def heads(layer):
        def hook(module, args):  # the context (B, T, H) entering attention.output.dense
            ctx = args[0][real["mask"]].view(-1, A, H // A)
            sums["heads"][layer] += ctx.norm(dim=-1).sum(0).float()

        return hook

    def neurons(layer):
        def hook(module, args, out):  # BertIntermediate's output: GELU(dense(x)) (B, T, F)
            sums["ffn"][layer] += out[real["mask"]].abs().sum(0).float()

        return hook

    hooks.append(model.embeddings.LayerNorm.register_forward_hook(channels))
    for i, layer in enumerate(model.encoder.layer):
        hooks += [
            layer.attention.output.LayerNorm.register_forward_hook(channels),
            layer.output.LayerNorm.register_forward_hook(channels),
            layer.attention.output.dense.register_forward_pre_hook(heads(i)),
            layer.intermediate.register_forward_hook(neurons(i)),
        ]
    tokens = 0
    try:
        for ids, mask in batches:
            real["mask"] = mask.bool()
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            states = [s[real["mask"]].float() for s in out.hidden_states]  # (N, H) each, embeddings first
            for i in range(L):
                sums["layers"][i] += (1 - torch.cosine_similarity(states[i], states[i + 1], dim=-1)).sum()
            tokens += int(real["mask"].sum())
    finally:
        for h in hooks:
            h.remove()
    return {k: v / max(tokens, 1) for k, v in sums.items()}


def orders(scores: dict[str, Tensor]) -> dict[str, list]:
    """The permutations, most important first: {"hidden": [H], "heads": [[A] per layer], "ffn": [[F] per
    layer]}, and "layers": the layer indices from most to least important (ties: the earlier layer first)."""
    desc = lambda t: torch.sort(t, descending=True, stable=True).indices.tolist()
    return {
        "hidden": desc(scores["hidden"]),
        "heads": [desc(row) for row in scores["heads"]],
        "ffn": [desc(row) for row in scores["ffn"]],
        "layers": desc(scores["layers"]),
    }


def first_k(hidden: int, layers: int, heads: int, ffn: int) -> dict[str, list]:
    """The identity orders (today's first-k slicing), in the shape of `orders`."""
    return {
        "hidden": list(range(hidden)),
        "heads": [list(range(heads)) for _ in range(layers)],
        "ffn": [list(range(ffn)) for _ in range(layers)],
        "layers": list(range(layers)),
    }


def permute(tensors: dict[str, Tensor], order: dict[str, list], num_heads: int) -> dict[str, Tensor]:
    """A Hugging Face BERT state dict (no `bert.` prefix) with heads, FFN neurons and hidden channels permuted by
    `order` (see `orders`): a function-preserving reordering. Layers keep their places."""
    p = torch.tensor(order["hidden"])
    out = dict(tensors)

    def take(name: str, idx: Tensor, dim: int) -> None:
        if name in out:
            out[name] = out[name].index_select(dim, idx).contiguous()

    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        take(f"embeddings.{name}.weight", p, 1)
    for part in ("weight", "bias"):
        take(f"embeddings.LayerNorm.{part}", p, 0)
    for i, (head_order, ffn_order) in enumerate(zip(order["heads"], order["ffn"])):
        pre = f"encoder.layer.{i}"
        size = out[f"{pre}.attention.self.query.weight"].shape[0] // num_heads
        rows = torch.tensor([h * size + j for h in head_order for j in range(size)])  # whole heads, reordered
        f = torch.tensor(ffn_order)
        for proj in ("query", "key", "value"):
            take(f"{pre}.attention.self.{proj}.weight", rows, 0)
            take(f"{pre}.attention.self.{proj}.bias", rows, 0)
            take(f"{pre}.attention.self.{proj}.weight", p, 1)
        take(f"{pre}.attention.output.dense.weight", rows, 1)
        take(f"{pre}.intermediate.dense.weight", f, 0)
        take(f"{pre}.intermediate.dense.bias", f, 0)
        take(f"{pre}.intermediate.dense.weight", p, 1)
        take(f"{pre}.output.dense.weight", f, 1)
        for block in ("attention.output", "output"):  # residual-stream outputs and their LayerNorms
            take(f"{pre}.{block}.dense.weight", p, 0)
            take(f"{pre}.{block}.dense.bias", p, 0)
            take(f"{pre}.{block}.LayerNorm.weight", p, 0)
            take(f"{pre}.{block}.LayerNorm.bias", p, 0)
    take("pooler.dense.weight", p, 0)
    take("pooler.dense.weight", p, 1)
    take("pooler.dense.bias", p, 0)
    return out


def depth_layers(layer_order: list[int] | tuple[int, ...], depth: int) -> list[int]:
    """The teacher layers a student of `depth` layers takes: the `depth` most important, in their original order
    (an empty `layer_order`: the first `depth`, plain slicing)."""
    if not layer_order:
        return list(range(depth))
    return sorted(layer_order[:depth])


ORDERED = "teacher"  # the run's importance-ordered teacher: a Hugging Face folder (+ importance.json)
RECORD = "importance.json"


def ordered_teacher(cfg: Any, run_dir: Any) -> Any:
    """Write `run_dir/teacher/`: the teacher with heads, neurons and channels in importance order (a Hugging Face
    folder the distillation reads as its teacher, so the permuted supernet and its teacher agree unit by unit),
    with `importance.json` (scores, orders, the layer order, what they were made from). Scored on a seeded sample
    of `bert.importance_sequences` sequences of `data.train` (documents seeded by train.seed). Reused while its
    record holds; returns the folder."""
    from pathlib import Path

    from safetensors.torch import save_file

    from mosnas.bert.data import load_text, text_files
    from mosnas.bert.teacher import load_teacher, teacher_weights
    from mosnas.workspace.paths import file_sha256
    from mosnas.workspace.records import fresh, made_from, write_json

    bc, out = cfg.bert, Path(run_dir) / ORDERED
    files = text_files(cfg.data.dir, cfg.data.train)
    record = made_from(
        teacher=file_sha256(teacher_weights(bc.teacher)),
        text=[str(f) for f in files],
        sequences=bc.importance_sequences,
        max_seq_len=bc.max_seq_len,
        seed=cfg.train.seed,
        method="activation (Minitron)",
    )
    if fresh(out / RECORD, record, "importance order"):
        return out
    (Path(run_dir) / "teacher_init.safetensors").unlink(missing_ok=True)  # a cut of the old order (subspace.CROPPED)
    teacher = load_teacher(bc.teacher)
    n = bc.importance_sequences
    text = load_text(files, teacher.tokenizer, bc.max_seq_len, 32, 8 * n, n, cfg.train.seed)
    batches = [(b.input_ids, b.attention_mask) for b in map(text.collate, text.batches(0, shuffle=False))]
    scores = importance(teacher.model, batches)
    order = orders(scores)
    tensors = {k.removeprefix("bert."): v for k, v in teacher.model.state_dict().items() if v.is_floating_point()}
    permuted = permute(tensors, order, teacher.config.num_attention_heads)
    tmp = out.with_name(f".tmp-{ORDERED}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in permuted.items()}, str(tmp / "model.safetensors"), {"format": "pt"})
    teacher.config.to_json_file(str(tmp / "config.json"))
    teacher.tokenizer.save_pretrained(str(tmp))
    about = {"sequences": len(text), "tokens": int(sum(int(m.sum()) for _, m in batches))}
    write_json(tmp / RECORD, {**about, "orders": order, "scores": {k: v.tolist() for k, v in scores.items()},
                              "made_from": record})  # fmt: skip
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def layer_order(run_dir: Any, max_layers: int) -> tuple[int, ...]:
    """The order in which the run's supernet (of `max_layers` layers) drops layers for shallower archs, most
    important first, from its ordered teacher; () without one (plain first-k slicing). A teacher deeper than the
    space starts the supernet from its `max_layers` most important layers (`kept_layers`), renumbered."""
    from pathlib import Path

    from mosnas.workspace.records import read_json

    path = Path(run_dir) / ORDERED / RECORD
    if not path.is_file():
        return ()
    order = read_json(path)["orders"]["layers"]
    keep = depth_layers(order, max_layers)
    return tuple(keep.index(i) for i in order if i in keep)


def kept_layers(run_dir: Any, max_layers: int) -> list[int] | None:
    """The teacher layers a space of `max_layers` layers starts from (the most important, in order); None
    without an ordered teacher (the first layers)."""
    from pathlib import Path

    from mosnas.workspace.records import read_json

    path = Path(run_dir) / ORDERED / RECORD
    return depth_layers(read_json(path)["orders"]["layers"], max_layers) if path.is_file() else None
