"""NAS-BERT's search space at the all-MiniLM-L6-v2 scale (Xu et al., KDD 2021, §3.1 and §4.1.1, scaled down).

The paper: 24 sublayers under a 12-layer BERT-base (one MHA + one FFN sublayer per teacher layer), 26 ops per
sublayer = 5 hidden sizes x {MHA, FFN, SepConv k3/k5/k7} + identity, the supernet cut into N = 4 blocks.
Here (defaults, all configurable): 12 sublayers under the 6-layer teacher, hidden sizes {128, 192, 256, 384}
(head size 32: 4, 6, 8, 12 heads; FFN inner 4h), kernels {3, 5, 7}: 4 x 5 + 1 = 21 ops, and 3 blocks of 4
sublayers, each block ending on a whole teacher layer (teacher hidden states 0, 2, 4, 6). An arch is one op name
per sublayer; a block's path is the op names of its sublayers."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mosnas.bert.nasbert.ops import Op, op_parameters
from mosnas.config.settings import convert, read_yaml
from mosnas.errors import ArchError, ConfigError

Path_ = tuple[str, ...]  # one block's op names, in sublayer order


@dataclass(frozen=True)
class NasBertSpace:
    """Sublayers, op set and blocks of a NAS-BERT supernet on a residual stream of `width` (the teacher's). The
    engine reads it as it reads a core Space: `name`, `to_dict`, `parse_arch`, `largest`, `smallest`, `sample`
    (an arch is a tuple of op names, one per sublayer)."""

    name: str = "nasbert"
    width: int = 384
    sublayers: int = 12
    blocks: int = 3
    hidden_sizes: tuple[int, ...] = (128, 192, 256, 384)
    kernels: tuple[int, ...] = (3, 5, 7)
    head_dim: int = 32
    kinds: tuple[str, ...] = field(default=("mha", "ffn", "conv", "identity"))

    def __post_init__(self) -> None:
        if self.sublayers % self.blocks:
            raise ConfigError(f"nasbert: {self.sublayers} sublayers do not split into {self.blocks} equal blocks")
        bad = [h for h in self.hidden_sizes if h % self.head_dim or h > self.width]
        if bad:
            raise ConfigError(
                f"nasbert: hidden sizes {bad} must be multiples of the head size {self.head_dim} and <= {self.width}"
            )
        unknown = set(self.kinds) - {"mha", "ffn", "conv", "identity"}
        if unknown:
            raise ConfigError(f"nasbert: unknown op kinds {sorted(unknown)} (mha, ffn, conv, identity)")

    @property
    def per_block(self) -> int:
        return self.sublayers // self.blocks

    def ops(self) -> list[Op]:
        """Every candidate op of a sublayer (the same set in each), e.g. 21 by default."""
        out = []
        for h in self.hidden_sizes:
            out += [Op("mha", h)] if "mha" in self.kinds else []
            out += [Op("ffn", h)] if "ffn" in self.kinds else []
            out += [Op("conv", h, k) for k in self.kernels] if "conv" in self.kinds else []
        return out + ([Op("identity")] if "identity" in self.kinds else [])

    def op_names(self) -> list[str]:
        return [op.name for op in self.ops()]

    def block_size(self) -> int:
        """How many paths one block has: ops ** sublayers per block (21^4 = 194,481 by default)."""
        return len(self.ops()) ** self.per_block

    def sample_path(self, rng: random.Random) -> Path_:
        """One block's path, each sublayer's op drawn uniformly (single-path one-shot sampling, §3.2.1)."""
        names = self.op_names()
        return tuple(rng.choice(names) for _ in range(self.per_block))

    def largest_path(self) -> Path_:
        """The path of the largest ops (the paper's a^t, which sets the bucket edges): MHA and FFN of the largest
        hidden size, alternating as the teacher's sublayers do."""
        h = max(self.hidden_sizes)
        return tuple(("mha" if i % 2 == 0 else "ffn") + str(h) for i in range(self.per_block))

    def path_parameters(self, path: Path_) -> int:
        """Parameters of one block's path (its ops' weights, biases and LayerNorms)."""
        return sum(op_parameters(Op.parse(name), self.width, self.head_dim) for name in path)

    def validate(self, arch: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """`arch` (one op name per sublayer) as a tuple; ConfigError for a wrong length or an op not in the space."""
        arch = tuple(arch)
        if len(arch) != self.sublayers:
            raise ConfigError(f"a NAS-BERT arch has {self.sublayers} sublayers' ops, got {len(arch)}")
        names = set(self.op_names())
        wrong = [a for a in arch if a not in names]
        if wrong:
            raise ConfigError(f"ops {wrong} are not in the space (one of: {', '.join(self.op_names())})")
        return arch

    def split(self, arch: tuple[str, ...]) -> list[Path_]:
        """An arch's paths, one per block."""
        k = self.per_block
        return [tuple(arch[i * k : (i + 1) * k]) for i in range(self.blocks)]

    def teacher_layers(self, teacher_layers: int) -> list[int]:
        """The teacher hidden-state index at each block boundary (0 = embeddings), e.g. [0, 2, 4, 6]; ConfigError
        when the teacher's layers do not split evenly over the blocks."""
        if teacher_layers % self.blocks:
            raise ConfigError(f"nasbert: a {teacher_layers}-layer teacher does not split into {self.blocks} blocks")
        step = teacher_layers // self.blocks
        return [b * step for b in range(self.blocks + 1)]

    # -- what the engine asks of a space ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: Any, source: str = "space") -> NasBertSpace:
        """A space from its YAML keys (name, width, sublayers, blocks, hidden_sizes, kernels, head_dim, kinds);
        ConfigError naming `source` for an unknown key or a value of the wrong kind."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: a NAS-BERT space is a mapping of keys")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for key, value in raw.items():  # values as written (text, from read_yaml) or typed (a run's space.yaml)
            if key == "name":
                values[key] = str(value)
                continue
            if key == "kinds":
                values[key] = tuple(str(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
                continue
            many = key in ("hidden_sizes", "kernels")
            try:
                v = convert(f"{source}: {key}", value, tuple[int, ...] if many else int)
            except ConfigError:
                v = None
            if v is None or (many and (not v or min(v) <= 0)) or (not many and v <= 0):
                kind = "a non-empty list of positive integers" if many else "a positive integer"
                raise ConfigError(f"{source}: {key} must be {kind}, got {value!r}")
            values[key] = tuple(sorted(set(v))) if many else v
        values.setdefault("name", Path(source).stem)
        return cls(**values)

    def largest(self) -> tuple[str, ...]:
        return self.largest_path() * self.blocks

    def smallest(self) -> tuple[str, ...]:
        """The smallest arch: identity everywhere when the space has it (the embeddings alone), else the
        narrowest conv (or op) in every sublayer."""
        if "identity" in self.kinds:
            return ("identity",) * self.sublayers
        ops = sorted(self.ops(), key=lambda op: op_parameters(op, self.width, self.head_dim))
        return (ops[0].name,) * self.sublayers

    def sample(self, rng: random.Random) -> tuple[str, ...]:
        """A uniformly random arch: every sublayer's op drawn independently."""
        names = self.op_names()
        return tuple(rng.choice(names) for _ in range(self.sublayers))

    def parse_arch(self, text_or_path: str) -> tuple[str, ...]:
        """An arch from 'largest', 'smallest', a JSON list of op names (or {"ops": [...]}), or such a JSON file."""
        if text_or_path in ("largest", "smallest"):
            return getattr(self, text_or_path)()
        text = text_or_path
        if not text.lstrip().startswith(("[", "{")):
            if not Path(text).is_file():
                raise ArchError(f"arch file not found: {text} (or give 'largest', 'smallest' or JSON)")
            text = Path(text).read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArchError(f"arch is not valid JSON: {e.msg} (line {e.lineno})") from None
        raw = raw.get("ops") if isinstance(raw, dict) else raw
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            raise ArchError('a NAS-BERT arch is a JSON list of op names (or {"ops": [...]})')
        try:
            return self.validate(raw)
        except ConfigError as e:
            raise ArchError(str(e)) from None


def load_space(path: str | Path) -> NasBertSpace:
    """Read and validate a NAS-BERT space YAML file (e.g. configs/spaces/nasbert_minilm.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"search-space file not found: {path}")
    return NasBertSpace.from_dict(read_yaml(path), str(path))
