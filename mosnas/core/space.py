"""Search spaces (data, read from YAML) and architectures (frozen, validated, JSON values), for any family.

A model family describes its space with a `Schema`: its frozen `Arch` dataclass, the space's lists of
choices, which arch fields are chosen once (global dims) and which once per layer of a stack (encoder,
decoder, ...), and the arch embedding (the router's and the latency predictor's input, in a fixed order).
Sampling, mutation, crossover, validation, parsing and the embedding are written once, here."""

from __future__ import annotations

import dataclasses
import json
import random
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.config.settings import convert, read_yaml
from mosnas.errors import ArchError, ConfigError

Arch = Any  # a family's frozen arch dataclass (e.g. mosnas.mt.space.Arch)


@dataclass(frozen=True)
class Schema:
    """What a family's search space is made of (see the module docstring)."""

    arch: type  # the family's frozen Arch dataclass: int fields and tuple[int, ...] per-layer fields
    lists: tuple[str, ...]  # the space's lists of choices, in file order
    scalars: tuple[str, ...]  # the space's fixed integers (e.g. qkv_dim)
    globals: tuple[str, ...]  # arch fields chosen once; each one's choices are the space list of the same name
    stacks: tuple[tuple[str, str], ...]  # (stack, space list of its layer counts), e.g. ("encoder", "encoder_layers")
    per_layer: tuple[tuple[str, str, str], ...]  # (arch field, stack, space list), one value per layer of the stack
    # (arch attribute, space list): feature = value (or the mean of a per-layer tuple) / max of the list
    embedding: tuple[tuple[str, str], ...]
    check_space: Callable[[Space, str], None] = lambda space, source: None  # the family's rules across lists
    check_arch: Callable[[Space, Any], None] = lambda space, arch: None  # and across an arch's fields


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def arch_to_dict(arch: Arch) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(arch, f.name)) for f in dataclasses.fields(arch)}


def arch_from_dict(cls: type, raw: Any) -> Arch:
    """An arch of class `cls` from a JSON object; every field present, integers where the field says int and
    lists of integers where it says tuple[int, ...]."""
    if not isinstance(raw, dict):
        raise ArchError(f"an arch must be a JSON object, got {type(raw).__name__}")
    types = typing.get_type_hints(cls)
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
        if typing.get_origin(types[name]) is tuple:
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                raise ArchError(f"arch {name} must be a list of integers, got {value!r}")
            values[name] = tuple(int(v) for v in value)
        else:
            if not _is_int(value):
                raise ArchError(f"arch {name} must be an integer, got {value!r}")
            values[name] = int(value)
    return cls(**values)


def arch_from_json(cls: type, text: str) -> Arch:
    try:
        return arch_from_dict(cls, json.loads(text))
    except json.JSONDecodeError as e:
        raise ArchError(f"arch is not valid JSON: {e.msg} (line {e.lineno})") from None


def _ints(value: Any, typ: Any) -> Any:
    """`value` converted to `typ` as config settings are (text or typed), or 0 / () when it is not integral."""
    try:
        return convert("", value, typ)
    except ConfigError:
        return () if typ is not int else 0


