"""The translation family: encoder-decoder Transformers on parallel corpora (HAT's space, BLEU).

This package is what the engine (run folder, training loop, search, latency, supernet, space, pipeline,
report) asks a model family for; a second family is a sibling package of the same shape."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from mosnas.config import Config, LatencyConfig, SearchConfig, SupernetConfig
from mosnas.core.space import Space
from mosnas.errors import CheckpointError, ConfigError, DataError
from mosnas.latency.memory import peak_memory
from mosnas.mt.costs import costs
from mosnas.mt.data import count_lines, find_split, load_parallel, load_tokenizer
from mosnas.mt.decode import latency_workload, measure_latency
from mosnas.mt.evaluate import evaluate_model, model_about
from mosnas.mt.export import load_model
from mosnas.mt.export import save_model as _save_model
from mosnas.mt.latency_parts import latency_parts, part_workload, space_parts
from mosnas.mt.space import SCHEMA, Arch, load_space
from mosnas.mt.task import prepare, supernet_fitness, task
from mosnas.mt.transformer import Transformer, TransformerConfig
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.paths import require_dir
from mosnas.workspace.records import fresh, made_from, read_json, write_json

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
    "space_parts",
    "supernet_config",
    "task",
    "time_model",
    "vocab",
    "workload",
]

RUN_FILES = ("spm.model",)  # the run's subword model, trained by `prepare`
METRICS = (("bleu", "BLEU"), ("chrf", "chrF"))  # sacreBLEU, detokenized; the first is plotted
LOSS_UNIT = "nats per target token"  # training loss (label-smoothed) and validation NLL
COSTS = (("parameters", "params"), ("parameters_hat", "params (HAT)"), ("flops", "FLOPs"))  # report columns

# -- the model -------------------------------------------------------------------------------------
dense_model = Transformer  # config -> the dense encoder-decoder (what export returns)

_FFN = re.compile(r"^((?:encoder|decoder)_layers\.\d+)\.(fc1|fc2)\.(weight|bias)$")
_ATTN = re.compile(r"^((?:encoder|decoder)_layers\.\d+)\.((?:self|cross)_attn\.(?:q|k|v|out)_proj)\.(weight|bias)$")


def mixed_group(name: str, mos_attention: bool) -> tuple[str, str] | None:
    """(layer, linear) that owns tensor `name` if MoS mixes it (the FFNs; with `mos_attention` the attention
    projections too), else None: embeddings and LayerNorms are always sliced."""
    m = _FFN.match(name) or (_ATTN.match(name) if mos_attention else None)
    if m is None:
        return None
    return m.group(1), f"{m.group(1)}.{m.group(2)}"


def supernet_config(cfg: Config) -> SupernetConfig:
    """The run's supernet settings as written (translation fills in nothing)."""
    return cfg.supernet


def dense_config(arch: Arch, space: Space, vocab_size: int, cfg: SupernetConfig) -> TransformerConfig:
    """The dense Transformer config of one arch of the supernet.

    With shared embeddings the dense model holds one table, max(e, d) wide (each side uses its first
    columns): what the supernet holds too, so parameter counts grow with every width. Position codes
    are computed at the space's widest embedding and sliced (HAT), so they nest across archs."""
    return TransformerConfig(
        vocab_size=vocab_size,
        encoder_embed_dim=arch.encoder_embed_dim,
        decoder_embed_dim=arch.decoder_embed_dim,
        qkv_dim=space.qkv_dim,
        encoder_ffn_dims=arch.encoder_ffn_dims,
        encoder_heads=arch.encoder_heads,
        decoder_ffn_dims=arch.decoder_ffn_dims,
        decoder_self_heads=arch.decoder_self_heads,
        decoder_cross_heads=arch.decoder_cross_heads,
        decoder_spans=arch.decoder_spans,
        share_all_embeddings=cfg.share_embeddings,
        prenorm=cfg.prenorm,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        activation_dropout=cfg.activation_dropout,
        position_dim=max(*space.encoder_embed_dim, *space.decoder_embed_dim),
    )


