"""GLUE: fine-tune any Hugging Face BERT folder (an exported mosnas student, the teacher, any BERT directory)
on a task in GLUE's TSV layout and report the official dev metric (`mosnas glue MODEL_DIR --task T`).

Python API: `finetune(model_dir, task, data_dir, out_dir, settings)` -> the result dict, written to
`out_dir/glue/<task>/result.json` (+ `result.md`, its summary line). A result records the model (weights'
SHA-256 and its export.json / arch.json), the task's files, the settings, seeds, precision and versions. The
same call again returns the stored result; other settings or another model in that folder are refused
(another `out_dir`, or `force=True` to replace it), so one setting's result never overwrites another's.
Several learning rates: each is fine-tuned (with every seed) and the best mean dev score is reported, all
of them recorded; as in GLUE papers, the lr is chosen on the dev set that is reported. Tasks, columns and
metrics: mosnas.bert.glue.data and mosnas.bert.glue.metrics; the recipe and KD: mosnas.bert.glue.train."""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosnas.bert.distiller.pipeline import check_pipeline, shapes
from mosnas.bert.glue.data import Task, load_task
from mosnas.bert.glue.metrics import METRICS, mean_std, score, summary_line
from mosnas.bert.glue.recipe import recipe
from mosnas.config import GlueConfig
from mosnas.config.settings import check_declared
from mosnas.errors import CheckpointError, ConfigError
from mosnas.workspace.model_dir import RECORD_FILES as MODEL_RECORDS
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.paths import file_sha256
from mosnas.workspace.records import made_from, read_json, stale, write_json, write_text

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
RECORD_FILES = (*MODEL_RECORDS, "glue_model.json")  # a model's own records, kept with its results
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def model_record(model_dir: str | Path, what: str = "model folder") -> dict[str, Any]:
    """What a Hugging Face model folder is: its weights' SHA-256, model type, label count and own records.
    Raises ConfigError when it is missing or lacks config.json, weights or tokenizer files."""
    from transformers import AutoConfig

    from mosnas.bert.nasbert.hf_modeling import register

    register()  # NAS-BERT students (model_type mosnas-nasbert) load through the Auto classes too
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ConfigError(f"{what} not found: {folder}")
    weights = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    missing = [n for n, ok in [("config.json", (folder / "config.json").is_file()), ("weights", weights)] if not ok]
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        missing.append("tokenizer files")
    if missing:
        raise ConfigError(f"{folder} is not a Hugging Face model folder (no {', '.join(missing)})")
    try:
        cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}/config.json: {e}") from None
    from transformers import AutoTokenizer

    from mosnas.bert.glue.train import quiet_transformers

    try:
        with quiet_transformers():
            tokens = len(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}: its tokenizer files are not readable ({str(e).splitlines()[0][:100]})") from None
    try:  # not another model's tokenizer files (the record's hash; ids beyond the embedding table)
        ModelDir(folder).check_tokenizer(getattr(cfg, "vocab_size", tokens) or tokens, tokens)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    rec = {"weights": weights.name, "sha256": file_sha256(weights), "model_type": cfg.model_type}
    rec["num_labels"], rec["architectures"] = cfg.num_labels, list(cfg.architectures or [])
    rec["max_positions"] = getattr(cfg, "max_position_embeddings", None)
    return rec | {n.removesuffix(".json"): read_json(folder / n) for n in RECORD_FILES if (folder / n).is_file()}


def teacher_folder(kd_teacher: str, task: str) -> Path:
    """The KD teacher of `task`: the folder given, or its `glue/<task>/model` (the OUT of a `--save` run)."""
    saved = Path(kd_teacher) / "glue" / task / "model"
    return saved if saved.is_dir() else Path(kd_teacher)


def _check_teacher(folder: Path, task: Task) -> dict[str, Any]:
    rec = model_record(folder, "--kd-teacher folder")
    glue = rec.get("glue_model")
    if not any(a.endswith("ForSequenceClassification") for a in rec["architectures"]):
        raise ConfigError(
            f"--kd-teacher {folder} is not a fine-tuned classifier; make one with "
            f"`mosnas glue TEACHER --task {task.name} --save`"
        )
    if rec["num_labels"] != task.num_labels or (glue and (glue["task"], glue["labels"]) != (task.name, [*task.labels])):
        was = f"{glue['task']} ({glue['labels']})" if glue else f"{rec['num_labels']} outputs"
        raise ConfigError(f"--kd-teacher {folder} was fine-tuned for {was}, not {task.name} ({list(task.labels)})")
    return rec


