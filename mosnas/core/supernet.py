"""The supernet: max-size tensors in a weight generator (shared / layer-MoS / neuron-MoS / k-shot), run for any
arch through the model family's own dense model with the arch's generated weights."""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from mosnas.config import SupernetConfig
from mosnas.core.elastic import WeightGenerator
from mosnas.core.space import Arch, Space
from mosnas.errors import ConfigError


class DenseFamily(Protocol):
    """What a supernet needs from a model family (a family package such as mosnas.mt satisfies it)."""

    def dense_config(self, arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> Hashable:
        """The (hashable) config of one arch's dense model."""

    def dense_model(self, config: Any) -> nn.Module:
        """The dense model of a config, initialized (`reset_parameters()` draws a fresh init)."""

    def mixed_group(self, name: str, mos_attention: bool) -> tuple[str, str] | None:
        """(layer, linear) of a dense tensor that MoS mixes, or None for a tensor that is only sliced."""

    # Optional: `source_names(arch, names, cfg) -> {dense name: supernet tensor it slices}` for a family whose
    # shallower archs take other layers than the first ones (BERT's importance order); without it, each dense
    # tensor slices the supernet tensor of its own name.


@functools.lru_cache(maxsize=256)
def _meta_model(build: Any, config: Hashable) -> nn.Module:
    # Shapes only (no memory); cached because archs repeat and the module holds no tensors.
    with torch.device("meta"):
        return build(config)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


class Supernet(nn.Module):
    """Every arch of `space` at once; weights come from a shared / layer-MoS / neuron-MoS / k-shot generator."""

    def __init__(self, space: Space, vocab_size: int, cfg: SupernetConfig, family: DenseFamily):
        super().__init__()
        self.space, self.vocab_size, self.cfg, self.family = space, vocab_size, cfg, family
        max_model = family.dense_model(self.dense_config(space.largest()))
        init = {name: p.detach() for name, p in max_model.named_parameters()}
        groups = {n: family.mixed_group(n, cfg.mos_attention) for n in init}
        self.generator = WeightGenerator(
            {n: tuple(t.shape) for n, t in init.items()},
            cfg.generator,
            cfg.num_experts,
            cfg.router_hidden,
            space.embed_dim,
            {n: g for n, g in groups.items() if g is not None},
            cfg.router_input,
        )
        self._init_weights(init, max_model)

    def _init_weights(self, init: dict[str, Tensor], max_model: nn.Module) -> None:
        gen, cfg = self.generator, self.cfg
        gen.load_dense(init, experts="all")  # `copy`: every expert starts identical
        if cfg.pretrained:
            path = Path(cfg.pretrained)
            if not path.is_file():
                raise ConfigError(f"supernet.pretrained: file not found: {path}")
            try:  # a dense model of this family (an export): the supernet's names
                tensors = load_file(str(path))
            except Exception as e:  # safetensors' own error type for a damaged header, OSError for a short file
                raise ConfigError(f"supernet.pretrained: {path} is not a readable safetensors file ({e})") from None
            # only floating tensors are weights: integer ones are buffers (e.g. Hugging Face's position_ids)
            tensors = {n: t for n, t in tensors.items() if t.is_floating_point()}
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
            # Only draws are widened: a tensor two draws agree on (LayerNorm's ones, zero biases, which k-shot
            # mixes too) is a constant, and a mixture of equal constants is that constant already.
            scale = gen.num_experts**0.5 if cfg.expert_init == "independent" else 1.0
            first_draw = {n: t.clone() for n, t in init.items() if gen.is_mixed(n)}  # `init` aliases max_model
            for k in range(first, gen.num_experts):
                max_model.reset_parameters()  # a fresh draw for each expert
                fresh = {n: p.detach() for n, p in max_model.named_parameters() if n in first_draw}
                gen.load_dense({n: t if torch.equal(t, first_draw[n]) else t * scale for n, t in fresh.items()}, k)

    def dense_config(self, arch: Arch) -> Hashable:
        return self.family.dense_config(arch, self.space, self.vocab_size, self.cfg)

    def num_parameters(self, arch: Arch) -> int:
        """The parameters of `arch`'s dense model (what its export holds), from the shapes alone."""
        return sum(
            math.prod(s) for s in _shapes(_meta_model(self.family.dense_model, self.dense_config(arch))).values()
        )

    def embed(self, arch: Arch) -> Tensor:
        device = next(self.parameters()).device
        return torch.tensor(self.space.embed(arch), dtype=torch.float32, device=device)

    def weights(self, arch: Arch) -> dict[str, Tensor]:
        """The arch's dense state dict: sliced (shared) or mixed (MoS), differentiable."""
        shapes = _shapes(_meta_model(self.family.dense_model, self.dense_config(arch)))
        rename = getattr(self.family, "source_names", None)
        source = rename(arch, list(shapes), self.cfg) if rename is not None else {n: n for n in shapes}
        return self.generator(self.embed(arch), shapes, source)

    def forward(self, *inputs_and_arch: Any) -> Any:
        """`net(*inputs, arch)`: the dense model's output for `arch` on `inputs` (for translation, logits
        (B, T, V) of `net(src, prev, arch)`); weights are generated once per call."""
        *inputs, arch = inputs_and_arch
        dense = _meta_model(self.family.dense_model, self.dense_config(arch))
        dense.train(self.training)
        return torch.func.functional_call(dense, self.weights(arch), tuple(inputs), strict=True)

    @torch.no_grad()
    def export(self, arch: Arch) -> nn.Module:
        """Collapse the mixture for `arch` into the family's ordinary dense model (no routers)."""
        self.space.validate(arch)
        with torch.device("meta"):
            model = self.family.dense_model(self.dense_config(arch))
        model.load_state_dict({n: t.detach().clone() for n, t in self.weights(arch).items()}, assign=True)
        return model.eval()
