"""Export: collapse the supernet for one arch into a standalone dense model folder (the family's format)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mosnas.run import LoadedRun
from mosnas.space import Arch


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_arch(run: LoadedRun, arch: Arch, out_dir: str | Path) -> Path:
    """Collapse `arch` out of a trained run and save it; the parameter count is checked against the arch."""
    run.space.validate(arch)
    model = run.net.export(arch)
    costs = run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, run.cfg.latency)
    if num_parameters(model) != costs["parameters"]:  # a real invariant: the arch alone fixes the model's size
        raise RuntimeError(f"exported model has {num_parameters(model)} parameters, arch says {costs['parameters']}")
    sn = run.cfg.supernet
    info = {"run": str(run.run_dir), "step": run.step, "generator": sn.generator, "num_experts": sn.num_experts}
    return run.family.save_model(model, out_dir, run.run_dir, arch, {**info, **costs})
