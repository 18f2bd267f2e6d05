"""Fine-tune an exported subnet (weights inherited from the supernet) or train its arch from scratch.

Both reuse the training loop: a `shared` supernet trained on one fixed arch is exactly a dense
model of that arch, and `supernet.pretrained` fills it with the exported weights (or, from scratch,
with a standard init of the arch's own shape)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mosnas.config import Config
from mosnas.engine.load import load_run
from mosnas.engine.run_folder import needs_training
from mosnas.engine.train import train
from mosnas.errors import CheckpointError
from mosnas.family import Family, family_of
from mosnas.pipeline.export import ensure_export
from mosnas.workspace.files import check_tensors
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.records import fresh, made_from, write_json
from mosnas.workspace.run_dir import RunDir, read_log, remove


def scratch_init(model_dir: Path, path: Path, seed: int, family: Family) -> Path:
    """Write a fresh standard init of `model_dir`'s arch (the family's `init_model`) to `path`.

    The from-scratch control starts as a dense model of its own shape would (e.g. xavier for each
    linear's own fan-in and fan-out), not from a slice of the supernet's max-size init, whose
    xavier std is that of the larger shape (fc1 of a 128x256 arch in a 256x1024 space: 0.039, not 0.072)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = family.init_model(model_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def finetune_config(
    run_cfg: Config,
    model_dir: Path,
    out_dir: Path,
    name: str,
    steps: int,
    lr: float,
    warmup: int,
    valid_every: int,
    valid_bleu: int,
    scratch: bool,
) -> Config:
    """The training config of one fine-tuning (or from-scratch) run of the arch in `model_dir`; a scratch
    run starts from `<out_dir>/<name>.scratch-init.safetensors` (see `scratch_init`)."""
    for needed in (ModelDir(model_dir).arch, ModelDir(model_dir).weights):
        if not needed.is_file():
            raise CheckpointError(f"{model_dir} is not an exported model folder (missing {needed.name})")
    check_tensors(ModelDir(model_dir).weights)  # damaged weights or arch: one line before a run folder is made
    ModelDir(model_dir).read_arch()
    run_cfg = family_of(run_cfg.family).from_model(run_cfg, model_dir)  # e.g. its vocabulary
    sn = replace(
        run_cfg.supernet,
        generator="shared",
        num_experts=1,
        expert_init="copy",
        pretrained=str(out_dir / f"{name}.scratch-init.safetensors" if scratch else ModelDir(model_dir).weights),
    )
    tc = replace(
        run_cfg.train,
        sampling="fixed",
        fixed_arch=str(ModelDir(model_dir).arch),
        max_steps=steps,
        max_minutes=0.0,
        lr=lr,
        warmup=warmup,
        valid_every=valid_every,
        ckpt_every=max(valid_every, steps),
        distill=0.0,
        grad_conflict_every=0,  # compares the archs of a sandwich step: one arch here
        valid_bleu=valid_bleu,
        precision=run_cfg.finetune.precision,
    )
    return replace(run_cfg, name=name, out_dir=str(out_dir), supernet=sn, train=tc).validate()


BOOKKEEPING = ("log_every", "ckpt_every", "keep_last", "threads", "tensorboard")


def _start_afresh_unless_same(cfg: Config, model_dir: Path, scratch: bool) -> None:
    """A fine-tuning folder continues only the run its record says (the training recipe and the exported
    model it starts from); one made from other inputs is removed and redone, not refused as another run.
    The record, `<out>/<name>.json`, is written before training, so a stopped run still resumes."""
    upstream = ModelDir(model_dir).made_from()
    sections = {k: v for k, v in cfg.to_dict().items() if k in ("family", "data", "supernet", "train")}
    for key in BOOKKEEPING:  # how often to log or keep checkpoints, threads: they change no result
        sections["train"].pop(key, None)
    record = made_from(config=sections, scratch=scratch, model=upstream)
    marker = cfg.run_dir.with_name(f"{cfg.name}.json")
    if not fresh(marker, record, f"finetune {cfg.name}"):
        remove(cfg.run_dir)
        write_json(marker, {"made_from": record})


def finetuned_from(model_dir: Path, scratch: bool) -> dict[str, Any]:
    """The start of a fine-tuned model: the exported model's folder and provenance (only its arch when
    `scratch`: the weights were drawn afresh)."""
    info = ModelDir(model_dir).info()
    return {"dir": str(model_dir), "scratch": scratch, "provenance": info.get("provenance")}


def finetune(
    run_cfg: Config,
    model_dir: str | Path,
    out_dir: str | Path,
    name: str,
    steps: int,
    lr: float = 5e-4,
    warmup: int = 50,
    valid_every: int = 100,
    valid_bleu: int = 200,
    scratch: bool = False,
    progress: bool = True,
) -> tuple[Path, list[dict[str, Any]]]:
    """Train the arch of `model_dir` for `steps` and export it to `<out>/<name>/export`; returns the
    export folder and the validation curve (NLL and BLEU against steps). The export's provenance names the
    fine-tuning run and, as `finetuned_from`, the model it started from (see `finetuned_from`)."""
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()  # the saved config's paths: absolute
    cfg = finetune_config(run_cfg, model_dir, out_dir, name, steps, lr, warmup, valid_every, valid_bleu, scratch)
    _start_afresh_unless_same(cfg, model_dir, scratch)
    if scratch:
        scratch_init(model_dir, Path(cfg.supernet.pretrained), cfg.train.seed, family_of(cfg.family))
    run_dir = train(cfg, resume=True, show_progress=progress) if needs_training(cfg) else cfg.run_dir
    loaded = load_run(run_dir)
    arch = loaded.space.parse_arch(str(ModelDir(model_dir).arch))
    export = RunDir(run_dir).exports
    ensure_export(loaded, arch, export, finetuned_from=finetuned_from(model_dir, scratch))
    # the validation records: the task's (the loop's own records hold "lr" or "event")
    return export, [r for r in read_log(run_dir) if "lr" not in r and "event" not in r]
