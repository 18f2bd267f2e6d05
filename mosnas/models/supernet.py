"""The translation supernet: generated weights run through the one dense Transformer."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from mosnas.config import SupernetConfig
from mosnas.elastic import WeightGenerator
from mosnas.errors import ConfigError
from mosnas.models.transformer import Transformer, TransformerConfig
from mosnas.space import Arch, Space


def dense_config(arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> TransformerConfig:
    """The dense Transformer config of one arch of the supernet.

    With shared embeddings the dense model holds one table, max(e, d) wide (each side uses its first
    columns): what the supernet holds too, so parameter counts grow with every width. Position codes
    are computed at the space's widest embedding and sliced (HAT), so they nest across archs."""
    return TransformerConfig(
        vocab_size=vocab_size,
        encoder_embed_dim=arch.encoder_embed_dim,
        decoder_embed_dim=arch.decoder_embed_dim,
        qkv_dim=space.qkv_dim,
        encoder_ffn_dims=arch.encoder_ffn_dims,
        encoder_heads=arch.encoder_heads,
        decoder_ffn_dims=arch.decoder_ffn_dims,
        decoder_self_heads=arch.decoder_self_heads,
        decoder_cross_heads=arch.decoder_cross_heads,
        decoder_spans=arch.decoder_spans,
        share_all_embeddings=cfg.share_embeddings,
        prenorm=cfg.prenorm,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        position_dim=max(*space.encoder_embed_dim, *space.decoder_embed_dim),
    )


@functools.lru_cache(maxsize=256)
def _meta_model(cfg: TransformerConfig) -> Transformer:
    # Shapes only (no memory); cached because archs repeat and the module holds no tensors.
    with torch.device("meta"):
        return Transformer(cfg)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


class Supernet(nn.Module):
    """Every arch of `space` at once; weights come from a shared / layer-MoS / neuron-MoS generator."""

    def __init__(self, space: Space, vocab_size: int, cfg: SupernetConfig):
        super().__init__()
        self.space, self.vocab_size, self.cfg = space, vocab_size, cfg
        max_model = Transformer(dense_config(space.largest(), space, vocab_size, cfg))
        init = {name: p.detach() for name, p in max_model.named_parameters()}
        self.generator = WeightGenerator(
            {n: tuple(t.shape) for n, t in init.items()},
            cfg.generator,
            cfg.num_experts,
            cfg.router_hidden,
            Space.EMBED_DIM,
            cfg.mos_attention,
        )
        self._init_weights(init, max_model)

    def _init_weights(self, init: dict[str, Tensor], max_model: Transformer) -> None:
        gen, cfg = self.generator, self.cfg
        gen.load_dense(init, experts="all")  # `copy`: every expert starts identical
        if cfg.pretrained:
            path = Path(cfg.pretrained)
            if not path.is_file():
                raise ConfigError(f"supernet.pretrained: file not found: {path}")
            tensors = {self.source_name(n): t for n, t in load_file(str(path)).items()}
            bad = [
                n
                for n, t in tensors.items()
                if n not in gen.max_shapes or any(a > b for a, b in zip(t.shape, gen.max_shapes[n]))
            ]
            if bad:
                raise ConfigError(f"supernet.pretrained: {path} does not fit this space (e.g. tensor {bad[0]})")
            gen.load_dense(tensors, experts=0 if cfg.expert_init == "pretrained-first" else "all")
        if cfg.expert_init in ("independent", "pretrained-first") and gen.num_experts > 1:
            first = 1 if cfg.expert_init == "pretrained-first" else 0
            # A near-uniform mixture of m independent draws has 1/sqrt(m) of one draw's std; drawing
            # independent experts sqrt(m) wider gives the generated weights the dense init's scale, as
            # with `shared` and `copy`. (pretrained-first keeps standard draws beside its pretrained expert.)
            scale = gen.num_experts**0.5 if cfg.expert_init == "independent" else 1.0
            for k in range(first, gen.num_experts):
                max_model.reset_parameters()  # a fresh draw for each expert
                fresh = {n: p.detach() * scale for n, p in max_model.named_parameters() if gen.is_mixed(n)}
                gen.load_dense(fresh, experts=k)

    def source_name(self, dense_name: str) -> str:
        """The supernet tensor that a dense tensor is cut from."""
        if self.cfg.share_embeddings and dense_name.endswith("embed.weight"):
            return "embed.weight"
        if not self.cfg.share_embeddings and dense_name == "embed.weight":
            raise ConfigError("a dense model with one shared table cannot come from separate tables")
        return dense_name

    def dense_config(self, arch: Arch) -> TransformerConfig:
        return dense_config(arch, self.space, self.vocab_size, self.cfg)

    def embed(self, arch: Arch) -> Tensor:
        device = next(self.parameters()).device
        return torch.tensor(self.space.embed(arch), dtype=torch.float32, device=device)

    def weights(self, arch: Arch) -> dict[str, Tensor]:
        """The arch's dense state dict: sliced (shared) or mixed (MoS), differentiable."""
        shapes = _shapes(_meta_model(self.dense_config(arch)))
        return self.generator(self.embed(arch), shapes, {n: self.source_name(n) for n in shapes})

    def forward(self, src: Tensor, prev: Tensor, arch: Arch) -> Tensor:
        """Logits (B, T, V) of `arch` on a batch; weights are generated once per call."""
        dense = _meta_model(self.dense_config(arch))
        dense.train(self.training)
        return torch.func.functional_call(dense, self.weights(arch), (src, prev), strict=True)

    @torch.no_grad()
    def export(self, arch: Arch) -> Transformer:
        """Collapse the mixture for `arch` into an ordinary dense Transformer (no routers)."""
        self.space.validate(arch)
        with torch.device("meta"):
            model = Transformer(self.dense_config(arch))
        model.load_state_dict({n: t.detach().clone() for n, t in self.weights(arch).items()}, assign=True)
        return model.eval()
