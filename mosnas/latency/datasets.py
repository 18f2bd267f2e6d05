"""Portable latency datasets and predictors fit on them: a device measured elsewhere (`mosnas latency RUN
--dataset FILE` there, or HAT's published latency datasets) gives a predictor for the search here.

A dataset is a CSV (optionally .gz): one row per measured arch, the arch's raw features (a global dim or a
layer count as is, a per-layer field as its mean over the layers; columns named by the schema's embedding
attributes, e.g. `encoder_ffn_dims`), `latency_ms`, and what it was measured on (`device`, `device_name`,
`threads`, `precision`, `settings`, `arch` as JSON). HAT's files (Wang et al. 2020, `latency_dataset/*_all.csv`
of mit-han-lab/hardware-aware-transformers; MIT license) are read as they are: their 10 feature columns are
mapped to ours (HAT_COLUMNS; `decoder_arbitrary_ende_attn_avg` already codes HAT's -1, 1, 2 as 1, 2, 3 =
our span: attend to the last k encoder layers) and the latency is HAT's predictor target, encoder + decoder
mean (`latency_mean_encoder + latency_mean_decoder`, ms)."""

from __future__ import annotations

import csv
import gzip
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mosnas.core.space import Arch, Space
from mosnas.errors import ConfigError, PredictorError
from mosnas.latency.predictors import read_meta
from mosnas.latency.stats import prediction_errors
from mosnas.workspace.files import UNREADABLE, reason
from mosnas.workspace.records import write_text

HAT_COLUMNS = {  # HAT's latency_dataset header -> our schema's embedding attribute (translation family)
    "encoder_embed_dim": "encoder_embed_dim",
    "encoder_layer_num": "encoder_layers",
    "encoder_ffn_embed_dim_avg": "encoder_ffn_dims",
    "encoder_self_attention_heads_avg": "encoder_heads",
    "decoder_embed_dim": "decoder_embed_dim",
    "decoder_layer_num": "decoder_layers",
    "decoder_ffn_embed_dim_avg": "decoder_ffn_dims",
    "decoder_self_attention_heads_avg": "decoder_self_heads",
    "decoder_ende_attention_heads_avg": "decoder_cross_heads",
    "decoder_arbitrary_ende_attn_avg": "decoder_spans",
}
HAT_LATENCY = ("latency_mean_encoder", "latency_mean_decoder")
INFO = ("device", "device_name", "threads", "precision", "settings", "arch")  # our datasets' non-feature columns


def feature_names(space: Space) -> list[str]:
    return [attr for attr, _ in space.schema.embedding]


def raw_features(space: Space, arch: Arch) -> list[float]:
    """The arch's features in the schema's embedding order, unscaled (a per-layer field: its mean)."""
    values = [getattr(arch, attr) for attr in feature_names(space)]
    return [sum(v) / len(v) if isinstance(v, tuple) else float(v) for v in values]


def write_dataset(path: str | Path, space: Space, samples: list[dict[str, Any]], precision: str) -> Path:
    """Write measured samples ({"arch", "latency_ms", "device", "settings"}) as a portable dataset (CSV)."""
    names, out = feature_names(space), io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*names, "latency_ms", *INFO])
    for s in samples:
        arch, dev = space.arch_from_dict(s["arch"]), s.get("device", {})
        info = [dev.get("device", ""), dev.get("name", ""), dev.get("threads", ""), precision]
        settings = json.dumps(s.get("settings", {}))
        w.writerow([*raw_features(space, arch), s["latency_ms"], *info, settings, json.dumps(s["arch"])])
    write_text(Path(path), out.getvalue())
    return Path(path)


