"""The translation search space (HAT's): encoder-decoder archs with per-layer FFN widths and heads,
elastic decoder depth and per-decoder-layer encoder-decoder attention spans."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.core.space import Schema, Space, arch_from_dict, arch_from_json, arch_to_dict, read_space
from mosnas.errors import ArchError, ConfigError


@dataclass(frozen=True)
class Arch:
    """One encoder-decoder subnetwork; per-layer tuples have one entry per layer."""

    encoder_embed_dim: int
    decoder_embed_dim: int
    encoder_ffn_dims: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_ffn_dims: tuple[int, ...]
    decoder_self_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_spans: tuple[int, ...]  # decoder layer i attends to the last k encoder layers

    @property
    def encoder_layers(self) -> int:
        return len(self.encoder_ffn_dims)

    @property
    def decoder_layers(self) -> int:
        return len(self.decoder_ffn_dims)

    def to_dict(self) -> dict[str, Any]:
        return arch_to_dict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Any) -> Arch:
        return arch_from_dict(cls, raw)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        return arch_from_json(cls, text)


def _check_space(space: Space, source: str) -> None:
    for key in ("encoder_heads", "decoder_self_heads", "decoder_cross_heads"):
        bad = [h for h in space.choices[key] if space.qkv_dim % h]
        if bad:
            raise ConfigError(f"{source}: qkv_dim {space.qkv_dim} is not divisible by {key} {bad}")
    if max(space.decoder_span) > min(space.encoder_layers):
        raise ConfigError(
            f"{source}: decoder_span up to {max(space.decoder_span)} needs at least that many "
            f"encoder layers, but encoder_layers allows {min(space.encoder_layers)}"
        )


def _check_arch(space: Space, arch: Arch) -> None:
    too_far = [k for k in arch.decoder_spans if k > arch.encoder_layers]
    if too_far:
        raise ArchError(f"arch decoder_spans {too_far} exceed the arch's {arch.encoder_layers} encoder layers")


SCHEMA = Schema(
    arch=Arch,
    lists=(
        "encoder_embed_dim",
        "decoder_embed_dim",
        "encoder_layers",
        "decoder_layers",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "encoder_heads",
        "decoder_self_heads",
        "decoder_cross_heads",
        "decoder_span",
    ),
    scalars=("qkv_dim",),  # HAT fixes q/k/v width: heads change the head size, not the parameter count
    globals=("encoder_embed_dim", "decoder_embed_dim"),
    stacks=(("encoder", "encoder_layers"), ("decoder", "decoder_layers")),
    per_layer=(  # a stack's first field gives its layer count
        ("encoder_ffn_dims", "encoder", "encoder_ffn_dim"),
        ("encoder_heads", "encoder", "encoder_heads"),
        ("decoder_ffn_dims", "decoder", "decoder_ffn_dim"),
        ("decoder_self_heads", "decoder", "decoder_self_heads"),
        ("decoder_cross_heads", "decoder", "decoder_cross_heads"),
        ("decoder_spans", "decoder", "decoder_span"),  # spans fit: max(decoder_span) <= min(encoder_layers)
    ),
    embedding=(  # HAT's 10 features, in HAT's order (the routers' and the latency predictor's input)
        ("encoder_embed_dim", "encoder_embed_dim"),
        ("decoder_embed_dim", "decoder_embed_dim"),
        ("encoder_layers", "encoder_layers"),
        ("decoder_layers", "decoder_layers"),
        ("encoder_ffn_dims", "encoder_ffn_dim"),
        ("decoder_ffn_dims", "decoder_ffn_dim"),
        ("encoder_heads", "encoder_heads"),
        ("decoder_self_heads", "decoder_self_heads"),
        ("decoder_cross_heads", "decoder_cross_heads"),
        ("decoder_spans", "decoder_span"),
    ),
    check_space=_check_space,
    check_arch=_check_arch,
)


def load_space(path: str | Path) -> Space:
    """Read and validate a translation search-space YAML file."""
    return read_space(path, SCHEMA)


def space_from_dict(raw: dict[str, Any], source: str = "space") -> Space:
    return Space.from_dict(raw, SCHEMA, source)
