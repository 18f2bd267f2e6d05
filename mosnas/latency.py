"""Latency: measure exported subnets with HAT's protocol, and predict it from the arch embedding."""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from mosnas.decode import reorder_cache
from mosnas.errors import ConfigError, PredictorError
from mosnas.hardware import Precision, cpu_flags, cpu_name, resolve_precision
from mosnas.models.supernet import Supernet
from mosnas.models.transformer import EncoderOut, Transformer
from mosnas.space import Arch, Space

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


def timing_setup(device_setting: str, precision: str, threads: int) -> tuple[torch.device, Precision]:
    """Device and precision of latency measurements; the precision probe runs with the timing thread count."""
    device = timing_device(device_setting)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(max(threads, 1))
        return device, resolve_precision(precision, device, "latency.precision")
    finally:
        torch.set_num_threads(old)


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


def _fixed_tokens(model: Transformer, length: int, device: torch.device) -> Tensor:
    # ordinary (non-special) ids, the same every time: the work does not depend on the weights
    first = max(model.cfg.pad_id, model.cfg.bos_id, model.cfg.eos_id) + 1
    return first + torch.arange(length, device=device) % (model.cfg.vocab_size - first)


def _translate(model: Transformer, src: Tensor, tokens: Tensor, beam: int) -> None:
    """One fixed-length beam-search translation: encoder once, then one cached decoder step per token."""
    enc = model.encode(src)
    enc = EncoderOut([s.repeat(beam, 1, 1) for s in enc.states], enc.pad_mask.repeat(beam, 1))
    cache = model.new_cache()
    order = torch.arange(beam, device=src.device)
    for step in range(tokens.shape[1]):
        logits = model.decode(tokens[:, step : step + 1], enc, cache, start=step)
        logits[:, -1].float().log_softmax(-1).topk(2 * beam)  # beam search's scoring (result unused)
        reorder_cache(cache, order)  # and its cache reordering, with a fixed order


