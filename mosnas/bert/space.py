"""The BERT search space: encoders elastic in depth, hidden size, attention heads and FFN width.

Every dimension is chosen once per model (homogeneous layers), as in AutoDistil's and the MoS paper's BERT
spaces, because Hugging Face's `BertConfig` holds one `intermediate_size` and one `num_attention_heads` for
all layers: every student exports to a plain `BertModel` folder. (Per-layer FFN widths would need a custom
model class or FFNs padded with zero rows; neither is offered.)

Heads split the hidden size (head size = hidden / heads, as in BERT, so the query/key/value width is the
hidden size and heads change no parameter count). Every hidden size of a space must be divisible by every
head count of it, so that any sampled, mutated or crossed arch is a valid BERT (`check_space`); e.g. hidden
sizes in steps of 24 with heads {6, 12}, which keeps the teacher's 12 heads of 32 at hidden 384."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.core.space import Schema, Space, arch_from_dict, arch_from_json, arch_to_dict, read_space
from mosnas.errors import ArchError, ConfigError


@dataclass(frozen=True)
class Arch:
    """One BERT student: `layers` encoder layers of width `hidden`, `heads` attention heads, FFN width `ffn`."""

    layers: int
    hidden: int
    heads: int
    ffn: int

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
    bad = [(h, n) for h in space.hidden for n in space.heads if h % n]
    if bad:
        raise ConfigError(
            f"{source}: every hidden size must be divisible by every head count (head size = hidden / heads), "
            f"but hidden {bad[0][0]} is not divisible by heads {bad[0][1]}"
        )


def _check_arch(space: Space, arch: Arch) -> None:
    if arch.hidden % arch.heads:
        raise ArchError(f"arch hidden {arch.hidden} is not divisible by heads {arch.heads}")


SCHEMA = Schema(
    arch=Arch,
    lists=("layers", "hidden", "heads", "ffn"),
    scalars=(),
    globals=("layers", "hidden", "heads", "ffn"),
    stacks=(),
    per_layer=(),
    embedding=(("layers", "layers"), ("hidden", "hidden"), ("heads", "heads"), ("ffn", "ffn")),
    check_space=_check_space,
    check_arch=_check_arch,
)


def load_space(path: str | Path) -> Space:
    """Read and validate a BERT search-space YAML file (keys: name, layers, hidden, heads, ffn)."""
    return read_space(path, SCHEMA)
