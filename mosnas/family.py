"""The seam between the engine and a model family: the calls the engine makes, and the families it knows.

A family is a package (mosnas.mt: translation; mosnas.bert: BERT students distilled from a teacher) whose
module-level names satisfy `Family`; the engine (run folder, training loop, search, latency, supernet, space,
pipeline, report) asks it for everything that depends on the model, the data or the metric. Families are
sibling packages of the same shape, listed in FAMILIES; there is no registry and no base class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from mosnas import bert, mt
from mosnas.bert import nasbert
from mosnas.config import Config, LatencyConfig, SearchConfig, SupernetConfig
from mosnas.core.space import Arch, Schema, Space
from mosnas.errors import ConfigError
from mosnas.hardware import Precision


class Task(Protocol):
    """What the training loop asks of a family's data and losses (one per training run and rank). A task may
    also hold `module`, an nn.Module of parameters it trains beside the supernet (e.g. BERT's hidden-state
    projection): the trainer optimizes it and checkpoints it as `task.*` tensors (exact resume); never exported."""

    vocab_size: int
    info: dict[str, Any]  # logged when training starts (data sizes, vocabulary)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's batches of example indices, deterministic per (seed, epoch): exact resume."""

    def collate(self, indices: list[int]) -> Any:
        """One batch, on the training device."""

    def count(self, batch: Any) -> int:
        """What the loss is divided by (summed over the ranks' shares of a global batch): e.g. target tokens."""

    def step(self, net: nn.Module, batch: Any, archs: list[tuple[str, Arch]], denominator: torch.Tensor) -> dict:
        """Forward and backward of every arch of the step on `batch`; its loss per kind of arch."""

    def validate(self, net: nn.Module, step: int) -> dict[str, Any]:
        """A validation record of the log ({"step": step, ...})."""

    # Optional: `attach(net, progress)`, called before the first step (a task that works on the supernet between
    # steps, e.g. NAS-BERT's shrinking at epoch starts; `progress`: it may show a bar), and `archs(step) ->
    # [(kind, arch), ...]`, the step's archs in place of the sandwich rule (seeded by the step alone: every rank
    # and a resumed run agree).


class Family(Protocol):
    """What the engine asks of a model family (mosnas.mt's module-level names)."""

    SCHEMA: Schema  # the search space's arch, dims and embedding
    RUN_FILES: tuple[str, ...]  # files `prepare` writes into a run folder (removed by --force)
    METRICS: tuple[tuple[str, str], ...]  # (result key, label) of the quality metrics; the first is plotted
    COSTS: tuple[tuple[str, str], ...]  # (result key, label) of the costs in reports, from `costs`

    def load_space(self, path: str | Path) -> Space: ...
    def dense_config(self, arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> Any: ...
    def dense_model(self, config: Any) -> nn.Module: ...
    def mixed_group(self, name: str, mos_attention: bool) -> tuple[str, str] | None: ...
    def supernet_config(self, cfg: Config) -> SupernetConfig: ...  # cfg.supernet with what the family fills in
    def check_inputs(self, cfg: Config) -> None: ...
    def prepare(self, cfg: Config, run_dir: Path) -> None: ...
    def vocab(self, run_dir: Path) -> tuple[Any, int]: ...
    def task(
        self, cfg: Config, run_dir: Path, space: Space, fixed: Arch | None, device: torch.device, precision: Precision
    ) -> Task: ...
    def fitness(
        self, run: Any, sc: SearchConfig, device: torch.device, bf16: bool
    ) -> tuple[Callable[[Arch], float], dict[str, Any]]: ...
    def selection_score(
        self, run: Any, sc: SearchConfig, device: torch.device, bf16: bool
    ) -> tuple[Callable[[Arch], float], dict[str, Any]]: ...  # higher is better: the search's final pick (rerank)
    def costs(self, arch: Arch, space: Space, vocab_size: int, sn: SupernetConfig, lc: LatencyConfig) -> dict: ...
    def time_model(
        self, model: nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype, repeats: int
    ) -> dict[str, Any]: ...
    # latency (mosnas.pipeline.latency): the work of one sample, the per-layer lookup table, peak memory
    def workload(self, model: nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype) -> Callable: ...
    def latency_parts(self, arch: Arch) -> dict[str, list[str]]: ...  # group -> table keys of the arch
    def space_parts(self, space: Space) -> list[str]: ...  # every table key of the space
    def part_workload(
        self, key: str, space: Space, vocab_size: int, sn: SupernetConfig, lc: LatencyConfig, device, dtype
    ) -> Callable[[], None]: ...
    def memory(self, model: nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype) -> dict: ...
    def save_model(self, model: nn.Module, out: str | Path, run_dir: Path, arch: Arch, info: dict) -> Path: ...
    def load_model(self, model_dir: str | Path) -> tuple[nn.Module, Any]: ...
    def init_model(self, model_dir: Path) -> nn.Module: ...
    def from_model(self, cfg: Config, model_dir: Path) -> Config: ...
    def evaluate(self, model_dir: Path, cfg: Config, progress: bool, upstream: dict | None) -> dict[str, Any]: ...
    def describe(self, arch: dict[str, Any]) -> str: ...
    def report_notes(self, rows: list[dict[str, Any]]) -> list[str]: ...


FAMILIES: dict[str, Family] = {"mt": mt, "bert": bert, "nasbert": nasbert}


def family_of(name: str) -> Family:
    """The family called `name` (the config's `family`)."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def load_space(path: str | Path, family: str = "mt") -> Space:
    """The search space in the YAML file `path`, read as the family `family` declares its archs."""
    return family_of(family).load_space(path)
