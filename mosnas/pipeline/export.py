"""Export: collapse the supernet for one arch into a standalone dense model folder (the family's format)."""

from __future__ import annotations

import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mosnas.core.space import Arch
from mosnas.engine.load import LoadedRun
from mosnas.errors import ConfigError
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.paths import file_sha256
from mosnas.workspace.records import fresh, made_from, read_json, write_json
from mosnas.workspace.run_dir import remove

PROVENANCE_FORMAT = 1  # the version of the `provenance` block of export.json
TOKENIZER_FILES = ("spm.model", "tokenizer.json", "vocab.txt")  # the first one a model folder holds is its tokenizer


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_record(run: LoadedRun, arch: Arch) -> dict[str, Any]:
    """What an export is made from: the arch and the checkpoint it was collapsed out of."""
    return made_from(arch=arch.to_dict(), checkpoint=run.checkpoint)


def provenance(run: LoadedRun, arch: Arch, weights: str = "float32", **extra: Any) -> dict[str, Any]:
    """What an exported model is, for every command that takes it (export.json's `provenance`): its family,
    the data settings it was trained and selected on (corpus folder absolute, language pair or task, splits),
    the run folder (absolute) and checkpoint (step, the supernet weights' SHA-256), the arch, the precision it
    trained in (environment.json) and its weights' dtype (`weights`), the metric settings that score it
    (`decode`, `eval`), plus `extra` (e.g. `finetuned_from`). `add_file_hashes` adds the folder's files once
    written. A family's own exporter (e.g. a Hugging Face folder) calls this, then `add_file_hashes`."""
    cfg, env = run.cfg, run.dir.environment
    return made_from(
        format=PROVENANCE_FORMAT,
        family=cfg.family,
        **({"pair": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}"} if cfg.family == "mt" else {}),
        data=asdict(cfg.data),
        **({cfg.family: asdict(own)} if is_dataclass(own := getattr(cfg, cfg.family, None)) else {}),  # e.g. bert
        run=str(Path(run.run_dir).resolve()),
        checkpoint=run.checkpoint,
        arch=arch.to_dict(),
        precision={"trained": read_json(env).get("precision") if env.is_file() else None, "weights": weights},
        metric={"decode": asdict(cfg.decode), "eval": {**asdict(cfg.eval), "split": cfg.eval.split or cfg.data.test}},
        **extra,
    )


def _dtype(model: nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def add_file_hashes(model_dir: Path) -> None:
    """Complete the `provenance` of `model_dir`/export.json with the SHA-256 of every file beside it and the
    tokenizer's name and hash (a family's save_model writes export.json with `info`, provenance included)."""
    record_file = ModelDir(Path(model_dir)).record
    info = read_json(record_file)
    files = {p.name: file_sha256(p) for p in sorted(Path(model_dir).iterdir()) if p.is_file() and p != record_file}
    tokenizer = next((name for name in TOKENIZER_FILES if name in files), None)
    info["provenance"]["files"] = files
    info["provenance"]["tokenizer"] = {"file": tokenizer, "sha256": files[tokenizer]} if tokenizer else None
    write_json(record_file, info)


def export_arch(run: LoadedRun, arch: Arch, out_dir: str | Path, **extra: Any) -> Path:
    """Collapse `arch` out of a trained run and save it; the parameter count is checked against the arch.
    The folder is written under a temporary name and renamed over any previous export (and whatever was
    made from it: evaluations, latency), so a failed export leaves nothing behind. export.json holds the
    model's `provenance` (with `extra`, see `provenance`)."""
    run.space.validate(arch)
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and not ModelDir(out).weights.is_file():
        raise ConfigError(f"{out} holds something other than an exported model; choose another folder")
    model = run.net.export(arch)
    costs = run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, run.cfg.latency)
    if num_parameters(model) != costs["parameters"]:  # a real invariant: the arch alone fixes the model's size
        raise RuntimeError(f"exported model has {num_parameters(model)} parameters, arch says {costs['parameters']}")
    sn = run.cfg.supernet
    info = {"run": str(run.run_dir), "step": run.step, "generator": sn.generator, "num_experts": sn.num_experts}
    tmp = out.with_name(f".tmp-{out.name}")
    remove(tmp)
    about = {
        **info,
        **costs,
        "provenance": provenance(run, arch, _dtype(model), **extra),
        "made_from": export_record(run, arch),
    }
    run.family.save_model(model, tmp, run.run_dir, arch, about)
    add_file_hashes(tmp)
    remove(out)
    tmp.rename(out)
    return out


def ensure_export(run: LoadedRun, arch: Arch, out_dir: str | Path, **extra: Any) -> dict[str, Any]:
    """Export `arch` unless `out_dir` holds it from this checkpoint already (with its provenance: an export
    of an older mosnas is redone); returns the export's record."""
    out, record = Path(out_dir), export_record(run, arch)
    reused = fresh(ModelDir(out).record, record, f"export {out.name}")
    if reused and "provenance" not in ModelDir(out).info():
        print(f"export {out.name}: redone (it has no provenance record)", file=sys.stderr, flush=True)
        reused = False
    if not reused:
        export_arch(run, arch, out, **extra)
    return record


def read_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """The `provenance` of an exported model folder. A folder exported before models carried one (mosnas
    0.1.0) gets what its run's saved config says (the run folder two levels up, as `mosnas export` and
    `mosnas run` place exports, or export.json's `run`), marked `"legacy": true`, with a one-line warning;
    None (and a warning) when that run is gone too: the commands then use their documented defaults."""
    d = Path(model_dir)
    info = ModelDir(d).info()
    if isinstance(info.get("provenance"), dict):
        return info["provenance"]
    import yaml

    from mosnas.config import config_from_dict
    from mosnas.workspace.paths import PROJECT

    runs = list(d.resolve().parents)[1:2] + ([PROJECT / info["run"]] if isinstance(info.get("run"), str) else [])
    for run_dir in runs:
        if (run_dir / "config.yaml").is_file():
            cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")))
            print(
                f"mosnas: warning: {d} has no provenance record (an older export); using its run's config "
                f"{run_dir / 'config.yaml'}",
                file=sys.stderr,
            )
            pair = {"pair": f"{cfg.data.src_lang}-{cfg.data.tgt_lang}"} if cfg.family == "mt" else {}
            metric = {
                "decode": asdict(cfg.decode),
                "eval": {**asdict(cfg.eval), "split": cfg.eval.split or cfg.data.test},
            }
            return made_from(
                family=cfg.family, **pair, data=asdict(cfg.data), run=str(run_dir), metric=metric, legacy=True
            )
    print(
        f"mosnas: warning: {d} has no provenance record and its run is gone; using the defaults unless "
        "options say otherwise",
        file=sys.stderr,
    )
    return None


def from_record(option: str, given: Any, recorded: Any, model_dir: str | Path, override: bool) -> tuple[Any, str]:
    """The value a command uses for `option` and where it came from ('option', 'model record'): the model's
    record unless the option is given; a given value that contradicts the record is a ConfigError naming both,
    unless `override` (--override-record). `recorded` None (no record): the option, or None."""
    if given is None:
        return recorded, "model record" if recorded is not None else "default"
    if recorded is not None and given != recorded and not override:
        raise ConfigError(
            f"{option} {given} contradicts the model's record ({recorded}, in {ModelDir(Path(model_dir)).record}); "
            "drop the option, or pass --override-record to use it anyway"
        )
    return given, "option" if given == recorded or recorded is None else "option (overriding the record)"