# -- data and training -----------------------------------------------------------------------------
def check_inputs(cfg: Config) -> None:
    """Every split a run reads (train, valid and the one it scores) exists on both sides with as many lines, and
    a given subword model exists: checked before a run folder is made, so nothing is trained for nothing."""
    require_dir(cfg.data.dir, "data directory", "data.dir")  # one line: where mosnas looked, how to point elsewhere
    for split in dict.fromkeys((cfg.data.train, cfg.data.valid, cfg.eval.split or cfg.data.test)):
        src, tgt = (find_split(cfg.data.dir, split, lang) for lang in (cfg.data.src_lang, cfg.data.tgt_lang))
        if count_lines(src) != count_lines(tgt):
            raise DataError(
                f"parallel files differ in length: {src} has {count_lines(src)} lines, {tgt} has {count_lines(tgt)}"
            )
    if cfg.data.tokenizer and not Path(cfg.data.tokenizer).is_file():
        raise ConfigError(f"data.tokenizer: file not found: {cfg.data.tokenizer}")


def vocab(run_dir: Path) -> tuple[Any, int]:
    """The run's subword model and its vocabulary size."""
    tokenizer = load_tokenizer(Path(run_dir) / "spm.model")
    return tokenizer, tokenizer.get_piece_size()


def fitness(run: Any, sc: SearchConfig, device: torch.device, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """The search's fitness (supernet validation NLL on a seeded sample of `search.valid_sentences`
    validation pairs) and what the search records about it."""
    valid, _ = load_parallel(run.cfg.data, run.cfg.data.valid, run.tokenizer, sc.valid_sentences, seed=sc.seed)
    return supernet_fitness(run.net, valid, device, bf16), {"valid_sentences": len(valid)}


def selection_score(run: Any, sc: SearchConfig, device: torch.device, bf16: bool) -> tuple[Any, dict[str, Any]]:
    """The search's final pick (`search.rerank`): sacreBLEU of an arch's exported subnet on a seeded sample of
    `search.rerank_sentences` validation pairs, beam search with the run's `decode` settings (higher is better;
    the fitness is a loss, the user reports BLEU), decoded as `mosnas evaluate` decodes the exported model."""

    def bleu(arch: Arch) -> float:
        model = run.net.export(arch)
        r = evaluate_model(model, run.tokenizer, run.cfg.data, run.cfg.data.valid, run.cfg.decode, sc.rerank_sentences,
                           progress=False)  # fmt: skip
        return r["bleu"]

    return bleu, {"rerank_metric": f"{run.cfg.data.valid} BLEU", "rerank_sentences": sc.rerank_sentences}


# -- exported models -------------------------------------------------------------------------------
def time_model(
    model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype, repeats: int | None = None
) -> dict[str, Any]:
    """A latency sample of an exported model: HAT's protocol (one sentence, beam search) with `latency` settings."""
    repeats = lc.repeats if repeats is None else repeats
    threads = max(lc.threads, 1)  # latency.threads=0 means 1
    return measure_latency(model, lc.src_len, lc.tgt_len, lc.beam, lc.warmup, repeats, device, threads, dtype)


def workload(model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype):
    """The work of one latency sample of an exported model (HAT's protocol with `latency` settings): a
    callable the engine times, interleaved with other models' (mosnas.latency.measure.measure_interleaved)."""
    return latency_workload(model, lc.src_len, lc.tgt_len, lc.beam, device, dtype)


def memory(model: torch.nn.Module, lc: LatencyConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Peak memory (MiB) of one latency-protocol translation by an exported model
    (mosnas.latency.memory.peak_memory)."""
    return peak_memory(model, workload(model, lc, device, dtype), device)


def save_model(model: Transformer, out: str | Path, run_dir: Path, arch: Arch, info: dict[str, Any]) -> Path:
    """The model folder of an export (with the run's subword model)."""
    return _save_model(model, out, Path(run_dir) / "spm.model", arch, info)


def init_model(model_dir: Path) -> Transformer:
    """A fresh standard init of the arch of an exported model folder (its config.json)."""
    try:
        config = TransformerConfig.from_dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{model_dir}/config.json is not a readable model config: {e}") from None
    return Transformer(config)  # its constructor draws the standard init


def from_model(cfg: Config, model_dir: Path) -> Config:
    """`cfg` with the vocabulary of an exported model (training on from it: fine-tuning)."""
    if not (model_dir / "spm.model").is_file():
        raise CheckpointError(f"{model_dir} is not an exported model folder (missing spm.model)")
    load_tokenizer(model_dir / "spm.model")  # a damaged or foreign one: one line now, not after a run folder exists
    return replace(cfg, data=replace(cfg.data, tokenizer=str(model_dir / "spm.model")))


def evaluate(model_dir: Path, cfg: Config, progress: bool, upstream: dict[str, Any] | None) -> dict[str, Any]:
    """BLEU and chrF of an exported model on `eval.split` (default `data.test`), saved in the model folder as
    eval.<split>.json (with its hypotheses). The result records what it was made from (`upstream`: the
    model's record, and the data, decode and eval settings) and is reused only while they hold."""
    split, ec, data = cfg.eval.split or cfg.data.test, cfg.eval, cfg.data
    result_file = ModelDir(Path(model_dir)).eval(split)
    record = made_from(
        model=upstream,
        data={"dir": str(data.dir), "src_lang": data.src_lang, "tgt_lang": data.tgt_lang, "split": split},
        decode=asdict(cfg.decode),
        eval={"limit": ec.limit, "bleu_tokenize": ec.bleu_tokenize},
    )
    if not fresh(result_file, record, f"evaluation of {Path(model_dir).name} on {split}"):
        for old in (
            result_file,
            ModelDir(Path(model_dir)).hypotheses(split, data.tgt_lang),
        ):  # a failure leaves no result
            old.unlink(missing_ok=True)
        model, tokenizer = load_model(model_dir)
        result = evaluate_model(
            model,
            tokenizer,
            data,
            split,
            cfg.decode,
            ec.limit,
            model_dir,
            progress,
            ec.bleu_tokenize,
            about=model_about(model_dir),  # the model's folder and provenance
        )
        write_json(result_file, {**result, "made_from": record})  # the record last: a result is whole or absent
    return read_json(result_file)


# -- reports ---------------------------------------------------------------------------------------
def describe(arch: dict[str, Any]) -> str:
    """E.g. 'e256/d192 dec2 ffn 768,512,1024 ; 512,256' - enough to tell archs apart in a table."""
    return (
        f"e{arch['encoder_embed_dim']}/d{arch['decoder_embed_dim']} dec{len(arch['decoder_ffn_dims'])} "
        f"ffn {','.join(map(str, arch['encoder_ffn_dims']))} ; {','.join(map(str, arch['decoder_ffn_dims']))}"
    )


def report_notes(rows: list[dict[str, Any]]) -> list[str]:
    """The lines under the results table: metric signatures, test split and the latency protocol."""
    scored = [r for r in rows if "bleu_signature" in r]
    signatures = [f"BLEU signature: `{r['bleu_signature']}`\n\nchrF signature: `{r['chrf_signature']}`" for r in scored]
    notes = signatures[:1]
    return [
        *notes,
        "",
        'BLEU and chrF: sacreBLEU on detokenized output against the raw references (the "scored on" column: split, '
        "sentences, beam, length penalty). Latency: HAT's protocol (one sentence, beam search), median of repeats, "
        "see latency/report.json for the device. Params count the exported model (one embedding table when shared); "
        "params (HAT) leave out embeddings and the output layer, as HAT's tables do. "
        "FLOPs: forward FLOPs (multiply-add = 2) of one teacher-forced sentence pair at the latency protocol's "
        "source and target lengths.",
    ]