@dataclass
class Plan:
    """One task's fine-tuning, checked before any work: inputs, output folder, and the record of its result."""

    model_dir: Path
    task: Task
    gc: GlueConfig
    out: Path  # out_dir/glue/<task>
    record: dict[str, Any]  # the result's made_from
    teacher: Path | None
    save: bool
    force: bool

    @property
    def result_path(self) -> Path:
        return self.out / "result.json"

    @property
    def done(self) -> bool:
        """Whether the stored result was made from this plan's record (and its model was saved if asked)."""
        return stale(self.result_path, self.record) is None and (not self.save or (self.out / "model").is_dir())


def plan(
    model_dir: str | Path,
    task: str,
    data_dir: str | Path | None,
    out_dir: str | Path,
    settings: GlueConfig | None = None,
    force: bool = False,
    save: bool = False,
) -> Plan:
    """Check everything a fine-tuning needs (model, task files, labels, KD teacher, output folder) and
    write nothing. Raises ConfigError (DataError for a bad data file) with one line naming the problem."""
    gc = settings or GlueConfig()
    check_declared(gc, "glue.")
    for option, path in [
        ("--data (glue.data)", data_dir or gc.data),
        ("--kd-teacher (glue.kd_teacher)", gc.kd_teacher),
    ]:
        if path and not Path(path).is_dir():  # the options first: a wrong path is named as the option given
            raise ConfigError(f"{option}: folder not found: {Path(path).resolve()}")
    model = model_record(model_dir)
    loaded = load_task(data_dir or gc.data, task)
    epochs, lr = recipe(loaded.name, gc.epochs, gc.lr)  # 0: the task's standard recipe
    gc = dataclasses.replace(gc, epochs=epochs, lr=lr)
    unknown = [m for m in loaded.spec.metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"{loaded.name}: unknown metric {unknown[0]!r}; expected one of {', '.join(METRICS)}")
    teacher = teacher_folder(gc.kd_teacher, loaded.name) if gc.kd_teacher else None
    kd = _check_teacher(teacher, loaded) if teacher else None
    gc.check_kd()
    if gc.kd_intermediate:  # the layer map, and attention in every layer where it is asked for
        check_pipeline(gc, *shapes(Path(model_dir), teacher), where=str(model_dir))
    for name, rec in [(model_dir, model), (teacher, kd or {})]:
        if (rec.get("max_positions") or gc.max_seq_len) < gc.max_seq_len:
            raise ConfigError(f"max_seq_len {gc.max_seq_len} exceeds the {rec['max_positions']} positions of {name}")
    kd_keys = {f.name for f in dataclasses.fields(gc) if f.name.startswith("kd_")}
    inter = kd_keys - {"kd_teacher", "kd_alpha", "kd_temperature", "kd_loss"}  # recorded only when in use
    skip = {"tasks", "threads", "data"} | (
        kd_keys if not kd else {"kd_teacher"} | (set() if gc.kd_intermediate else inter)
    )
    record = made_from(
        model=model,
        task={"name": loaded.name, "spec": dataclasses.asdict(loaded.spec), "labels": list(loaded.labels)},
        files={split: file_sha256(Path(f)) for split, f in loaded.files.items()},
        settings={k: v for k, v in dataclasses.asdict(gc).items() if k not in skip},
        kd_teacher=kd,
    )
    p = Plan(Path(model_dir), loaded, gc, Path(out_dir) / "glue" / loaded.name, record, teacher, save, force)
    why = stale(p.result_path, record)
    if why not in (None, "missing") and not force:
        raise ConfigError(
            f"{p.out} holds a result of another model or settings ({why}); "
            "choose another output folder (--out) or pass --force to replace it"
        )
    return p


def versions() -> dict[str, Any]:
    """What a result was made with: mosnas.environment's record (machine, git commit, command, date) and the
    versions of the libraries that fine-tune and score."""
    import scipy
    import sklearn
    import transformers

    from mosnas.environment import environment

    return environment() | {
        "transformers": transformers.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
    }


