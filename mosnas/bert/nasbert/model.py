"""The NAS-BERT supernet (a chain of elastic sublayers cut into blocks, Xu et al. KDD 2021 §3.1-3.2) and the
standalone encoder a picked arch exports to (BERT's embeddings, then one dense op per non-identity sublayer)."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from mosnas.bert.model import BertDenseConfig, BertEmbeddings
from mosnas.bert.nasbert.ops import DenseSublayer, ElasticSublayer, Op
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.errors import CheckpointError
from mosnas.workspace.files import load_tensors, read_json_file

MODEL_TYPE = "mosnas-nasbert"  # config.json's model_type: not a transformers architecture (see load_model)


class NasBertSupernet(nn.Module):
    """Every op of every sublayer (`ElasticSublayer`), run one block at a time: block(b, x, mask, path)."""

    def __init__(self, space: NasBertSpace, eps: float = 1e-12):
        super().__init__()
        self.space = space
        self.sublayers = nn.ModuleList(
            ElasticSublayer(space.ops(), space.width, space.head_dim, eps) for _ in range(space.sublayers)
        )

    def block(self, b: int, x: Tensor, attention_mask: Tensor, path: tuple[str, ...]) -> Tensor:
        """Block `b` (0-based) on x (B, T, C) with attention_mask (B, T) along `path` (its sublayers' op names)
        -> (B, T, C): what the block-wise loss compares with the teacher's hidden state at the block's end."""
        k = self.space.per_block
        if len(path) != k:
            raise ValueError(f"block {b} has {k} sublayers, the path names {len(path)} ops")
        for layer, op in zip(self.sublayers[b * k : (b + 1) * k], path):
            x = layer(x, attention_mask, op)
        return x

    def num_parameters(self, arch: tuple[str, ...] | None = None) -> int:
        """Parameters of `arch`'s ops (no embeddings), or of the whole supernet."""
        if arch is None:
            return sum(p.numel() for p in self.parameters())
        return sum(self.space.path_parameters(p) for p in self.space.split(self.space.validate(arch)))

    def forward(self, x: Tensor, attention_mask: Tensor, arch: tuple[str, ...]) -> Tensor:
        """The whole chain on the embeddings' output x (B, T, C) -> (B, T, C)."""
        for b, path in enumerate(self.space.split(self.space.validate(arch))):
            x = self.block(b, x, attention_mask, path)
        return x

    def init_from_teacher(self, teacher: nn.Module, head_dim: int) -> int:
        """Copy teacher layer i's attention into sublayer 2i's widest MHA and its FFN into sublayer 2i+1's widest
        FFN (with their LayerNorms) when those ops have the teacher's shape (`teacher`: a transformers BertModel
        or mosnas BertEncoder, whose layers are `encoder.layer`; `head_dim` its attention head size): a warm start
        (our choice; the paper trains its supernet from scratch). Returns the number of sublayers copied into."""
        h, copied = max(self.space.hidden_sizes), 0
        layers = teacher.encoder.layer
        width, inner = layers[0].attention.self.query.weight.shape[1], layers[0].intermediate.dense.weight.shape[0]
        if (width, head_dim, inner) != (self.space.width, self.space.head_dim, 4 * h) or h != width:
            return 0
        with torch.no_grad():
            for i, layer in enumerate(layers[: self.space.sublayers // 2]):
                mha, ffn = self.sublayers[2 * i], self.sublayers[2 * i + 1]
                if f"mha{h}" in mha.ops:
                    for name in ("query", "key", "value"):
                        getattr(mha, name).load_state_dict(getattr(layer.attention.self, name).state_dict())
                    mha.out.load_state_dict(layer.attention.output.dense.state_dict())
                    mha.norms[f"mha{h}"].load_state_dict(layer.attention.output.LayerNorm.state_dict())
                    copied += 1
                if f"ffn{h}" in ffn.ops:
                    ffn.up.load_state_dict(layer.intermediate.dense.state_dict())
                    ffn.down.load_state_dict(layer.output.dense.state_dict())
                    ffn.norms[f"ffn{h}"].load_state_dict(layer.output.LayerNorm.state_dict())
                    copied += 1
        return copied


def block_loss(
    net: NasBertSupernet, b: int, start: Tensor, end: Tensor, attention_mask: Tensor, path: tuple[str, ...]
) -> Tensor:
    """NAS-BERT's block-wise distillation loss (§3.2.1, Eq. 1: L_n = ||f(Y_{n-1}; A_n) - Y_n||^2): block `b`
    along `path` run on the teacher's hidden state at the block's start `start` (B, T, C), against the teacher's
    at its end `end` (B, T, C); the squared error averaged over real tokens (attention_mask (B, T) = 1) and
    channels. A scalar."""
    out = net.block(b, start, attention_mask, path)
    keep = attention_mask[..., None].to(out.dtype)
    return ((out - end) ** 2 * keep).sum() / (keep.sum() * out.shape[-1]).clamp(min=1)


@dataclass(frozen=True)
class NasBertConfig:
    """A standalone NAS-BERT encoder: BERT embeddings of `width`, then `ops` (non-identity op names in order)."""

    vocab_size: int
    width: int
    ops: tuple[str, ...]
    head_dim: int = 32
    max_position: int = 512
    type_vocab: int = 2
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": MODEL_TYPE, **asdict(self), "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NasBertConfig:
        keys = set(cls.__dataclass_fields__)
        return cls(**{k: (tuple(v) if k == "ops" else v) for k, v in raw.items() if k in keys})

    def embeddings_config(self) -> BertDenseConfig:
        return BertDenseConfig(
            vocab_size=self.vocab_size, hidden=self.width, layers=0, heads=self.width // self.head_dim,
            ffn=4 * self.width, max_position=self.max_position, type_vocab=self.type_vocab,
            layer_norm_eps=self.layer_norm_eps, dropout=0.0, attention_dropout=0.0,
        )  # fmt: skip


class NasBertModel(nn.Module):
    """The exported encoder: forward(input_ids (B, T), attention_mask (B, T)) -> last hidden state (B, T, C).
    A plain nn.Module of standard ops (Linear, Conv1d, LayerNorm, scaled-dot-product attention): it runs
    without the supernet and exports to ONNX (`export_onnx`)."""

    def __init__(self, cfg: NasBertConfig):
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg.embeddings_config())
        self.layers = nn.ModuleList(
            DenseSublayer(Op.parse(name), cfg.width, cfg.head_dim, cfg.layer_norm_eps) for name in cfg.ops
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x


def export(net: NasBertSupernet, arch: tuple[str, ...], embeddings: BertEmbeddings, vocab_size: int) -> NasBertModel:
    """The standalone encoder of `arch`: copies of `embeddings` (e.g. the teacher's) and of each non-identity
    sublayer's op slices; identity sublayers are left out (a shallower model)."""
    arch = net.space.validate(arch)
    kept = [(i, name) for i, name in enumerate(arch) if name != "identity"]
    emb = embeddings.position_embeddings.weight
    cfg = NasBertConfig(
        vocab_size=vocab_size, width=net.space.width, ops=tuple(n for _, n in kept), head_dim=net.space.head_dim,
        max_position=emb.shape[0], type_vocab=embeddings.token_type_embeddings.weight.shape[0],
        layer_norm_eps=embeddings.LayerNorm.eps,
    )  # fmt: skip
    model = NasBertModel(cfg)
    own = model.embeddings.state_dict()  # a transformers BertEmbeddings also holds id buffers: not weights
    model.embeddings.load_state_dict({k: v.detach().clone() for k, v in embeddings.state_dict().items() if k in own})
    for j, (i, name) in enumerate(kept):
        model.layers[j].load_state_dict(net.sublayers[i].dense(name).state_dict())
    return model.eval()


def save_model(model: NasBertModel, out_dir: str | Path, arch: tuple[str, ...] | None = None) -> Path:
    """Write `model.safetensors` and `config.json` (model_type mosnas-nasbert, the op list) to `out_dir`, plus
    `arch.json` (the full arch, identities included) when given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(model.cfg.to_dict(), indent=1), encoding="utf-8")
    if arch is not None:
        (out / "arch.json").write_text(json.dumps({"ops": list(arch)}, indent=1), encoding="utf-8")
    return out


def load_model(model_dir: str | Path) -> NasBertModel:
    """The NasBertModel saved in `model_dir` (needs only this module and torch). CheckpointError when the folder
    lacks its files, is not a NAS-BERT export, or its weights do not match its config."""
    d = Path(model_dir)
    for name in ("model.safetensors", "config.json"):
        if not (d / name).is_file():
            raise CheckpointError(f"{d} is not a NAS-BERT model folder (missing {name})")
    raw = read_json_file(d / "config.json", "model config")
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        raise CheckpointError(f"{d}/config.json: not a NAS-BERT model (model_type {MODEL_TYPE!r})")
    try:
        model = NasBertModel(NasBertConfig.from_dict(raw))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{d}/config.json is not a valid NAS-BERT config: {e}") from None
    tensors = load_tensors(d / "model.safetensors")
    own = model.state_dict()
    if set(own) != set(tensors) or any(own[k].shape != tensors[k].shape for k in own):
        raise CheckpointError(f"{d}/model.safetensors does not match its config.json")
    model.load_state_dict(tensors)
    return model.eval()


def export_onnx(model: NasBertModel, path: str | Path, seq_len: int = 16, opset: int = 17) -> Path:
    """`model` as ONNX: inputs input_ids, attention_mask (batch, sequence) int64 with dynamic axes (the mask
    left out by the exporter when no op reads it: FFNs only), output hidden (batch, sequence, C); through
    torch.onnx.export's TorchScript exporter (it needs no onnxscript; its deprecation warning is silenced).
    Check it with onnxruntime (tests/test_nasbert_ops.py)."""
    path = Path(path)
    ids = torch.ones(1, seq_len, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _onnx_export(model, ids, path, opset)
    return path


def _onnx_export(model: NasBertModel, ids: Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        model.eval(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["hidden"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "hidden": {0: "batch", 1: "sequence"}},
        opset_version=opset,
        dynamo=False,
    )  # fmt: skip
