"""The BERT family: encoders elastic in depth, width, heads and FFN, distilled task-agnostically from a pretrained
teacher (all-MiniLM-L6-v2 by default), exported as Hugging Face `BertModel` folders.

This package is what the engine asks a model family for (see mosnas.family); mosnas.mt is its sibling."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from mosnas.bert.costs import costs, latency_workload, measure_latency
from mosnas.bert.export import init_model as init_model
from mosnas.bert.export import load_model, read_config
from mosnas.bert.export import save_model as _save_model
from mosnas.bert.importance import ORDERED, depth_layers, layer_order
from mosnas.bert.latency_parts import latency_parts, part_workload, space_parts
from mosnas.bert.model import BertDenseConfig, BertEncoder
from mosnas.bert.space import SCHEMA, Arch, load_space
from mosnas.bert.subspace import CROPPED
from mosnas.bert.teacher import teacher_path, teacher_weights
from mosnas.config import Config, LatencyConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.errors import CheckpointError, ConfigError
from mosnas.workspace.model_dir import ModelDir

__all__ = [
    "COSTS",
    "METRICS",
    "RUN_FILES",
    "SCHEMA",
    "Arch",
    "check_inputs",
    "costs",
    "dense_config",
    "dense_model",
    "describe",
    "evaluate",
    "fitness",
    "from_model",
    "init_info",
    "init_model",
    "latency_parts",
    "load_model",
    "load_space",
    "memory",
    "mixed_group",
    "part_workload",
    "prepare",
    "report_notes",
    "save_model",
    "selection_score",
    "source_names",
    "space_parts",
    "supernet_config",
    "task",
    "time_model",
    "vocab",
    "workload",
]

# The held-out distillation loss of the exported student against the teacher (lower is better, as the search's
# fitness); GLUE scores are the glue stage's own results.
METRICS = (("distill_loss", "distill loss"),)
LOWER_IS_BETTER = True  # the metric is a loss (plots and reports say so)
LOSS_UNIT = "distillation loss (relation KL per token, nats)"  # of the training curve
COSTS = (("parameters", "params"), ("parameters_nonembedding", "params (non-emb.)"), ("flops", "FLOPs"))

# -- the model -------------------------------------------------------------------------------------
dense_model = BertEncoder  # config -> the dense encoder (what export returns)

_FFN = re.compile(r"^(encoder\.layer\.\d+)\.(intermediate\.dense|output\.dense)\.(weight|bias)$")
_ATTN = re.compile(r"^(encoder\.layer\.\d+)\.(attention\.self\.(?:query|key|value)|attention\.output\.dense)\.")


def mixed_group(name: str, mos_attention: bool) -> tuple[str, str] | None:
    """(layer, linear) that owns tensor `name` if MoS mixes it: the FFN's two linears (intermediate.dense,
    output.dense) of every layer, as the paper; with `mos_attention` also the query/key/value and attention output
    projections. Embeddings, LayerNorms and the pooler are always sliced."""
    m = _FFN.match(name) or (_ATTN.match(name) if mos_attention else None)
    if m is None:
        return None
    return m.group(1), f"{m.group(1)}.{m.group(2)}"


def dense_config(arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> BertDenseConfig:
    """The dense encoder config of one arch (BERT's 512 positions and 2 segments, the supernet's dropouts)."""
    return BertDenseConfig(
        vocab_size=vocab_size,
        hidden=arch.hidden,
        layers=arch.layers,
        heads=arch.heads,
        ffn=arch.ffn,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
    )


_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def source_names(arch: Arch, names: list[str], cfg: SupernetConfig) -> dict[str, str]:
    """Dense tensor name -> the supernet tensor it slices: a student of depth k takes the supernet's k most
    important layers in order (`supernet.layer_order`, from the importance order: mosnas.bert.importance), its
    layer j the j-th of them; without a layer order, layer j is layer j. ConfigError for an order that is not a
    permutation of the space's layers."""
    if not cfg.layer_order:
        return {n: n for n in names}
    keep = depth_layers(cfg.layer_order, arch.layers)
    if sorted(cfg.layer_order) != list(range(len(cfg.layer_order))) or arch.layers > len(cfg.layer_order):
        raise ConfigError(f"supernet.layer_order {list(cfg.layer_order)} is not an order of the space's layers")
    out = {}
    for n in names:
        m = _LAYER.match(n)
        out[n] = f"encoder.layer.{keep[int(m.group(1))]}.{n[m.end() :]}" if m else n
    return out


def supernet_config(cfg: Config) -> SupernetConfig:
    """The supernet settings of a run with its start from the teacher (`bert.init`): `teacher` loads the teacher's
    model.safetensors into every tensor and every MoS expert (expert_init=copy: MoS starts as the teacher and the
    routers' per-arch mixtures break the experts' symmetry under the sandwich rule), `teacher-first` into expert
    0 only (pretrained-first: the others are fresh BERT draws), `random` leaves `supernet` as it is. A teacher
    wider or deeper than the space's largest arch starts it cut to the space (the run's teacher_init.safetensors,
    written by `prepare`: mosnas.bert.subspace). With `bert.order=importance` the teacher is the run's
    importance-ordered one (`teacher/`, mosnas.bert.importance) and shallower archs drop its least important
    layers first (`supernet.layer_order`)."""
    if cfg.bert.init == "random":
        return cfg.supernet
    expert_init = "copy" if cfg.bert.init == "teacher" else "pretrained-first"
    cut = cfg.run_dir / CROPPED  # the teacher cut to a narrower or shallower space
    ordered = cfg.run_dir / ORDERED / "model.safetensors"
    weights = cut if cut.is_file() else ordered if ordered.is_file() else teacher_weights(cfg.bert.teacher)
    order = cfg.supernet.layer_order or layer_order(cfg.run_dir, max(load_space(cfg.supernet.space).layers))
    return replace(cfg.supernet, pretrained=str(weights), expert_init=expert_init, layer_order=order)