def execute(p: Plan, progress: bool = True) -> dict[str, Any]:
    """Fine-tune as planned (every lr x seed), write result.json and result.md, return the result; a result
    already made from the same record is returned as stored."""
    import torch

    from mosnas.bert.glue.train import prepare, train_run
    from mosnas.hardware import resolve_precision

    if p.done:
        return read_json(p.result_path)
    for old in ("result.json", "result.md", "model", "runs"):
        path = p.out / old
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    gc, start = p.gc, time.perf_counter()
    if gc.threads:
        torch.set_num_threads(gc.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision(gc.precision, device, "glue.precision")
    data = prepare(p.model_dir, p.task, gc, p.teacher, device, precision)
    lrs, seeds = gc.lr_sweep or (gc.lr,), gc.seeds or (gc.seed,)
    runs = []
    for lr in lrs:
        for seed in seeds:
            save_dir = p.out / "runs" / f"lr{lr:g}-seed{seed}" if p.save else None
            runs.append(train_run(p.model_dir, p.task, data, gc, lr, seed, precision, progress, save_dir))
    result = _result(p, runs, lrs, seeds, data, precision, device, time.perf_counter() - start)
    if p.save:  # keep the best run's classifier (a KD teacher for `--kd-teacher OUT`)
        best = max(runs, key=lambda r: r["score"])
        (p.out / "runs" / f"lr{best['lr']:g}-seed{best['seed']}").rename(p.out / "model")
        shutil.rmtree(p.out / "runs")
    write_text(p.out / "result.md", result["summary"] + "\n")
    write_json(p.result_path, result)  # last: its made_from says the result is complete
    return result


def _result(p: Plan, runs: list[dict], lrs: tuple, seeds: tuple, data: Any, precision: Any, device: Any, wall: float):
    import torch

    by_lr = {lr: [r for r in runs if r["lr"] == lr] for lr in lrs}
    lr_scores = {lr: score({str(r["seed"]): r["score"] for r in rs}) for lr, rs in by_lr.items()}
    best = max(lrs, key=lambda lr: lr_scores[lr])  # ties: the first given
    metrics, std = mean_std([r["metrics"] for r in by_lr[best]])
    result = {
        "task": p.task.name,
        "metrics": metrics,
        "std": std,
        "score": score(metrics),
        "official_metrics": list(p.task.spec.metrics),
        "dev_examples": sum(len(g) for g in data.gold.values()),
        "dev_splits": {split: len(g) for split, g in data.gold.items()},
        "dev_examples_available": sum(len(examples) for examples in p.task.dev.values()),
        "train_examples": len(data.targets),
        "train_examples_available": len(p.task.train),
        "epochs": p.gc.epochs,
        "steps": runs[0]["steps"],
        "lr": best,
        "lrs": list(lrs),
        "lr_scores": {f"{lr:g}": s for lr, s in lr_scores.items()},
        "seeds": list(seeds),
        "kd": {"teacher": str(p.teacher), "alpha": p.gc.kd_alpha, "temperature": p.gc.kd_temperature}
        if p.teacher
        else None,
        "runs": runs,
        "wall_s": round(wall, 1),
        "precision": precision.to_dict(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "model": {"path": str(p.model_dir.resolve()), **p.record["model"]},
        "data": {"folder": str(p.task.folder), "files": p.task.files, "skipped_rows": p.task.skipped_rows},
        "settings": dataclasses.asdict(p.gc),
        "saved_model": str(p.out / "model") if p.save else None,
        "environment": versions(),
        "made_from": p.record,
    }
    return {"summary": summary_line(p.task.name, result), **result}


def finetune(
    model_dir: str | Path,
    task: str,
    data_dir: str | Path | None,
    out_dir: str | Path,
    settings: GlueConfig | None = None,
    progress: bool = True,
    force: bool = False,
    save: bool = False,
) -> dict[str, Any]:
    """Fine-tune `model_dir` on `task` (a folder of `data_dir`, default settings.data) and return the result
    (also in `out_dir/glue/<task>/result.json`): official dev metrics in percent ("metrics", mean over seeds at
    the best lr; "std"), "summary" (one line), sizes, steps, lrs, seeds, runs, precision and provenance.
    `save`: keep the best run's classifier in `out_dir/glue/<task>/model`. Raises ConfigError / DataError."""
    return execute(plan(model_dir, task, data_dir, out_dir, settings, force, save), progress)
