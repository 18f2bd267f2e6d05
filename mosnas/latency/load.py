"""A saved latency predictor of any kind, loaded back for a space: the one place that knows the kinds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mosnas.core.space import Arch, Space
from mosnas.errors import PredictorError
from mosnas.latency.datasets import FeaturePredictor
from mosnas.latency.predictors import LatencyPredictor, LinearPredictor, read_meta
from mosnas.latency.table import TablePredictor


def load_predictor(folder: str | Path, space: Space, latency_parts: Callable[[Arch], dict[str, list[str]]]) -> Any:
    """The predictor saved in `folder` (predictor.json's kind: mlp, linear, table, or features from a dataset) for
    `space`; `latency_parts` is the family's arch -> layer-table keys (the table's). PredictorError when missing or
    unreadable, ConfigError when it needs features the space lacks."""
    kind = read_meta(folder).get("kind", "mlp")
    if kind == "mlp":
        return LatencyPredictor.load(folder, space.schema)
    if kind == "linear":
        return LinearPredictor.load(folder, space.schema)
    if kind == "table":
        return TablePredictor.load(folder, space.schema, latency_parts)
    if kind == "features":
        return FeaturePredictor.load(folder).for_space(space)
    raise PredictorError(f"{folder}/predictor.json: unknown predictor kind {kind!r}")
