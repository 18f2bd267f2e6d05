"""Export: collapse the supernet for one arch into a standalone dense model folder (the family's format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from mosnas.errors import ConfigError
from mosnas.records import fresh, made_from
from mosnas.run import LoadedRun, remove
from mosnas.space import Arch


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_record(run: LoadedRun, arch: Arch) -> dict[str, Any]:
    """What an export is made from: the arch and the checkpoint it was collapsed out of."""
    return made_from(arch=arch.to_dict(), checkpoint=run.checkpoint)


def export_arch(run: LoadedRun, arch: Arch, out_dir: str | Path) -> Path:
    """Collapse `arch` out of a trained run and save it; the parameter count is checked against the arch.
    The folder is written under a temporary name and renamed over any previous export (and whatever was
    made from it: evaluations, latency), so a failed export leaves nothing behind."""
    run.space.validate(arch)
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "model.safetensors").is_file():
        raise ConfigError(f"{out} holds something other than an exported model; choose another folder")
    model = run.net.export(arch)
    costs = run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, run.cfg.latency)
    if num_parameters(model) != costs["parameters"]:  # a real invariant: the arch alone fixes the model's size
        raise RuntimeError(f"exported model has {num_parameters(model)} parameters, arch says {costs['parameters']}")
    sn = run.cfg.supernet
    info = {"run": str(run.run_dir), "step": run.step, "generator": sn.generator, "num_experts": sn.num_experts}
    tmp = out.with_name(f".tmp-{out.name}")
    remove(tmp)
    run.family.save_model(model, tmp, run.run_dir, arch, {**info, **costs, "made_from": export_record(run, arch)})
    remove(out)
    tmp.rename(out)
    return out


def ensure_export(run: LoadedRun, arch: Arch, out_dir: str | Path) -> dict[str, Any]:
    """Export `arch` unless `out_dir` holds it from this checkpoint already; returns the export's record."""
    out, record = Path(out_dir), export_record(run, arch)
    if not fresh(out / "export.json", record, f"export {out.name}"):
        export_arch(run, arch, out)
    return record
