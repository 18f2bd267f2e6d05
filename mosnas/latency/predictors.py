"""Latency predictors from an arch's embedding (HAT's 10 features for translation): HAT's MLP (Wang et al.
2020, §latency predictor) and the linear baseline it must beat. The per-layer lookup table is in
mosnas.latency.table, predictors fit on a portable dataset (HAT's CSVs) in mosnas.latency.datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from mosnas.core.space import Arch, Schema, Space
from mosnas.errors import PredictorError
from mosnas.latency.stats import prediction_errors
from mosnas.workspace.files import load_tensors, read_json_file
from mosnas.workspace.records import write_text


def parse_samples(space: Space, samples: list[dict[str, Any]]) -> tuple[list[Arch], list[float]]:
    """Validated archs and latencies of samples ({"arch": ..., "latency_ms": ...})."""
    if not samples:
        raise PredictorError("no latency samples given")
    archs, ys = [], []
    for i, s in enumerate(samples):
        if not isinstance(s, dict) or "arch" not in s or "latency_ms" not in s:
            raise PredictorError(f"latency sample {i} needs 'arch' and 'latency_ms' keys")
        arch = s["arch"] if isinstance(s["arch"], space.schema.arch) else space.arch_from_dict(s["arch"])
        y = s["latency_ms"]
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not y > 0:
            raise PredictorError(f"latency sample {i}: latency_ms must be a positive number, got {y!r}")
        archs.append(space.validate(arch))
        ys.append(float(y))
    return archs, ys


def _features(space: Space, archs: list[Arch]) -> Tensor:
    return torch.tensor([space.embed(a) for a in archs], dtype=torch.float32)  # (N, 10)


class LatencyPredictor:
    """MLP from the arch's embedding (HAT's 10 features for translation) to latency in ms (HAT: hidden=400,
    num_layers=4)."""

    kind = "mlp"

    def __init__(self, space: Space, hidden: int = 128, num_layers: int = 3, seed: int = 0):
        self.space, self.hidden, self.num_layers, self.seed = space, hidden, num_layers, seed
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            dims = [space.embed_dim] + [hidden] * num_layers
            layers: list[nn.Module] = []
            for n_in, n_out in zip(dims, dims[1:]):
                layers += [nn.Linear(n_in, n_out), nn.ReLU()]
            self.net = nn.Sequential(*layers, nn.Linear(dims[-1], 1))
        self.mean, self.std = 0.0, 1.0  # target normalization, set by fit

    def fit(
        self, samples: list[dict[str, Any]], steps: int = 3000, lr: float = 1e-3, batch_size: int = 128
    ) -> LatencyPredictor:
        """Train with Adam on the MSE of normalized latencies (mini-batches drawn with the seed)."""
        archs, ys = parse_samples(self.space, samples)
        x, y = _features(self.space, archs), torch.tensor(ys)
        std = float(y.std()) if len(ys) > 1 else 0.0
        self.mean, self.std = float(y.mean()), std if std > 0 else 1.0
        y = (y - self.mean) / self.std
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # small final steps: a precise fit
        self.net.train()
        for _ in range(steps):
            idx = torch.randint(len(ys), (min(batch_size, len(ys)),), generator=gen)
            loss = F.mse_loss(self.net(x[idx]).squeeze(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def predict(self, archs: list[Arch]) -> list[float]:
        """Predicted latency (ms) of each arch."""
        if not archs:
            return []
        out = self.net(_features(self.space, archs)).squeeze(-1) * self.std + self.mean
        return out.tolist()

    def __call__(self, arch: Arch) -> float:
        return self.predict([arch])[0]

    def save(self, folder: str | Path) -> Path:
        """Write predictor.safetensors (weights) and predictor.json (space, sizes, normalization)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "predictor.safetensors"))
        meta = {
            "kind": "mlp",
            "space": self.space.to_dict(),
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "seed": self.seed,
            "mean": self.mean,
            "std": self.std,
        }
        (folder / "predictor.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path, schema: Schema) -> LatencyPredictor:
        """A predictor saved by save(), for a space of the family's `schema`; no pickle involved."""
        folder = Path(folder)
        meta_path, weights_path = folder / "predictor.json", folder / "predictor.safetensors"
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise PredictorError(f"latency predictor file not found: {p}")
        meta = read_meta(folder, "mlp")
        try:
            space = Space.from_dict(meta["space"], schema, str(meta_path))
            pred = cls(space, int(meta["hidden"]), int(meta["num_layers"]), int(meta["seed"]))
            pred.mean, pred.std = float(meta["mean"]), float(meta["std"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PredictorError(f"{meta_path} is not a latency predictor description ({e!r})") from None
        tensors = load_tensors(weights_path, "predictor weights", PredictorError)
        try:
            pred.net.load_state_dict(tensors)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise PredictorError(f"{weights_path} does not match {meta_path}: {first}") from None
        return pred


class LinearPredictor:
    """Least squares on the same features plus a bias: the baseline the MLP must beat."""

    kind = "linear"

    def __init__(self, space: Space):
        self.space = space
        self.coef: np.ndarray | None = None  # (embed_dim + 1,): the weights, then the bias

    def fit(self, samples: list[dict[str, Any]]) -> LinearPredictor:
        archs, ys = parse_samples(self.space, samples)
        x = np.hstack([_features(self.space, archs).double().numpy(), np.ones((len(ys), 1))])
        self.coef = np.linalg.lstsq(x, np.asarray(ys), rcond=None)[0]
        return self

    def predict(self, archs: list[Arch]) -> list[float]:
        if self.coef is None:
            raise PredictorError("the linear predictor is not fitted: call fit(samples) first")
        x = np.asarray([self.space.embed(a) + [1.0] for a in archs]).reshape(len(archs), -1)
        return (x @ self.coef).tolist() if archs else []

    def __call__(self, arch: Arch) -> float:
        return self.predict([arch])[0]

    def save(self, folder: str | Path) -> Path:
        """Write predictor.json: the space and the coefficients (weights, then bias)."""
        if self.coef is None:
            raise PredictorError("the linear predictor is not fitted: call fit(samples) first")
        folder = Path(folder)
        meta = {"kind": self.kind, "space": self.space.to_dict(), "coef": self.coef.tolist()}
        write_text(folder / "predictor.json", json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path, schema: Schema) -> LinearPredictor:
        meta = read_meta(folder, "linear")
        try:
            pred = cls(Space.from_dict(meta["space"], schema, str(folder)))
            pred.coef = np.asarray(meta["coef"], dtype=np.float64).reshape(pred.space.embed_dim + 1)
        except (KeyError, TypeError, ValueError) as e:
            raise PredictorError(f"{folder}/predictor.json is not a linear predictor ({e!r})") from None
        return pred


def read_meta(folder: str | Path, kind: str | None = None) -> dict[str, Any]:
    """The predictor.json of a predictor folder (of `kind` when given); PredictorError when missing or other."""
    path = Path(folder) / "predictor.json"
    meta = read_json_file(path, "latency predictor", PredictorError)
    if not isinstance(meta, dict):
        raise PredictorError(f"{path} is not a latency predictor description")
    if kind is not None and meta.get("kind", "mlp") != kind:
        raise PredictorError(f"{path} describes a {meta.get('kind')!r} predictor, not {kind!r}")
    return meta


def evaluate_predictor(pred: Any, samples: list[dict[str, Any]]) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and Kendall tau of `pred` (any predictor: .space and .predict(archs)) on (held-out)
    samples."""
    archs, ys = parse_samples(pred.space, samples)
    return prediction_errors(ys, pred.predict(archs))