@torch.no_grad()
def measure_latency(
    model: Transformer,
    src_len: int = 30,
    tgt_len: int = 30,
    beam: int = 5,
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Latency (ms) of translating one `src_len`-token sentence into `tgt_len` tokens (HAT's protocol).

    Runs `warmup` untimed translations, then `repeats` timed ones; drops the slowest and fastest 10%
    and reports the median (`latency_ms`) and mean (`mean_ms`) of the rest. Moves `model` to `device`
    and casts it to `dtype` (the precision it is deployed in); CUDA work is synchronized before each
    clock reading."""
    if min(src_len, tgt_len, beam, repeats) < 1 or warmup < 0:
        raise ConfigError(
            f"latency: src_len, tgt_len, beam and repeats must be >= 1 and warmup >= 0, got "
            f"{src_len}, {tgt_len}, {beam}, {repeats}, {warmup}"
        )
    device = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    model = model.to(device=device, dtype=dtype).eval()
    src = _fixed_tokens(model, src_len, device)[None]
    tokens = _fixed_tokens(model, tgt_len, device)[None].repeat(beam, 1)
    old_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for _ in range(warmup):
            _translate(model, src, tokens, beam)
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            _translate(model, src, tokens, beam)
            sync()  # CUDA kernels run asynchronously: wait for them before reading the clock
            times.append((time.perf_counter() - start) * 1000)
        info = device_info(device)
    finally:
        torch.set_num_threads(old_threads)
    cut = int(0.1 * repeats)
    kept = sorted(times)[cut : repeats - cut]
    return {
        "latency_ms": statistics.median(kept),
        "mean_ms": statistics.fmean(kept),
        "times_ms": times,
        "settings": {
            "src_len": src_len,
            "tgt_len": tgt_len,
            "beam": beam,
            "warmup": warmup,
            "repeats": repeats,
            "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        },
        "device": info,
    }


def measure_archs(
    supernet: Supernet,
    archs: list[Arch],
    src_len: int = 30,
    tgt_len: int = 30,
    beam: int = 5,
    warmup: int = 5,
    repeats: int = 20,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, Any]]:
    """Latency samples ({"arch": ..., **measure_latency}) of each arch's exported (collapsed, dense) model."""
    samples = []
    for arch in tqdm(archs, desc="latency", disable=not progress, dynamic_ncols=True):
        model = supernet.export(arch)
        result = measure_latency(model, src_len, tgt_len, beam, warmup, repeats, device, threads, dtype)
        samples.append({"arch": arch.to_dict(), **result})
    return samples


def write_samples(samples: list[dict[str, Any]], path: str | Path) -> None:
    """Write latency samples as JSON lines (atomically: a stopped run keeps the previous file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(s) + "\n" for s in samples), encoding="utf-8")
    tmp.replace(path)


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
        arch = s["arch"] if isinstance(s["arch"], Arch) else Arch.from_dict(s["arch"])
        y = s["latency_ms"]
        if isinstance(y, bool) or not isinstance(y, (int, float)) or not y > 0:
            raise PredictorError(f"latency sample {i}: latency_ms must be a positive number, got {y!r}")
        archs.append(space.validate(arch))
        ys.append(float(y))
    return archs, ys


def _features(space: Space, archs: list[Arch]) -> Tensor:
    return torch.tensor([space.embed(a) for a in archs], dtype=torch.float32)  # (N, 10)


class LatencyPredictor:
    """MLP from the arch's 10-feature embedding to latency in ms (HAT: hidden=400, num_layers=4)."""

    def __init__(self, space: Space, hidden: int = 128, num_layers: int = 3, seed: int = 0):
        self.space, self.hidden, self.num_layers, self.seed = space, hidden, num_layers, seed
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(seed)
            dims = [Space.EMBED_DIM] + [hidden] * num_layers
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
    def load(cls, folder: str | Path) -> LatencyPredictor:
        """A predictor saved by save(); no pickle involved."""
        folder = Path(folder)
        meta_path, weights_path = folder / "predictor.json", folder / "predictor.safetensors"
        for p in (meta_path, weights_path):
            if not p.is_file():
                raise PredictorError(f"latency predictor file not found: {p}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            pred = cls(Space.from_dict(meta["space"], str(meta_path)), meta["hidden"], meta["num_layers"], meta["seed"])
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
    """Least squares on the same 10 features plus a bias: the baseline the MLP must beat."""

    def __init__(self, space: Space):
        self.space = space
        self.coef: np.ndarray | None = None  # (11,): 10 weights, then the bias

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


# -- evaluation -------------------------------------------------------------------------------


def kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-b rank correlation (ties counted as scipy does), O(n^2): fine up to a few thousand."""
    x_arr, y_arr = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x_arr.shape != y_arr.shape or x_arr.ndim != 1 or len(x_arr) < 2:
        raise PredictorError(f"kendall_tau needs two equal-length lists of >= 2 values, got {len(x)} and {len(y)}")
    i, j = np.triu_indices(len(x_arr), 1)  # every pair once
    sx, sy = np.sign(x_arr[i] - x_arr[j]), np.sign(y_arr[i] - y_arr[j])
    # tau-b = (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y)
    denom = np.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    return float((sx * sy).sum() / denom) if denom > 0 else float("nan")


def evaluate_predictor(pred: LatencyPredictor | LinearPredictor, samples: list[dict[str, Any]]) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and Kendall tau of `pred` on (held-out) samples."""
    archs, ys = _parse(pred.space, samples)
    y, p = np.asarray(ys), np.asarray(pred.predict(archs))
    return {
        "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
        "mape_pct": float(np.mean(np.abs(p - y) / y) * 100),
        "kendall_tau": kendall_tau(ys, p.tolist()) if len(ys) > 1 else float("nan"),
        "num_samples": len(ys),
    }


def scatter_plot(measured: list[float], predicted: list[float], path: str | Path, title: str = "") -> Path:
    """Save a predicted-vs-measured latency scatter plot (PNG) with the y = x line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg: no display, no pyplot state
    from matplotlib.figure import Figure

    if len(measured) != len(predicted) or not measured:
        raise PredictorError(f"scatter_plot needs equal, non-empty lists, got {len(measured)} and {len(predicted)}")
    fig = Figure(figsize=(4.5, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(measured, predicted, s=10, alpha=0.6)
    lo, hi = min(*measured, *predicted), max(*measured, *predicted)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set(xlabel="measured latency (ms)", ylabel="predicted latency (ms)", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
