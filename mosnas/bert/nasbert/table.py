"""NAS-BERT's model selection by lookup tables (Xu et al., KDD 2021, arXiv 2105.14444, §3.3).

After progressive shrinking each block keeps a few paths; a table per block holds each path's loss (its
block-wise distillation loss on a validation set), params and latency. A full arch is one path per block, and
its loss, params and latency are approximated by the sums over blocks, so the archs meeting a constraint can be
ranked without building any of them. The paper enumerates all ~10^8 combinations; `select` instead combines the
blocks one at a time with numpy, dropping partial archs that can no longer meet the budget, and scans the last
block in chunks (best partials first) against a running top-k, so it stays cheap for products up to ~10^7.
The top archs are then trained and evaluated by the caller to pick the final one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from mosnas.errors import ConfigError

Path = tuple[str, ...]

_CHUNK = 1 << 20  # elements per broadcast chunk of the last block: ~40 MB of temporaries


class Row(NamedTuple):
    """One path of a block: its loss, params (a count) and latency (ms)."""

    path: Path
    loss: float
    params: float
    latency_ms: float


@dataclass(frozen=True)
class BlockTable:
    """The lookup table of one block: a Row for every surviving path (NAS-BERT §3.3's LT_loss, LT_params and
    LT_lat, restricted to that block). Raises ConfigError for no rows, a repeated path, a path that is not a
    tuple of op names, a value that is not finite, or negative params or latency."""

    rows: tuple[Row, ...]

    def __post_init__(self) -> None:
        rows = tuple(Row(tuple(r[0]), float(r[1]), float(r[2]), float(r[3])) for r in self.rows)
        if not rows:
            raise ConfigError("a block table needs at least one path")
        seen = set()
        for r in rows:
            if not r.path or not all(isinstance(op, str) for op in r.path):
                raise ConfigError(f"a path must be a non-empty tuple of op names, got {r.path!r}")
            if r.path in seen:
                raise ConfigError(f"path {r.path} appears twice in a block table")
            seen.add(r.path)
            if not all(math.isfinite(v) for v in r[1:]) or r.params < 0 or r.latency_ms < 0:
                raise ConfigError(f"path {r.path}: loss, params and latency_ms must be finite, >= 0 for the last two")
        object.__setattr__(self, "rows", rows)

    def to_rows(self) -> list[dict[str, Any]]:
        """The table as JSON-able dicts: {"path": [op names], "loss", "params", "latency_ms"} per row."""
        return [
            {"path": list(r.path), "loss": r.loss, "params": r.params, "latency_ms": r.latency_ms} for r in self.rows
        ]

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> BlockTable:
        """The inverse of `to_rows`. Raises ConfigError for a row that lacks a key or has one more."""
        keys = {"path", "loss", "params", "latency_ms"}
        out = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or set(row) != keys:
                got = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(f"block table row {i}: expected keys {sorted(keys)}, got {got}")
            out.append(Row(tuple(row["path"]), row["loss"], row["params"], row["latency_ms"]))
        return cls(tuple(out))


@dataclass(frozen=True)
class Candidate:
    """A full arch (one path per block) and its table estimates: summed loss, params and latency (ms), the
    shared extras included in params and latency."""

    paths: tuple[Path, ...]
    loss: float
    params: float
    latency_ms: float


def _limit(value: float | None, name: str) -> float:
    if value is None:
        return math.inf
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number (or None: no limit), got {value}")
    return float(value)


def _keep_top(loss, params, lat, code, top):
    """The `top` entries by (loss, params, latency, code), best first."""
    if len(loss) > top:
        mask = loss <= np.partition(loss, top - 1)[top - 1]  # ties at the cut all stay for the sort
        loss, params, lat, code = loss[mask], params[mask], lat[mask], code[mask]
    order = np.lexsort((code, lat, params, loss))[:top]
    return loss[order], params[order], lat[order], code[order]


def _partials(cols, sizes, strides, min_p, min_l, p_room, l_room):
    """Partial archs over every block but the last: (loss, params, latency, code) of each combination that can
    still meet the limits (`p_room`, `l_room`: the limits less the extras) with the cheapest paths after it.
    Pruning compares with a little slack, as sums in another order may differ in the last bits; the final
    check is exact."""
    tol_p, tol_l = 1e-9 * max(1.0, abs(p_room)), 1e-9 * max(1.0, abs(l_room))
    loss, params, lat = np.zeros(1), np.zeros(1), np.zeros(1)
    code = np.zeros(1, dtype=np.int64)
    for i in range(len(sizes) - 1):
        b_loss, b_params, b_lat = cols[i]
        loss = (loss[:, None] + b_loss[None, :]).ravel()
        params = (params[:, None] + b_params[None, :]).ravel()
        lat = (lat[:, None] + b_lat[None, :]).ravel()
        code = (code[:, None] + np.arange(sizes[i], dtype=np.int64)[None, :] * strides[i]).ravel()
        rest_p, rest_l = sum(min_p[i + 1 :]), sum(min_l[i + 1 :])
        ok = (params + rest_p <= p_room + tol_p) & (lat + rest_l <= l_room + tol_l)
        loss, params, lat, code = loss[ok], params[ok], lat[ok], code[ok]
    return loss, params, lat, code


def select(
    tables: list[BlockTable],
    max_params: float | None = None,
    max_latency_ms: float | None = None,
    extra_params: float = 0.0,
    extra_latency_ms: float = 0.0,
    top: int = 100,
) -> list[Candidate]:
    """The `top` archs of lowest summed loss whose params + extra_params <= max_params and latency +
    extra_latency_ms <= max_latency_ms (None: no limit), best first (NAS-BERT §3.3); fewer if fewer qualify.

    Sums run over the blocks in order, then the extras are added. Ties are broken by lower params, then lower
    latency, then the paths (tuple order: block 0's path first, op names compared as strings), so the result is
    a total order and does not depend on the rows' order in the tables.

    Raises ConfigError for no tables, top < 1, a limit that is NaN, or when no arch meets the limits
    (the message names the smallest params and latency any arch has)."""
    if not tables:
        raise ConfigError("select needs at least one block table")
    if top < 1:
        raise ConfigError(f"top must be >= 1, got {top}")
    p_max, l_max = _limit(max_params, "max_params"), _limit(max_latency_ms, "max_latency_ms")
    extra_p, extra_l = float(extra_params), float(extra_latency_ms)
    # Rows sorted by path, so a row's index is its rank and a mixed-radix code of the indices sorts as the paths.
    blocks = [sorted(t.rows, key=lambda r: r.path) for t in tables]
    sizes = [len(b) for b in blocks]
    if math.prod(sizes) >= 2**62:
        raise ConfigError(f"{math.prod(sizes):.3g} archs are too many to index; shrink the block tables first")
    strides = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    cols = [tuple(np.array([r[k] for r in b], dtype=np.float64) for k in (1, 2, 3)) for b in blocks]
    min_p = [float(c[1].min()) for c in cols]
    min_l = [float(c[2].min()) for c in cols]
    loss, params, lat, code = _partials(cols, sizes, strides, min_p, min_l, p_max - extra_p, l_max - extra_l)

    # The last block, in chunks of the partials of lowest loss first, against a running top-k.
    b_loss, b_params, b_lat = cols[-1]
    b_code = np.arange(sizes[-1], dtype=np.int64)
    order = np.argsort(loss, kind="stable")
    loss, params, lat, code = loss[order], params[order], lat[order], code[order]
    best = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64))
    chunk = max(1, _CHUNK // sizes[-1])
    bound = float(b_loss.min())
    for start in range(0, len(loss), chunk):
        s = slice(start, start + chunk)
        c_loss, c_params, c_lat, c_code = loss[s], params[s], lat[s], code[s]
        if len(best[0]) == top:  # no partial whose best completion is worse than the k-th can enter
            worst = best[0][-1]
            if c_loss[0] + bound > worst + 1e-9 * max(1.0, abs(worst)):
                break
        a_loss = (c_loss[:, None] + b_loss[None, :]).ravel()
        a_params = (c_params[:, None] + b_params[None, :]).ravel() + extra_p
        a_lat = (c_lat[:, None] + b_lat[None, :]).ravel() + extra_l
        a_code = (c_code[:, None] + b_code[None, :]).ravel()
        ok = (a_params <= p_max) & (a_lat <= l_max)
        merged = [np.concatenate((x, y[ok])) for x, y in zip(best, (a_loss, a_params, a_lat, a_code))]
        best = _keep_top(*merged, top)

    if len(best[0]) == 0:
        raise ConfigError(
            f"no arch meets max_params={max_params} and max_latency_ms={max_latency_ms}: the smallest params of "
            f"any arch is {sum(min_p) + extra_p:.6g} and the smallest latency {sum(min_l) + extra_l:.6g} ms"
        )
    out = []
    for c_loss, c_params, c_lat, c_code in zip(*best):
        idx = [(int(c_code) // st) % n for st, n in zip(strides, sizes)]
        paths = tuple(blocks[i][j].path for i, j in enumerate(idx))
        out.append(Candidate(paths, float(c_loss), float(c_params), float(c_lat)))
    return out
