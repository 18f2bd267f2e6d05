"""Search spaces (data, read from YAML) and architectures (frozen, validated, JSON values)."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.config import convert, read_yaml
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
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, raw: Any) -> Arch:
        if not isinstance(raw, dict):
            raise ArchError(f"an arch must be a JSON object, got {type(raw).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in raw]
        unknown = sorted(set(raw) - set(names))
        if missing or unknown:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else []
            )
            raise ArchError(f"bad arch fields: {'; '.join(parts)}")
        values = {}
        for name in names:
            value = raw[name]
            is_list = name.endswith("s") and name not in ("encoder_embed_dim", "decoder_embed_dim")
            if is_list:
                if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                    raise ArchError(f"arch {name} must be a list of integers, got {value!r}")
                values[name] = tuple(int(v) for v in value)
            else:
                if not _is_int(value):
                    raise ArchError(f"arch {name} must be an integer, got {value!r}")
                values[name] = int(value)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Arch:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ArchError(f"arch is not valid JSON: {e.msg} (line {e.lineno})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ints(value: Any, typ: Any) -> Any:
    """`value` converted to `typ` as config settings are (text or typed), or 0 / () when it is not integral."""
    try:
        return convert("", value, typ)
    except ConfigError:
        return () if typ is not int else 0


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# The choices of a space; per-layer dims are chosen independently for every layer.
_SPACE_LISTS = (
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
)


# Per-layer arch fields: (which stack they belong to, the space's choices for them).
_PER_LAYER = {
    "encoder_ffn_dims": ("encoder", "encoder_ffn_dim"),
    "encoder_heads": ("encoder", "encoder_heads"),
    "decoder_ffn_dims": ("decoder", "decoder_ffn_dim"),
    "decoder_self_heads": ("decoder", "decoder_self_heads"),
    "decoder_cross_heads": ("decoder", "decoder_cross_heads"),
    "decoder_spans": ("decoder", "decoder_span"),
}


@dataclass(frozen=True)
class Space:
    """The allowed values of every dimension of an encoder-decoder search space."""

    name: str
    encoder_embed_dim: tuple[int, ...]
    decoder_embed_dim: tuple[int, ...]
    encoder_layers: tuple[int, ...]
    decoder_layers: tuple[int, ...]
    encoder_ffn_dim: tuple[int, ...]
    decoder_ffn_dim: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_self_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_span: tuple[int, ...]
    qkv_dim: int  # HAT fixes q/k/v width: heads change the head size, not the parameter count

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "space") -> Space:
        allowed = {"name", "qkv_dim", *_SPACE_LISTS}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        missing = sorted(allowed - set(raw) - {"name"})
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")
        values: dict[str, Any] = {"name": str(raw.get("name", Path(source).stem))}
        for key in _SPACE_LISTS:  # values as written in the file (text) or typed (a run's space.yaml)
            v = _ints(raw[key], tuple[int, ...])
            if not v or min(v) <= 0:
                raise ConfigError(f"{source}: {key} must be a non-empty list of positive integers, got {raw[key]!r}")
            values[key] = tuple(sorted(set(v)))
        values["qkv_dim"] = _ints(raw["qkv_dim"], int)
        if values["qkv_dim"] <= 0:
            raise ConfigError(f"{source}: qkv_dim must be a positive integer, got {raw['qkv_dim']!r}")
        space = cls(**values)
        for key in ("encoder_heads", "decoder_self_heads", "decoder_cross_heads"):
            bad = [h for h in getattr(space, key) if space.qkv_dim % h]
            if bad:
                raise ConfigError(f"{source}: qkv_dim {space.qkv_dim} is not divisible by {key} {bad}")
        if max(space.decoder_span) > min(space.encoder_layers):
            raise ConfigError(
                f"{source}: decoder_span up to {max(space.decoder_span)} needs at least that many "
                f"encoder layers, but encoder_layers allows {min(space.encoder_layers)}"
            )
        return space

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # -- validation -------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Return `arch` if every value is allowed, else raise naming the dimension and choices."""

        def check(dim: str, value: int, allowed: tuple[int, ...], where: str = "") -> None:
            if value not in allowed:
                raise ArchError(
                    f"arch {dim}{where} = {value} is outside space '{self.name}' (allowed: "
                    f"{', '.join(map(str, allowed))})"
                )

        check("encoder_embed_dim", arch.encoder_embed_dim, self.encoder_embed_dim)
        check("decoder_embed_dim", arch.decoder_embed_dim, self.decoder_embed_dim)
        check("encoder layer count", arch.encoder_layers, self.encoder_layers)
        check("decoder layer count", arch.decoder_layers, self.decoder_layers)
        per_layer = (
            ("encoder_heads", arch.encoder_heads, self.encoder_heads, arch.encoder_layers),
            ("encoder_ffn_dims", arch.encoder_ffn_dims, self.encoder_ffn_dim, arch.encoder_layers),
            ("decoder_ffn_dims", arch.decoder_ffn_dims, self.decoder_ffn_dim, arch.decoder_layers),
            ("decoder_self_heads", arch.decoder_self_heads, self.decoder_self_heads, arch.decoder_layers),
            ("decoder_cross_heads", arch.decoder_cross_heads, self.decoder_cross_heads, arch.decoder_layers),
            ("decoder_spans", arch.decoder_spans, self.decoder_span, arch.decoder_layers),
        )
        for dim, values, allowed, count in per_layer:
            if len(values) != count:
                raise ArchError(f"arch {dim} has {len(values)} entries but the arch has {count} layers")
            for i, v in enumerate(values):
                check(dim, v, allowed, f"[{i}]")
        too_far = [k for k in arch.decoder_spans if k > arch.encoder_layers]
        if too_far:
            raise ArchError(f"arch decoder_spans {too_far} exceed the arch's {arch.encoder_layers} encoder layers")
        return arch

    def parse_arch(self, text_or_path: str) -> Arch:
        """An arch from 'largest', 'smallest', a JSON string or a JSON file, validated."""
        if text_or_path == "largest":
            return self.largest()
        if text_or_path == "smallest":
            return self.smallest()
        text = text_or_path
        if not text.lstrip().startswith(("{", "[")):
            path = Path(text)
            if not path.is_file():
                raise ArchError(f"arch file not found: {path} (or give 'largest', 'smallest' or JSON)")
            text = path.read_text(encoding="utf-8")
        return self.validate(Arch.from_json(text))

    # -- sampling ---------------------------------------------------------------------------
    def _build(self, pick: Any) -> Arch:
        num_enc, num_dec = pick(self.encoder_layers), pick(self.decoder_layers)
        return Arch(
            encoder_embed_dim=pick(self.encoder_embed_dim),
            decoder_embed_dim=pick(self.decoder_embed_dim),
            encoder_ffn_dims=tuple(pick(self.encoder_ffn_dim) for _ in range(num_enc)),
            encoder_heads=tuple(pick(self.encoder_heads) for _ in range(num_enc)),
            decoder_ffn_dims=tuple(pick(self.decoder_ffn_dim) for _ in range(num_dec)),
            decoder_self_heads=tuple(pick(self.decoder_self_heads) for _ in range(num_dec)),
            decoder_cross_heads=tuple(pick(self.decoder_cross_heads) for _ in range(num_dec)),
            decoder_spans=tuple(pick(tuple(k for k in self.decoder_span if k <= num_enc)) for _ in range(num_dec)),
        )

    def sample(self, rng: random.Random) -> Arch:
        """A uniformly random arch (each dimension and each layer chosen independently)."""
        return self._build(rng.choice)

    def largest(self) -> Arch:
        return self._build(max)

    def smallest(self) -> Arch:
        return self._build(min)

    # -- evolution (HAT) ---------------------------------------------------------------------
    def mutate(self, arch: Arch, rng: random.Random, prob: float) -> Arch:
        """A copy of `arch` with each gene (layer counts, dims, each layer's values) resampled with `prob`."""
        pick = lambda value, choices: rng.choice(choices) if rng.random() < prob else value
        num = {"encoder": pick(arch.encoder_layers, self.encoder_layers)}
        num["decoder"] = pick(arch.decoder_layers, self.decoder_layers)
        values: dict[str, Any] = {
            "encoder_embed_dim": pick(arch.encoder_embed_dim, self.encoder_embed_dim),
            "decoder_embed_dim": pick(arch.decoder_embed_dim, self.decoder_embed_dim),
        }
        for name, (side, choices_name) in _PER_LAYER.items():
            old, choices = getattr(arch, name), getattr(self, choices_name)
            # a layer count that grew gets fresh layers; one that shrank drops the last ones. Spans
            # always fit the encoder: a valid space has max(decoder_span) <= min(encoder_layers).
            values[name] = tuple(
                pick(old[i], choices) if i < len(old) else rng.choice(choices) for i in range(num[side])
            )
        return self.validate(Arch(**values))

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """A child taking each gene from `a` or `b` at random; a layer only one parent has comes from it."""
        take = lambda x, y: x if rng.random() < 0.5 else y
        num = {"encoder": take(a.encoder_layers, b.encoder_layers), "decoder": take(a.decoder_layers, b.decoder_layers)}
        values: dict[str, Any] = {
            "encoder_embed_dim": take(a.encoder_embed_dim, b.encoder_embed_dim),
            "decoder_embed_dim": take(a.decoder_embed_dim, b.decoder_embed_dim),
        }
        for name, (side, _) in _PER_LAYER.items():
            va, vb = getattr(a, name), getattr(b, name)
            longer = va if len(va) >= len(vb) else vb
            values[name] = tuple(
                take(va[i], vb[i]) if i < min(len(va), len(vb)) else longer[i] for i in range(num[side])
            )
        return self.validate(Arch(**values))

    # -- embedding --------------------------------------------------------------------------
    def embed(self, arch: Arch) -> list[float]:
        """HAT's 10 arch features, each divided by the space's max so values lie in (0, 1]."""
        mean = lambda xs: sum(xs) / len(xs)
        return [
            arch.encoder_embed_dim / max(self.encoder_embed_dim),
            arch.decoder_embed_dim / max(self.decoder_embed_dim),
            arch.encoder_layers / max(self.encoder_layers),
            arch.decoder_layers / max(self.decoder_layers),
            mean(arch.encoder_ffn_dims) / max(self.encoder_ffn_dim),
            mean(arch.decoder_ffn_dims) / max(self.decoder_ffn_dim),
            mean(arch.encoder_heads) / max(self.encoder_heads),
            mean(arch.decoder_self_heads) / max(self.decoder_self_heads),
            mean(arch.decoder_cross_heads) / max(self.decoder_cross_heads),
            mean(arch.decoder_spans) / max(self.decoder_span),
        ]

    EMBED_DIM = 10


def load_space(path: str | Path) -> Space:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    return Space.from_dict(read_yaml(path), source=str(path))
