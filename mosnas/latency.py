"""Latency: time any workload of an exported subnet (a family says what it runs), and predict it from the arch
embedding."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from mosnas.errors import ConfigError, PredictorError
from mosnas.hardware import Precision, cpu_flags, cpu_name, resolve_precision
from mosnas.records import write_text
from mosnas.space import Arch, Schema, Space
from mosnas.stats import prediction_errors

# -- measurement ------------------------------------------------------------------------------


def timing_device(setting: str) -> torch.device:
    """The device of `latency.device`: cpu | cuda | cuda:N | auto (the first GPU when there is one, else cpu).
    Raises ConfigError for a CUDA device this machine does not have."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ConfigError(f"latency.device: unknown device {setting!r}; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"latency.device={setting}: no such CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"latency.device: {setting!r} is not supported; expected cpu, cuda, cuda:N or auto")
    return device


def workload_precision(
    requested: str, device: torch.device, threads: int, time_in: Callable[[torch.dtype], float]
) -> Precision:
    """The precision models are timed (deployed) in. `auto` first asks `resolve_precision` (its matmul probe
    rules out emulated bf16 cheaply); where that says bf16, the workload itself decides: `time_in(dtype)`
    (ms of one representative model, e.g. the largest arch) is measured in both precisions and bf16 is kept
    only if it is faster. A batch-1 beam search is not matmul-bound: on a CPU with native bf16 it ran
    slower in bf16 (largest quick-start arch 174.7 vs 158.5 ms) although a 256^3 matmul is 2x faster."""
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(max(threads, 1))
        first = resolve_precision(requested, device, "latency.precision")
        if requested != "auto" or not first.bf16:
            return first
        fp32, bf16 = time_in(torch.float32), time_in(torch.bfloat16)
    finally:
        torch.set_num_threads(old)
    measured = f"the largest arch took {bf16:.2f} ms in bf16 vs {fp32:.2f} ms in fp32"
    timed = {**first.probe, "workload_fp32_ms": round(fp32, 3), "workload_bf16_ms": round(bf16, 3)}
    if bf16 < fp32:
        return Precision("bf16", requested, f"auto: bf16 is faster for this workload: {measured}", timed)
    return Precision("fp32", requested, f"auto: bf16 is not faster for this workload: {measured}", timed)


def device_info(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a latency sample was measured on: device name, thread count, CPU flags, torch and OS."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "device": str(device),
        "name": name,
        "threads": torch.get_num_threads(),
        "cpu_flags": cpu_flags(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


@torch.no_grad()
def measure(
    work: Callable[[], Any],
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Latency (ms) of `work()`, whatever it runs: `warmup` untimed calls, then `repeats` timed ones; drops
    the slowest and fastest 10% and reports the median (`latency_ms`) and mean (`mean_ms`) of the rest, with
    every time (`times_ms`) and what it ran on (`device`). Runs on `threads` CPU threads (restored after);
    CUDA work is synchronized before each clock reading."""
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"latency: repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(warmup):
            work()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            work()
            sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
            times.append((time.perf_counter() - start) * 1000)
        info = device_info(device)
    finally:
        torch.set_num_threads(old_threads)
    cut = int(0.1 * repeats)
    kept = sorted(times)[cut : repeats - cut]
    return {"latency_ms": statistics.median(kept), "mean_ms": statistics.fmean(kept), "times_ms": times, "device": info}


def measure_archs(
    supernet: Any, archs: list[Arch], time_model: Callable[[nn.Module], dict[str, Any]], progress: bool = True
) -> list[dict[str, Any]]:
    """Latency samples ({"arch": ..., **time_model(model)}) of each arch's exported (collapsed, dense) model."""
    samples = []
    for arch in tqdm(archs, desc="latency", disable=not progress, dynamic_ncols=True):
        samples.append({"arch": arch.to_dict(), **time_model(supernet.export(arch))})
    return samples


def write_samples(samples: list[dict[str, Any]], path: str | Path) -> None:
    """Write latency samples as JSON lines (atomically: a stopped run keeps the previous file)."""
    write_text(Path(path), "".join(json.dumps(s) + "\n" for s in samples))


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Read latency samples written by write_samples."""
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"latency samples not found: {path}")
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise PredictorError(f"{path}: line {e.lineno} is not valid JSON") from None


# -- prediction -------------------------------------------------------------------------------


def _parse(space: Space, samples: list[dict[str, Any]]) -> tuple[list[Arch], list[float]]:
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
        archs, ys = _parse(self.space, samples)
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
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            space = Space.from_dict(meta["space"], schema, str(meta_path))
            pred = cls(space, meta["hidden"], meta["num_layers"], meta["seed"])
            pred.mean, pred.std = float(meta["mean"]), float(meta["std"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise PredictorError(f"{meta_path} is not a latency predictor description ({e!r})") from None
        try:
            pred.net.load_state_dict(load_file(str(weights_path)))
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            raise PredictorError(f"{weights_path} does not match {meta_path}: {first}") from None
        return pred


class LinearPredictor:
    """Least squares on the same features plus a bias: the baseline the MLP must beat."""

    def __init__(self, space: Space):
        self.space = space
        self.coef: np.ndarray | None = None  # (embed_dim + 1,): the weights, then the bias

    def fit(self, samples: list[dict[str, Any]]) -> LinearPredictor:
        archs, ys = _parse(self.space, samples)
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


def evaluate_predictor(pred: LatencyPredictor | LinearPredictor, samples: list[dict[str, Any]]) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and Kendall tau of `pred` on (held-out) samples."""
    archs, ys = _parse(pred.space, samples)
    return prediction_errors(ys, pred.predict(archs))
