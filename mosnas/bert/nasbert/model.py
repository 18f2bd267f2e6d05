"""The NAS-BERT supernet (a chain of elastic sublayers cut into blocks, Xu et al. KDD 2021 §3.1-3.2) and the
standalone encoder a picked arch exports to (BERT's embeddings, then one dense op per non-identity sublayer)."""

from __future__ import annotations

import inspect
import json
import shutil
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from mosnas.bert.nasbert.hf_modeling import AUTO_MAP, MODEL_TYPE, NasBertConfig, NasBertModel
from mosnas.bert.nasbert.ops import ElasticSublayer
from mosnas.bert.nasbert.space import NasBertSpace
from mosnas.errors import CheckpointError
from mosnas.workspace.files import load_tensors, read_json_file


class NasBertSupernet(nn.Module):
    """Every op of every sublayer (`ElasticSublayer`), run one block at a time: block(b, x, mask, path)."""

    generator_name = "nasbert"  # what the training log names it (the MoS generators are supernet.generator)

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


@torch.no_grad()
def heldout_block_loss(
    net: NasBertSupernet,
    b: int,
    path: tuple[str, ...],
    batches: list[tuple[Tensor, tuple[Tensor, ...]]],
    bf16: bool = False,
) -> float:
    """`block_loss` of block b along `path` per real token and channel over held-out `batches` of (attention_mask
    (B, T), the teacher's states at the block boundaries): the loss shrinking ranks paths by and the table holds.
    `bf16`: under bfloat16 autocast (the run's training precision)."""
    total, tokens = 0.0, 0
    for mask, states in batches:
        with torch.autocast(mask.device.type, dtype=torch.bfloat16, enabled=bf16):
            mean = block_loss(net, b, states[b], states[b + 1], mask, path)
        n = int(mask.sum())
        total, tokens = total + float(mean) * n, tokens + n
    return total / max(tokens, 1)


def export(
    net: NasBertSupernet,
    arch: tuple[str, ...],
    embeddings: nn.Module,
    vocab_size: int,
    pooler: nn.Linear | None = None,
) -> NasBertModel:
    """The standalone encoder of `arch` (a Hugging Face NasBertModel, mosnas.bert.nasbert.hf_modeling): copies of
    `embeddings` (BERT's, e.g. the teacher's), of each non-identity sublayer's op slices, and of `pooler` (e.g.
    the teacher's pooler dense; default BERT's init); identity sublayers are left out (a shallower model)."""
    arch = net.space.validate(arch)
    kept = [(i, name) for i, name in enumerate(arch) if name != "identity"]
    cfg = NasBertConfig(
        vocab_size=vocab_size, width=net.space.width, ops=[n for _, n in kept], head_dim=net.space.head_dim,
        max_position=embeddings.position_embeddings.weight.shape[0],
        type_vocab=embeddings.token_type_embeddings.weight.shape[0], layer_norm_eps=embeddings.LayerNorm.eps,
    )  # fmt: skip
    model = NasBertModel(cfg)
    own = model.embeddings.state_dict()  # a transformers BertEmbeddings also holds id buffers: not weights
    model.embeddings.load_state_dict({k: v.detach().clone() for k, v in embeddings.state_dict().items() if k in own})
    for j, (i, name) in enumerate(kept):
        model.layers[j].load_state_dict(net.sublayers[i].dense(name).state_dict())
    if pooler is not None:
        model.pooler.load_state_dict({k: v.detach().clone() for k, v in pooler.state_dict().items()})
    return model.eval()


def save_model(model: NasBertModel, out_dir: str | Path, arch: tuple[str, ...] | None = None, tokenizer=None) -> Path:
    """A Hugging Face folder of `model`: `model.safetensors`, `config.json` (model_type mosnas-nasbert, the op
    list, and an auto_map to the `modeling_nasbert.py` copied beside it, so transformers loads the folder with
    trust_remote_code and no mosnas), the tokenizer's files when given, and `arch.json` (the full arch,
    identities included) when given."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    model.config.auto_map = dict(AUTO_MAP)
    bars = transformers.logging.is_progress_bar_enabled()
    transformers.logging.disable_progress_bar()  # a bar for writing one small file is noise in a run's output
    try:
        model.save_pretrained(str(out), safe_serialization=True)
    finally:
        if bars:
            transformers.logging.enable_progress_bar()
    shutil.copyfile(inspect.getfile(NasBertModel), out / "modeling_nasbert.py")  # hf_modeling.py
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    if arch is not None:
        (out / "arch.json").write_text(json.dumps({"ops": list(arch)}, indent=1), encoding="utf-8")
    return out


def load_model(model_dir: str | Path) -> NasBertModel:
    """The NasBertModel saved in `model_dir` (eval mode). CheckpointError when the folder lacks its files, is
    not a NAS-BERT export, or its weights do not match its config."""
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


class _LastHidden(nn.Module):
    def __init__(self, model: NasBertModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids, attention_mask).last_hidden_state


def export_onnx(model: NasBertModel, path: str | Path, seq_len: int = 16, opset: int = 17) -> Path:
    """`model` as ONNX: inputs input_ids, attention_mask (batch, sequence) int64 with dynamic axes (the mask
    left out by the exporter when no op reads it: FFNs only), output hidden (batch, sequence, C); through
    torch.onnx.export's TorchScript exporter (it needs no onnxscript; its deprecation warning is silenced).
    Check it with onnxruntime (tests/test_nasbert_ops.py)."""
    path = Path(path)
    ids = torch.ones(1, seq_len, dtype=torch.long)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        _onnx_export(_LastHidden(model).eval(), ids, path, opset)
    return path


def _onnx_export(model: nn.Module, ids: Tensor, path: Path, opset: int) -> None:
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