def read_dataset(path: str | Path) -> dict[str, Any]:
    """{"features": names, "x": (N, F) array, "y": (N,) ms, "source": "hat" | "mosnas", "rows": N} of a dataset
    (ours or HAT's, .csv or .csv.gz). ConfigError: missing file, unknown header, a non-numeric or non-positive
    value (with its line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"latency dataset not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except (*UNREADABLE, csv.Error) as e:
        raise ConfigError(f"{path}: not a readable CSV latency dataset ({reason(e)})") from None
    if len(rows) < 2:
        raise ConfigError(f"{path}: a latency dataset needs a header and at least one row")
    head = rows[0]
    if all(c in head for c in (*HAT_COLUMNS, *HAT_LATENCY)):
        source, names = "hat", list(HAT_COLUMNS.values())
        cols = [head.index(c) for c in HAT_COLUMNS]
        ys = lambda r: float(r[head.index(HAT_LATENCY[0])]) + float(r[head.index(HAT_LATENCY[1])])
    elif "latency_ms" in head:
        source, names = "mosnas", [c for c in head if c not in ("latency_ms", *INFO)]
        cols = [head.index(c) for c in names]
        ys = lambda r: float(r[head.index("latency_ms")])
    else:
        raise ConfigError(f"{path}: header has neither HAT's latency columns nor latency_ms: {','.join(head[:4])}...")
    x, y = [], []
    for line, r in enumerate(rows[1:], start=2):
        try:
            x.append([float(r[c]) for c in cols])
            y.append(ys(r))
        except (ValueError, IndexError):
            raise ConfigError(f"{path}:{line}: a feature or latency is missing or not a number") from None
        if not y[-1] > 0:
            raise ConfigError(f"{path}:{line}: latency must be positive, got {y[-1]}")
    return {"features": names, "x": np.asarray(x), "y": np.asarray(y), "source": source, "rows": len(y)}


class FeaturePredictor:
    """Latency (ms) from an arch's raw features, fit on a dataset (`kind` "linear": least squares; "mlp": HAT's
    predictor shape, scikit-learn's MLPRegressor on standardized features and target, early stopping on a
    seeded 10% of the training rows when there are 50 or more). Usable for any space whose schema has the
    dataset's features."""

    kind = "features"

    def __init__(self, names: list[str], model: str = "linear", hidden: int = 400, num_layers: int = 3, seed: int = 0):
        if model not in ("linear", "mlp"):
            raise ConfigError(f"feature predictor model must be linear or mlp, got {model!r}")
        self.names, self.model, self.hidden, self.num_layers, self.seed = list(names), model, hidden, num_layers, seed
        self.x_mean = self.x_scale = self.x_min = self.x_max = None
        self.y_mean, self.y_scale = 0.0, 1.0
        self.weights: list[np.ndarray] = []  # per layer: (in, out) matrix
        self.biases: list[np.ndarray] = []
        self.space: Space | None = None  # set by for_space: predictions of archs

    def fit(self, x: np.ndarray, y: np.ndarray) -> FeaturePredictor:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LinearRegression
        from sklearn.neural_network import MLPRegressor

        self.x_mean, self.x_scale = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        self.x_min, self.x_max = x.min(0), x.max(0)  # the feature range it has seen (outside_range)
        self.y_mean, self.y_scale = float(y.mean()), float(y.std()) or 1.0
        xs, ys = (x - self.x_mean) / self.x_scale, (y - self.y_mean) / self.y_scale
        if self.model == "linear":
            reg = LinearRegression().fit(xs, ys)
            self.weights, self.biases = [reg.coef_[:, None]], [np.atleast_1d(reg.intercept_)]
            return self
        hidden = (self.hidden,) * self.num_layers
        stop = len(ys) >= 50  # early stopping on 10% of the rows needs enough rows to hold out
        reg = MLPRegressor(hidden_layer_sizes=hidden, early_stopping=stop, max_iter=300, random_state=self.seed)
        with warnings.catch_warnings():  # not converged in max_iter: its held-out error says what that cost
            warnings.simplefilter("ignore", ConvergenceWarning)
            reg.fit(xs, ys)
        self.weights, self.biases = list(reg.coefs_), list(reg.intercepts_)
        return self

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        if not self.weights:
            raise PredictorError("the feature predictor is not fitted")
        h = (np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_scale
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w + b
            h = np.maximum(h, 0) if i < len(self.weights) - 1 else h
        return h[:, 0] * self.y_scale + self.y_mean

    def for_space(self, space: Space) -> FeaturePredictor:
        """Use this predictor for archs of `space`; ConfigError when its schema lacks a dataset feature."""
        missing = [n for n in self.names if n not in feature_names(space)]
        if missing:
            raise ConfigError(f"the latency predictor needs features {missing} that space '{space.name}' lacks")
        self.space = space
        return self

    def outside_range(self, space: Space, margin: float = 0.25) -> list[str]:
        """The features whose values over `space` (its smallest and largest arch) leave the range the predictor
        was fitted on, widened by `margin` of that range on each side (a feature constant in the dataset: any
        other value), e.g. ["encoder_embed_dim 16..32 (fitted on 512..640)"]: predictions there extrapolate.
        A predictor saved without its range uses mean +- 2.5 std of its features."""
        self.for_space(space)
        order = [feature_names(space).index(n) for n in self.names]
        ends = np.asarray([[raw_features(space, a)[i] for i in order] for a in (space.smallest(), space.largest())])
        lo, hi = ends.min(0), ends.max(0)
        if self.x_min is None:
            fit_lo, fit_hi = self.x_mean - 2.5 * self.x_scale, self.x_mean + 2.5 * self.x_scale
        else:
            fit_lo, fit_hi = self.x_min, self.x_max
        pad = margin * (fit_hi - fit_lo)
        return [
            f"{n} {lo[i]:g}..{hi[i]:g} (fitted on {fit_lo[i]:g}..{fit_hi[i]:g})"
            for i, n in enumerate(self.names)
            if lo[i] < fit_lo[i] - pad[i] - 1e-9 or hi[i] > fit_hi[i] + pad[i] + 1e-9
        ]

    def predict(self, archs: list[Arch]) -> list[float]:
        if self.space is None:
            raise PredictorError("call for_space(space) before predicting archs")
        order = [feature_names(self.space).index(n) for n in self.names]
        x = np.asarray([[raw_features(self.space, a)[i] for i in order] for a in archs]).reshape(len(archs), -1)
        return self.predict_features(x).tolist() if archs else []

    def __call__(self, arch: Arch) -> float:
        return self.predict([arch])[0]

    def save(self, folder: str | Path, about: dict[str, Any] | None = None) -> Path:
        """Write predictor.json (features, scaling, layers as lists: no pickle) with `about` (its dataset)."""
        keys = ("names", "model", "hidden", "num_layers", "seed", "y_mean", "y_scale")
        meta = {"kind": self.kind, **{k: getattr(self, k) for k in keys}, "about": about or {}}
        meta.update(x_mean=self.x_mean.tolist(), x_scale=self.x_scale.tolist())
        meta.update(x_min=self.x_min.tolist(), x_max=self.x_max.tolist())
        meta.update(weights=[w.tolist() for w in self.weights], biases=[b.tolist() for b in self.biases])
        write_text(Path(folder) / "predictor.json", json.dumps(meta))
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> FeaturePredictor:
        meta = read_meta(folder, "features")
        try:
            pred = cls(meta["names"], meta["model"], meta["hidden"], meta["num_layers"], meta["seed"])
            pred.y_mean, pred.y_scale = float(meta["y_mean"]), float(meta["y_scale"])
            pred.x_mean, pred.x_scale = np.asarray(meta["x_mean"]), np.asarray(meta["x_scale"])
            if "x_min" in meta:  # saved before the range was: outside_range estimates it
                pred.x_min, pred.x_max = np.asarray(meta["x_min"]), np.asarray(meta["x_max"])
            pred.weights = [np.asarray(w, dtype=np.float64) for w in meta["weights"]]
            pred.biases = [np.asarray(b, dtype=np.float64) for b in meta["biases"]]
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"{folder}/predictor.json is not a feature latency predictor ({e!r})") from None
        return pred


