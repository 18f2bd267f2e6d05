"""The per-layer lookup-table latency predictor (NAS-BERT, Xu et al. 2021: measure each layer shape once, predict
an arch by summing its layers): a family names the table keys an arch is made of, per group (for translation:
base, encoder layers, decoder layers; see mosnas.mt.latency_parts), each key is timed alone, and the prediction
is a calibrated sum, intercept + sum over groups of coef_g * (sum of the group's table entries), the
coefficients fit (non-negative) by least squares on a few whole measured archs. The calibration absorbs what
timing a layer alone misses (per-step Python overhead of the whole model, cache effects). A table needs one
measurement per layer shape plus a few archs, where HAT's MLP needs hundreds of whole archs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mosnas.core.space import Arch, Schema, Space
from mosnas.errors import PredictorError
from mosnas.latency.predictors import parse_samples, read_meta
from mosnas.workspace.records import write_text

Parts = Callable[[Arch], dict[str, list[str]]]  # the family's latency_parts: group -> table keys of an arch


def part_key(kind: str, **dims: int) -> str:
    """A table key: the layer kind and its dims, e.g. 'enc e=256 f=1024 h=4' (the families' one format)."""
    return " ".join([kind] + [f"{k}={v}" for k, v in dims.items()])


def parse_part_key(key: str, family: str) -> tuple[str, dict[str, int]]:
    """(kind, dims) of a `part_key`; PredictorError (naming `family`) for anything else."""
    kind, *rest = key.split()
    try:
        return kind, {k: int(v) for k, v in (x.split("=") for x in rest)}
    except ValueError:
        raise PredictorError(f"not a layer-shape key of the {family} family: {key!r}") from None


class TablePredictor:
    """Latency (ms) = intercept + sum_g coef_g * sum(table[key] for key in parts(arch)[g]). Unfitted (or fit on
    no samples) it is the plain sum (coef 1, intercept 0)."""

    kind = "table"

    def __init__(self, space: Space, parts: Parts, table: dict[str, float], groups: tuple[str, ...]):
        self.space, self.parts, self.table, self.groups = space, parts, dict(table), tuple(groups)
        self.coef = np.ones(len(self.groups))
        self.intercept = 0.0
        self.calibration_samples = 0

    def sums(self, arch: Arch) -> list[float]:
        """Per group, the sum of the table entries `arch` is made of (ms). PredictorError for a key the table
        lacks (a table measured for another space)."""
        parts = self.parts(arch)
        try:
            return [sum(self.table[k] for k in parts.get(g, [])) for g in self.groups]
        except KeyError as e:
            missing = e.args[0]
            raise PredictorError(f"the latency table has no entry {missing!r}: measured for another space") from None

    def fit(self, samples: list[dict[str, Any]]) -> TablePredictor:
        """Calibrate on measured archs: non-negative least squares of latency on the group sums, with a free
        intercept (scikit-learn's LinearRegression(positive=True))."""
        from sklearn.linear_model import LinearRegression

        archs, ys = parse_samples(self.space, samples)
        x = np.asarray([self.sums(a) for a in archs], dtype=np.float64)
        reg = LinearRegression(positive=True).fit(x, np.asarray(ys))
        self.coef, self.intercept = reg.coef_.astype(np.float64), float(reg.intercept_)
        self.calibration_samples = len(ys)
        return self

    def predict(self, archs: list[Arch]) -> list[float]:
        if not archs:
            return []
        x = np.asarray([self.sums(a) for a in archs], dtype=np.float64)
        return (x @ self.coef + self.intercept).tolist()

    def __call__(self, arch: Arch) -> float:
        return self.predict([arch])[0]

    def save(self, folder: str | Path) -> Path:
        """Write predictor.json: the space, the table (key -> ms), groups and calibration."""
        folder = Path(folder)
        meta = {
            "kind": self.kind,
            "space": self.space.to_dict(),
            "groups": list(self.groups),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
            "calibration_samples": self.calibration_samples,
            "table": self.table,
        }
        write_text(folder / "predictor.json", json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, schema: Schema, parts: Parts) -> TablePredictor:
        """A table saved by save(), for a space of the family's `schema` and its `parts` (latency_parts)."""
        meta = read_meta(folder, "table")
        try:
            space = Space.from_dict(meta["space"], schema, str(folder))
            pred = cls(space, parts, {str(k): float(v) for k, v in meta["table"].items()}, tuple(meta["groups"]))
            pred.coef = np.asarray(meta["coef"], dtype=np.float64).reshape(len(pred.groups))
            pred.intercept, pred.calibration_samples = float(meta["intercept"]), int(meta["calibration_samples"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PredictorError(f"{folder}/predictor.json is not a latency table ({e!r})") from None
        return pred
