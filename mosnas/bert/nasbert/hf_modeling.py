"""A NAS-BERT encoder (Xu et al., KDD 2021) as a Hugging Face model: BERT's embeddings, then one operation per
kept sublayer — multi-head attention (`mha{h}`), feed-forward (`ffn{h}`) or separable convolution
(`conv{k}_{h}`) on a residual stream of `width`, each with a post-LayerNorm — and BERT's pooler.

This file needs only torch and transformers: mosnas copies it into every exported NAS-BERT folder as
`modeling_nasbert.py`, and the folder's config.json maps the Auto classes to it, so

    AutoModel.from_pretrained(folder, trust_remote_code=True)                      # last hidden state, pooler
    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2)

run it without mosnas (mosnas itself registers the classes and needs no remote code). Shapes: input_ids and
attention_mask (B, T) int64 (mask 1 for tokens, 0 for padding), hidden states (B, T, width)."""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

MODEL_TYPE = "mosnas-nasbert"
OP_PATTERN = re.compile(r"^(?:(mha|ffn)(\d+)|conv(\d+)_(\d+)|identity)$")


def parse_op(name: str) -> tuple[str, int, int]:
    """(kind, hidden, kernel) of an op name: mha256 -> ("mha", 256, 0), conv5_192 -> ("conv", 192, 5),
    identity -> ("identity", 0, 0). ValueError for any other name."""
    m = OP_PATTERN.match(name)
    if not m:
        raise ValueError(f"unknown NAS-BERT op {name!r} (expected mha<h>, ffn<h>, conv<k>_<h> or identity)")
    if name == "identity":
        return "identity", 0, 0
    if m.group(1):
        return m.group(1), int(m.group(2)), 0
    return "conv", int(m.group(4)), int(m.group(3))


