"""The run folder's layout: every path of a run (`RunDir`), its training log, and removing what a run made.
The guards that keep two runs apart and loading a trained run back are the engine's (mosnas.engine)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.workspace.records import write_text


@dataclass(frozen=True)
class RunDir:
    """Every path of a run folder (checkpoint.py keeps the layout inside `checkpoints/`)."""

    root: Path

    config = property(lambda self: self.root / "config.yaml")
    space = property(lambda self: self.root / "space.yaml")
    environment = property(lambda self: self.root / "environment.json")
    log = property(lambda self: self.root / "train_log.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    tensorboard = property(lambda self: self.root / "tensorboard")
    latency = property(lambda self: self.root / "latency")  # samples, predictor, held-out report, plot
    results = property(lambda self: self.root / "results.json")
    summary = property(lambda self: self.root / "summary.md")
    pareto = property(lambda self: self.root / "pareto.png")
    curve = property(lambda self: self.root / "train_curve.png")  # training loss and validation NLL by step
    finetune = property(lambda self: self.root / "finetune")  # one fine-tuning run per searched subnet
    exports = property(lambda self: self.root / "export")  # one dense model folder per subnet

    def search(self, budget: str) -> Path:
        return self.root / "search" / f"{budget}.json"

    def export(self, name: str) -> Path:
        return self.exports / name

    def derived(self) -> list[Path]:
        """Everything made from the trained supernet (removed with it by --force)."""
        return [
            self.latency,
            self.root / "search",
            self.exports,
            self.finetune,
            self.results,
            self.summary,
            self.pareto,
            self.curve,
        ]


def remove(path: Path) -> None:
    """Remove a file or a folder (nothing when absent)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's training log ([] before training)."""
    path = RunDir(run_dir).log
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def truncate_log(path: Path, step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from (and any torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    write_text(path, "".join(x + "\n" for x in kept))
