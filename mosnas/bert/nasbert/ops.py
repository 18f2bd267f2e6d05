"""NAS-BERT's candidate operations (Xu et al., KDD 2021, §3.1, Table 1): each sublayer of the supernet picks
one of multi-head attention (MHA), a feed-forward network (FFN) or a separable convolution (kernel 3, 5 or 7),
each at one of several hidden sizes, or identity.

At the all-MiniLM-L6-v2 scale (our choice, docs: README "NAS-BERT"): the residual stream stays at the teacher's
width C = 384, so a block's input and output are the teacher's hidden states with no projection (the paper lets
the width vary and learns linear maps at each block's edges, §3.2.1). Every op maps C -> its hidden size h -> C,
adds the result to its input and applies a post-LayerNorm, as a BERT sublayer does:
- `mha{h}`: Q, K, V: C -> h (h / head_dim heads), softmax(q k^T / sqrt(head_dim) + mask) v, output h -> C;
  at h = 384 (12 heads of 32) it is exactly the teacher's attention sublayer.
- `ffn{h}`: C -> 4h, exact GELU, 4h -> C; at h = 384 exactly the teacher's FFN sublayer.
- `conv{k}_{h}`: a pointwise C -> h, a depthwise Conv1d of kernel k over time (groups = h, padding k // 2) on the
  masked sequence (padding does not leak into real tokens), GELU, a pointwise h -> C (the paper's Fig. 1 draws a
  depthwise + pointwise pair; the order and the GELU are ours).
- `identity`: the input unchanged (no LayerNorm); an exported model leaves it out, which makes it shallower.

Weight sharing in the supernet (`ElasticSublayer`): one MHA, one FFN and one conv per kernel at the largest
hidden size; a smaller h uses the leading slice of each projection (HAT's and AutoDistil's sharing within a
layer); each op keeps its own LayerNorm. `DenseSublayer` is one op as a standalone module: what a picked arch
exports, and what the supernet computes for that op (`ElasticSublayer.dense(op)` copies the slices out)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from mosnas.bert.nasbert.hf_modeling import DenseSublayer, additive_mask, parse_op, separable_conv
from mosnas.bert.nasbert.hf_modeling import attention as _attention


@dataclass(frozen=True)
class Op:
    """One candidate operation: `kind` mha | ffn | conv | identity, hidden size `hidden` (0 for identity),
    `kernel` (conv only, else 0). `name` is its spelling in an arch: mha256, ffn512, conv5_192, identity."""

    kind: str
    hidden: int = 0
    kernel: int = 0

    @property
    def name(self) -> str:
        if self.kind == "identity":
            return "identity"
        return f"conv{self.kernel}_{self.hidden}" if self.kind == "conv" else f"{self.kind}{self.hidden}"

    @classmethod
    def parse(cls, name: str) -> Op:
        """The op of `name`; ValueError for a name that is none of mha{h}, ffn{h}, conv{k}_{h}, identity."""
        kind, hidden, kernel = parse_op(name)
        return cls(kind, hidden, kernel)


def op_parameters(op: Op, width: int, head_dim: int = 32) -> int:
    """Parameters of `op` on a residual stream of `width` (weights, biases and its LayerNorm)."""
    c, h = width, op.hidden
    if op.kind == "identity":
        return 0
    norm = 2 * c
    if op.kind == "mha":
        return 3 * (c * h + h) + h * c + c + norm
    if op.kind == "ffn":
        return c * 4 * h + 4 * h + 4 * h * c + c + norm
    return c * h + h + h * op.kernel + h + h * c + c + norm  # pointwise down, depthwise (k per channel), up


class ElasticSublayer(nn.Module):
    """One supernet sublayer holding every op of the space at once (weights shared across hidden sizes by
    leading slices, one LayerNorm per op): forward(x (B, T, C), attention_mask (B, T), op) -> (B, T, C)."""

    def __init__(self, ops: list[Op], width: int, head_dim: int = 32, eps: float = 1e-12):
        super().__init__()
        self.width, self.head_dim = width, head_dim
        self.ops = {op.name: op for op in ops}
        sizes = lambda kind: [op.hidden for op in ops if op.kind == kind]
        c = width
        if mha := sizes("mha"):
            h = max(mha)
            self.query, self.key, self.value, self.out = (nn.Linear(c, h), nn.Linear(c, h), nn.Linear(c, h),
                                                          nn.Linear(h, c))  # fmt: skip
        if ffn := sizes("ffn"):
            self.up, self.down = nn.Linear(c, 4 * max(ffn)), nn.Linear(4 * max(ffn), c)
        self.convs = nn.ModuleDict()
        for kernel in sorted({op.kernel for op in ops if op.kind == "conv"}):
            h = max(op.hidden for op in ops if op.kind == "conv" and op.kernel == kernel)
            self.convs[str(kernel)] = nn.ModuleDict(
                {"down": nn.Linear(c, h), "conv": nn.Conv1d(h, h, kernel, padding=kernel // 2, groups=h),
                 "up": nn.Linear(h, c)}
            )  # fmt: skip
        self.norms = nn.ModuleDict({op.name: nn.LayerNorm(c, eps=eps) for op in ops if op.kind != "identity"})

    def _slices(self, op: Op) -> dict[str, Tensor]:
        """The supernet's tensors of `op`, named as DenseSublayer's parameters."""
        h = op.hidden
        if op.kind == "mha":
            out = {f"{n}.weight": getattr(self, n).weight[:h] for n in ("query", "key", "value")}
            out |= {f"{n}.bias": getattr(self, n).bias[:h] for n in ("query", "key", "value")}
            out |= {"out.weight": self.out.weight[:, :h], "out.bias": self.out.bias}
        elif op.kind == "ffn":
            out = {"up.weight": self.up.weight[: 4 * h], "up.bias": self.up.bias[: 4 * h]}
            out |= {"down.weight": self.down.weight[:, : 4 * h], "down.bias": self.down.bias}
        else:
            m = self.convs[str(op.kernel)]
            out = {"down.weight": m["down"].weight[:h], "down.bias": m["down"].bias[:h]}
            out |= {"conv.weight": m["conv"].weight[:h], "conv.bias": m["conv"].bias[:h]}
            out |= {"up.weight": m["up"].weight[:, :h], "up.bias": m["up"].bias}
        norm = self.norms[op.name]
        return out | {"norm.weight": norm.weight, "norm.bias": norm.bias}

    def forward(self, x: Tensor, attention_mask: Tensor, op_name: str) -> Tensor:
        op = self.ops.get(op_name)
        if op is None:
            raise ValueError(f"op {op_name!r} is not one of this sublayer's: {', '.join(self.ops)}")
        if op.kind == "identity":
            return x
        w = self._slices(op)
        if op.kind == "mha":
            q, k, v = (F.linear(x, w[f"{n}.weight"], w[f"{n}.bias"]) for n in ("query", "key", "value"))
            ctx = _attention(q, k, v, additive_mask(attention_mask, x.dtype), self.head_dim)
            y = F.linear(ctx, w["out.weight"], w["out.bias"])
        elif op.kind == "ffn":
            y = F.linear(F.gelu(F.linear(x, w["up.weight"], w["up.bias"])), w["down.weight"], w["down.bias"])
        else:
            keep = attention_mask[..., None].to(x.dtype)
            y = separable_conv(x, keep, w["down.weight"], w["down.bias"], w["conv.weight"], w["conv.bias"],
                               w["up.weight"], w["up.bias"], op.kernel)  # fmt: skip
        return F.layer_norm(x + y, (self.width,), w["norm.weight"], w["norm.bias"], self.norms[op.name].eps)

    def dense(self, op_name: str) -> DenseSublayer:
        """`op_name` as a standalone DenseSublayer holding copies of its slices (the export of one sublayer)."""
        op = self.ops[op_name]
        eps = self.norms[op_name].eps if op.kind != "identity" else 1e-12
        layer = DenseSublayer(op_name, self.width, self.head_dim, eps)
        if op.kind != "identity":
            layer.load_state_dict({k: v.detach().clone() for k, v in self._slices(op).items()})
        return layer