def additive_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """attention_mask (B, T) 1 for tokens / 0 for padding -> (B, 1, 1, T): 0 or the dtype's most negative value."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, head_dim: int) -> Tensor:
    """softmax(q k^T / sqrt(head_dim) + mask) v over h / head_dim heads; q, k, v (B, T, h) -> (B, T, h)."""
    b, t, h = q.shape
    split = lambda y: y.view(b, t, h // head_dim, head_dim).transpose(1, 2)  # (B, heads, T, head_dim)
    ctx = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask, scale=1 / math.sqrt(head_dim))
    return ctx.transpose(1, 2).reshape(b, t, h)


def separable_conv(x: Tensor, keep: Tensor, down_w, down_b, conv_w, conv_b, up_w, up_b, kernel: int) -> Tensor:
    """Pointwise C -> h, depthwise Conv1d of `kernel` over time on the masked sequence (`keep` (B, T, 1): 1 for
    tokens; padding cannot leak), GELU, pointwise h -> C; x (B, T, C) -> (B, T, C)."""
    h = F.linear(x, down_w, down_b) * keep
    h = F.conv1d(h.transpose(1, 2), conv_w, conv_b, padding=kernel // 2, groups=h.shape[-1]).transpose(1, 2)
    return F.linear(F.gelu(h) * keep, up_w, up_b)


class DenseSublayer(nn.Module):
    """One op on a residual stream of `width`: forward(x (B, T, C), attention_mask (B, T)) -> LayerNorm(x + op(x))
    (identity: x)."""

    def __init__(self, name: str, width: int, head_dim: int = 32, eps: float = 1e-12):
        super().__init__()
        self.kind, h, self.kernel = parse_op(name)
        self.name, self.width, self.head_dim = name, width, head_dim
        c = width
        if self.kind == "identity":
            return
        if self.kind == "mha":
            if h % head_dim:
                raise ValueError(f"{name}: hidden {h} is not a multiple of the head size {head_dim}")
            self.query, self.key, self.value, self.out = (nn.Linear(c, h), nn.Linear(c, h), nn.Linear(c, h),
                                                          nn.Linear(h, c))  # fmt: skip
        elif self.kind == "ffn":
            self.up, self.down = nn.Linear(c, 4 * h), nn.Linear(4 * h, c)
        else:
            self.down = nn.Linear(c, h)
            self.conv = nn.Conv1d(h, h, self.kernel, padding=self.kernel // 2, groups=h)
            self.up = nn.Linear(h, c)
        self.norm = nn.LayerNorm(c, eps=eps)

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        if self.kind == "identity":
            return x
        if self.kind == "mha":
            ctx = attention(self.query(x), self.key(x), self.value(x), additive_mask(attention_mask, x.dtype),
                            self.head_dim)  # fmt: skip
            y = self.out(ctx)
        elif self.kind == "ffn":
            y = self.down(F.gelu(self.up(x)))
        else:
            keep, c = attention_mask[..., None].to(x.dtype), self.conv
            y = separable_conv(x, keep, self.down.weight, self.down.bias, c.weight, c.bias, self.up.weight,
                               self.up.bias, self.kernel)  # fmt: skip
        return self.norm(x + y)


class NasBertConfig(PretrainedConfig):
    """The exported encoder's shape: `ops` (the kept sublayers' op names, in order) on a stream of `width`."""

    model_type = MODEL_TYPE

    def __init__(
        self,
        vocab_size: int = 30522,
        width: int = 384,
        ops: list[str] | tuple[str, ...] = (),
        head_dim: int = 32,
        max_position: int = 512,
        type_vocab: int = 2,
        layer_norm_eps: float = 1e-12,
        hidden_dropout_prob: float = 0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size, self.width, self.ops, self.head_dim = vocab_size, width, list(ops), head_dim
        self.max_position, self.type_vocab, self.layer_norm_eps = max_position, type_vocab, layer_norm_eps
        self.hidden_dropout_prob, self.hidden_size = hidden_dropout_prob, width


class Embeddings(nn.Module):
    """BERT's: word + token type + absolute position embeddings, LayerNorm (names as transformers' BertModel)."""

    def __init__(self, cfg: NasBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position, cfg.width)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab, cfg.width)
        self.LayerNorm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x + self.position_embeddings(positions)[None])


class NasBertPreTrainedModel(PreTrainedModel):
    config_class = NasBertConfig
    base_model_prefix = "nasbert"

    def _init_weights(self, module: nn.Module) -> None:  # BERT's (initializer_range 0.02)
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            module.weight.data.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(0.0, 0.02)
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()


class NasBertModel(NasBertPreTrainedModel):
    """forward(input_ids, attention_mask, token_type_ids, output_hidden_states) -> last_hidden_state (B, T, C),
    pooler_output (B, C); with output_hidden_states, hidden_states: the embeddings' output and each sublayer's,
    1 + len(ops) tensors (B, T, C), as BertModel's (one per sublayer, not per MHA + FFN pair)."""

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(
            DenseSublayer(name, config.width, config.head_dim, config.layer_norm_eps) for name in config.ops
        )
        self.pooler = nn.Linear(config.width, config.width)  # BERT's: tanh(dense(hidden[:, 0]))
        self.post_init()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs) -> BaseModelOutputWithPooling:  # fmt: skip
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        token_type_ids = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        x = self.embeddings(input_ids, token_type_ids)
        x = F.dropout(x, self.config.hidden_dropout_prob, self.training)
        states = [x]
        for layer in self.layers:
            x = layer(x, attention_mask)
            states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        hidden = tuple(states) if output_hidden_states else None
        return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled, hidden_states=hidden)


class NasBertForSequenceClassification(NasBertPreTrainedModel):
    """The encoder, dropout and a linear head on the pooled output (BertForSequenceClassification's shape)."""

    def __init__(self, config: NasBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.nasbert = NasBertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.width, config.num_labels)
        self.post_init()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None, output_hidden_states: bool | None = None,
                **kwargs) -> SequenceClassifierOutput:  # fmt: skip
        out = self.nasbert(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


AUTO_MAP = {
    "AutoConfig": "modeling_nasbert.NasBertConfig",
    "AutoModel": "modeling_nasbert.NasBertModel",
    "AutoModelForSequenceClassification": "modeling_nasbert.NasBertForSequenceClassification",
}


def register() -> None:
    """Register the classes with transformers' Auto classes (what mosnas does before loading such a folder)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    try:
        AutoConfig.register(MODEL_TYPE, NasBertConfig)
        AutoModel.register(NasBertConfig, NasBertModel)
        AutoModelForSequenceClassification.register(NasBertConfig, NasBertForSequenceClassification)
    except ValueError:  # registered already
        pass