def fit_dataset(
    path: str | Path, holdout: float = 0.2, seed: int = 0, models: tuple[str, ...] = ("linear", "mlp")
) -> tuple[FeaturePredictor, dict[str, Any]]:
    """Fit the linear and the MLP feature predictors on a seeded (1 - holdout) of a dataset's rows; the one
    with the lower held-out MAPE is returned with a report: per model `kendall_tau`, `mape_pct`,
    `rmse_ms` on the held-out rows, which was chosen and why. ConfigError for holdout outside (0, 1) or
    fewer than 10 rows."""
    if not 0 < holdout < 1:
        raise ConfigError(f"holdout must be in (0, 1), got {holdout}")
    data = read_dataset(path)
    n = data["rows"]
    if n < 10:
        raise ConfigError(f"{path}: {n} rows; fitting a latency predictor needs at least 10")
    order = np.random.default_rng(seed).permutation(n)
    test, train = order[: max(2, int(round(n * holdout)))], order[max(2, int(round(n * holdout))) :]
    x, y = data["x"], data["y"]
    fitted, errors = {}, {}
    for model in models:
        fitted[model] = FeaturePredictor(data["features"], model, seed=seed).fit(x[train], y[train])
        e = prediction_errors(y[test].tolist(), fitted[model].predict_features(x[test]).tolist())
        errors[model] = {"kendall_tau": e["kendall_tau"], "mape_pct": e["mape_pct"], "rmse_ms": e["rmse_ms"]}
    best = min(errors, key=lambda m: errors[m]["mape_pct"])
    others = ", ".join(f"{m} {e['mape_pct']:.2f}%" for m, e in errors.items() if m != best) or "the only one fit"
    why = f"lowest held-out MAPE: {errors[best]['mape_pct']:.2f}% ({others})"
    report = {
        "dataset": str(path),
        "source": data["source"],
        "rows": n,
        "train_rows": len(train),
        "heldout_rows": len(test),
        "latency_ms_range": [float(y.min()), float(y.max())],
        "predictors": errors,
        "chosen": best,
        "why": why,
        "seed": seed,
    }
    return fitted[best], report