@dataclass(frozen=True)
class Space:
    """The allowed values of every dimension of a family's search space; `space.<list>` and `space.<scalar>`
    read them (e.g. `space.encoder_embed_dim`, `space.qkv_dim`)."""

    name: str
    schema: Schema
    choices: dict[str, tuple[int, ...]]  # list name -> sorted distinct positive choices
    scalars: dict[str, int]

    def __getattr__(self, key: str) -> Any:
        fields = self.__dict__
        if "choices" in fields and key in fields["choices"]:
            return fields["choices"][key]
        if "scalars" in fields and key in fields["scalars"]:
            return fields["scalars"][key]
        raise AttributeError(key)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], schema: Schema, source: str = "space") -> Space:
        allowed = {"name", *schema.scalars, *schema.lists}
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}")
        missing = sorted(allowed - set(raw) - {"name"})
        if missing:
            raise ConfigError(f"{source}: missing key(s) {', '.join(missing)}")
        choices = {}
        for key in schema.lists:  # values as written in the file (text) or typed (a run's space.yaml)
            v = _ints(raw[key], tuple[int, ...])
            if not v or min(v) <= 0:
                raise ConfigError(f"{source}: {key} must be a non-empty list of positive integers, got {raw[key]!r}")
            choices[key] = tuple(sorted(set(v)))
        scalars = {key: _ints(raw[key], int) for key in schema.scalars}
        for key, v in scalars.items():
            if v <= 0:
                raise ConfigError(f"{source}: {key} must be a positive integer, got {raw[key]!r}")
        space = cls(str(raw.get("name", Path(source).stem)), schema, choices, scalars)
        schema.check_space(space, source)
        return space

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: list(v) for k, v in self.choices.items()}, **self.scalars}

    @property
    def embed_dim(self) -> int:
        return len(self.schema.embedding)

    def num_layers(self, arch: Arch, stack: str) -> int:
        """The layer count of `stack` in `arch`: the length of its per-layer fields."""
        return len(getattr(arch, next(f for f, s, _ in self.schema.per_layer if s == stack)))

    # -- validation -------------------------------------------------------------------------
    def validate(self, arch: Arch) -> Arch:
        """Return `arch` if every value is allowed, else raise naming the dimension and choices."""

        def check(dim: str, value: int, allowed: tuple[int, ...], where: str = "") -> None:
            if value not in allowed:
                raise ArchError(
                    f"arch {dim}{where} = {value} is outside space '{self.name}' (allowed: "
                    f"{', '.join(map(str, allowed))})"
                )

        schema = self.schema
        for dim in schema.globals:
            check(dim, getattr(arch, dim), self.choices[dim])
        for stack, key in schema.stacks:
            check(f"{stack} layer count", self.num_layers(arch, stack), self.choices[key])
        for dim, stack, key in schema.per_layer:
            values, count = getattr(arch, dim), self.num_layers(arch, stack)
            if len(values) != count:
                raise ArchError(f"arch {dim} has {len(values)} entries but the arch has {count} layers")
            for i, v in enumerate(values):
                check(dim, v, self.choices[key], f"[{i}]")
        schema.check_arch(self, arch)
        return arch

    def arch_from_dict(self, raw: Any) -> Arch:
        return arch_from_dict(self.schema.arch, raw)

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
            try:
                return self.validate(arch_from_json(self.schema.arch, text))
            except ArchError as e:  # name the file: a damaged arch.json of a model folder, say
                raise ArchError(f"{path}: {e}") from None
        return self.validate(arch_from_json(self.schema.arch, text))

    # -- sampling: layer counts first, then global dims, then each layer's values, in schema order ----------
    def _build(self, pick: Any) -> Arch:
        schema = self.schema
        num = {stack: pick(self.choices[key]) for stack, key in schema.stacks}
        values = {dim: pick(self.choices[dim]) for dim in schema.globals}
        for dim, stack, key in schema.per_layer:
            values[dim] = tuple(pick(self.choices[key]) for _ in range(num[stack]))
        return schema.arch(**values)

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
        schema = self.schema
        num = {stack: pick(self.num_layers(arch, stack), self.choices[key]) for stack, key in schema.stacks}
        values = {dim: pick(getattr(arch, dim), self.choices[dim]) for dim in schema.globals}
        for dim, stack, key in schema.per_layer:
            old, choices = getattr(arch, dim), self.choices[key]
            # a layer count that grew gets fresh layers; one that shrank drops the last ones
            values[dim] = tuple(
                pick(old[i], choices) if i < len(old) else rng.choice(choices) for i in range(num[stack])
            )
        return self.validate(schema.arch(**values))

    def crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        """A child taking each gene from `a` or `b` at random; a layer only one parent has comes from it."""
        take = lambda x, y: x if rng.random() < 0.5 else y
        schema = self.schema
        num = {stack: take(self.num_layers(a, stack), self.num_layers(b, stack)) for stack, _ in schema.stacks}
        values = {dim: take(getattr(a, dim), getattr(b, dim)) for dim in schema.globals}
        for dim, stack, _ in schema.per_layer:
            va, vb = getattr(a, dim), getattr(b, dim)
            longer = va if len(va) >= len(vb) else vb
            values[dim] = tuple(
                take(va[i], vb[i]) if i < min(len(va), len(vb)) else longer[i] for i in range(num[stack])
            )
        return self.validate(schema.arch(**values))

    # -- embedding --------------------------------------------------------------------------
    def embed(self, arch: Arch) -> list[float]:
        """The arch's features in the schema's order, each divided by its list's max so values lie in (0, 1]:
        a global dim or a layer count as is, a per-layer field as its mean over the layers."""
        mean = lambda xs: sum(xs) / len(xs)
        features = []
        for attr, key in self.schema.embedding:
            value = getattr(arch, attr)
            features.append((mean(value) if isinstance(value, tuple) else value) / max(self.choices[key]))
        return features


def read_space(path: str | Path, schema: Schema) -> Space:
    """Read and validate a search-space YAML file of a family's `schema`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    return Space.from_dict(read_yaml(path), schema, source=str(path))
