"""The teacher cut to a search space narrower or shallower than itself, so that `bert.init=teacher` starts any
space from the teacher: AutoDistil's tiny and small sub-spaces under all-MiniLM-L6-v2, or a 6-layer space under
a 12-layer BERT-base.

Each tensor keeps its top-left block at the space's largest shape (the first layers, the first hidden units,
the first FFN neurons): exactly the weights the supernet's slicing gives a subnet of that shape, so the largest
arch of the cut space starts as the teacher's own top-left sub-network. Written once per run by `prepare`
(`teacher_init.safetensors`, a run file that --force removes) and only when the teacher does not fit."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from mosnas.bert.model import BertDenseConfig, BertEncoder
from mosnas.core.space import Space
from mosnas.workspace.files import load_tensors

CROPPED = "teacher_init.safetensors"


def largest_shapes(space: Space, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the dense encoder of the space's largest arch."""
    a = space.largest()
    with torch.device("meta"):
        model = BertEncoder(BertDenseConfig(vocab_size, a.hidden, a.layers, a.heads, a.ffn))
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def crop_teacher(teacher_file: Path, space: Space, vocab_size: int, out: Path, layers: list[int] | None = None) -> bool:
    """Write the teacher's float tensors (a `bert.` prefix dropped) cut to the space's largest arch into `out`;
    False, writing nothing, when every tensor fits as it is (the teacher is the space's largest shape or smaller).
    `layers`: the teacher layers the space's layers take, in order (default: the first ones)."""
    shapes = largest_shapes(space, vocab_size)
    tensors = {
        k.removeprefix("bert."): v
        for k, v in load_tensors(teacher_file, "teacher weights").items()
        if v.is_floating_point()
    }
    if layers is not None:  # e.g. the most important layers of an importance-ordered teacher, renumbered
        rename = {f"encoder.layer.{src}.": f"encoder.layer.{dst}." for dst, src in enumerate(layers)}
        tensors = {
            next((new + n[len(old) :] for old, new in rename.items() if n.startswith(old)), n): t
            for n, t in tensors.items()
            if not n.startswith("encoder.layer.") or any(n.startswith(old) for old in rename)
        }
    if all(n in shapes and all(a <= b for a, b in zip(t.shape, shapes[n])) for n, t in tensors.items()):
        return False
    cut = {n: t[tuple(slice(0, s) for s in shapes[n])].contiguous() for n, t in tensors.items() if n in shapes}
    tmp = out.with_name(f".tmp-{out.name}")
    save_file(cut, str(tmp))
    tmp.rename(out)
    return True