def init_info(cfg: Config) -> dict[str, Any]:
    """How the supernet starts, for the training log: {"init", "expert_init", "teacher"}."""
    sn = supernet_config(cfg)
    return {"init": cfg.bert.init, "expert_init": sn.expert_init, "teacher": str(teacher_path(cfg.bert.teacher))}


# -- data and training: mosnas.bert.task (distillation) ----------------------------------------------------
# >>> H1b: the distillation task, its fitness and the evaluation of an exported student (mosnas.bert.task)
from mosnas.bert.glue.stage import glue_table  # noqa: E402
from mosnas.bert.task import RUN_FILES, check_inputs, evaluate, fitness, prepare, selection_score, task  # noqa: E402


def vocab(run_dir: Path) -> tuple[Any, int]:
    """The run's tokenizer (its teacher's WordPiece) and vocabulary size."""
    from mosnas.bert.export import run_teacher
    from mosnas.bert.teacher import load_tokenizer

    teacher = run_teacher(run_dir)  # the teacher's embedding rows: its table fits the supernet's
    return load_tokenizer(teacher), read_config(teacher_path(teacher)).vocab_size


# <<< H1b


# -- exported models -------------------------------------------------------------------------------
def time_model(
    model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype, repeats: int | None = None
) -> dict[str, Any]:
    """A latency sample of an exported encoder: one sequence (batch 1) of `latency.src_len` tokens, a forward
    pass of encoder and pooler (see `costs.measure_latency`)."""
    repeats = lc.repeats if repeats is None else repeats
    threads = max(lc.threads, 1)  # latency.threads=0 means 1
    return measure_latency(model, lc.src_len, 1, lc.warmup, repeats, device, threads, dtype)


def workload(model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype) -> Any:
    """The work of one latency sample of an exported encoder (one sequence of `latency.src_len` tokens): a
    callable the engine times, interleaved with other models' (mosnas.latency.measure.measure_interleaved)."""
    return latency_workload(model, lc.src_len, 1, device, dtype)


def memory(model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Peak memory (MiB) of one latency-protocol forward pass of an exported encoder
    (mosnas.latency.memory.peak_memory)."""
    from mosnas.latency.memory import peak_memory

    return peak_memory(model, workload(model, lc, device, dtype), device)


def save_model(model: BertEncoder, out: str | Path, run_dir: Path, arch: Arch, info: dict[str, Any]) -> Path:
    """The Hugging Face folder of an export (with the run's teacher tokenizer)."""
    return _save_model(model, out, run_dir, arch, info)


def from_model(cfg: Config, model_dir: Path) -> Config:
    """`cfg` for training on from an exported model (fine-tuning): the weights come from the folder
    (`supernet.pretrained`), not the teacher, so `bert.init` becomes random; the teacher is the run's own
    (its importance-ordered teacher, whose units line up with the student's, when it has one)."""
    read_config(model_dir)  # a BERT folder, or CheckpointError
    if not ModelDir(Path(model_dir)).weights.is_file():
        raise CheckpointError(f"{model_dir} is not an exported model folder (missing model.safetensors)")
    ordered = cfg.run_dir / ORDERED
    teacher = str(ordered.resolve()) if (ordered / "config.json").is_file() else cfg.bert.teacher
    return replace(
        cfg, bert=replace(cfg.bert, init="random", teacher=teacher), supernet=replace(cfg.supernet, layer_order=())
    )


# -- reports ---------------------------------------------------------------------------------------
def describe(arch: dict[str, Any]) -> str:
    """E.g. 'L4 H256 A8 F1024' (layers, hidden, attention heads, FFN), as BERT sizes are written."""
    return f"L{arch['layers']} H{arch['hidden']} A{arch['heads']} F{arch['ffn']}"


def report_notes(rows: list[dict[str, Any]]) -> list[str]:
    """The lines under the results table: what the metric and the costs count."""
    return [
        "distill loss: the exported student's held-out relation loss against the teacher (MiniLMv2's Q-Q, K-K, V-V "
        "KL per token on bert.eval_text, whatever objective trained it; lower is better). "
        "Params count every parameter of the exported BertModel (embeddings and pooler included, as Hugging Face "
        "counts them); params (non-emb.) leave out the word, position and token-type tables and their LayerNorm. "
        "FLOPs and latency: one sequence of latency.src_len tokens, batch 1, timed on this machine "
        "(latency/timing.json names the device and precision). Memory: measured peak inference memory of the "
        "exported model, MiB.",
        *(["", *glue_table(rows)] if glue_table(rows) else []),  # H1b: GLUE dev scores of the students
    ]
