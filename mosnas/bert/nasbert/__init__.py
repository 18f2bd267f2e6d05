"""NAS-BERT (Xu, Tan, Luo, Song, Li, Qin, Liu; KDD 2021; arXiv 2105.14444), the third BERT search method beside
MoS and AutoDistil, at the all-MiniLM-L6-v2 scale, as the model family `nasbert` of the engine: its op set and
space (ops, space), the block-wise supernet and the standalone encoder a picked arch exports to (model), the
per-op latency table (latency), block-wise distillation with progressive shrinking (task, shrink) and
lookup-table model selection (table). See the README's "NAS-BERT" section for what is scaled down or our choice.

This package's module-level names are what the engine asks of a family for training (mosnas.family)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosnas.bert.nasbert.latency import op_table
from mosnas.bert.nasbert.model import NasBertSupernet
from mosnas.bert.nasbert.space import NasBertSpace, load_space
from mosnas.bert.nasbert.task import LATENCY_TABLE, task
from mosnas.config import Config, SupernetConfig
from mosnas.errors import ConfigError
from mosnas.workspace.records import write_json

__all__ = [
    "COSTS",
    "METRICS",
    "RUN_FILES",
    "SCHEMA",
    "build_supernet",
    "check_inputs",
    "load_space",
    "prepare",
    "supernet_config",
    "task",
    "vocab",
]

SCHEMA = None  # a NasBertSpace is no core Space (its archs are op names): load_space reads it
RUN_FILES = (LATENCY_TABLE,)  # the per-op latency table (`prepare`)
METRICS = (("block_loss", "block loss"),)  # summed held-out block-wise loss (lower is better)
LOWER_IS_BETTER = True
LOSS_UNIT = "block-wise hidden-state MSE per token and channel"
COSTS = (("parameters_nonembedding", "params (non-emb.)"), ("table_latency_ms", "latency (table)"))


def supernet_config(cfg: Config) -> SupernetConfig:
    """The supernet settings (NAS-BERT's supernet takes none of MoS's; its start is `nasbert.init`)."""
    return cfg.supernet


def _teacher_config(cfg: Config) -> Any:
    import transformers

    from mosnas.bert.teacher import teacher_path

    folder = teacher_path(cfg.bert.teacher)
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ConfigError(f"bert.teacher: cannot read {folder}/config.json: {str(e).splitlines()[0]}") from None


def check_inputs(cfg: Config) -> None:
    """Text splits, the teacher and the GLUE tasks, checked before a run folder is made: the residual stream is the
    teacher's hidden size, every block ends on a whole teacher layer, every `glue.tasks` has train and dev splits."""
    from mosnas.bert.data import text_files

    for split in (cfg.data.train, cfg.data.valid):
        text_files(cfg.data.dir, split)
    space, teacher = load_space(cfg.supernet.space), _teacher_config(cfg)
    if space.width != teacher.hidden_size:
        raise ConfigError(
            f"{cfg.supernet.space}: width {space.width} must be the teacher's hidden size {teacher.hidden_size} "
            "(block inputs and targets are its hidden states)"
        )
    space.teacher_layers(teacher.num_hidden_layers)
    if not (cfg.search.params_budgets or cfg.search.latency_ms):
        raise ConfigError("nasbert: give search.params_budgets (non-embedding parameters) and/or search.latency_ms")
    if cfg.train.sampling not in ("uniform", "fixed"):
        raise ConfigError(
            f"train.sampling={cfg.train.sampling}: NAS-BERT trains one sampled path per block and step "
            "(train.sampling=uniform), or one fixed arch"
        )
    from mosnas.bert.glue.stage import check_glue

    check_glue(cfg)  # every GLUE task of the run's final stage, before hours of training


def prepare(cfg: Config, run_dir: Path) -> None:
    """The run's per-op latency table (LT_lat, mosnas.bert.nasbert.latency.op_table) on this machine, by the
    `latency` settings (src_len tokens, threads, warmup, repeats), unless the run has it: the buckets and the
    model selection read it, so a resumed run reuses the same one."""
    out = Path(run_dir) / LATENCY_TABLE
    if out.is_file():
        return
    lc, space = cfg.latency, load_space(cfg.supernet.space)
    teacher = _teacher_config(cfg)
    table = op_table(space, teacher.vocab_size, lc.src_len, max(lc.threads, 1), lc.warmup, lc.repeats, cfg.train.seed)
    write_json(out, table)


def vocab(run_dir: Path) -> tuple[Any, int]:
    """The teacher's WordPiece tokenizer and vocabulary size (the run's config names the teacher)."""
    import yaml

    from mosnas.bert.teacher import load_tokenizer
    from mosnas.config import config_from_dict

    cfg = config_from_dict(yaml.safe_load((Path(run_dir) / "config.yaml").read_text(encoding="utf-8")))
    tokenizer = load_tokenizer(cfg.bert.teacher)
    return tokenizer, _teacher_config(cfg).vocab_size


def build_supernet(space: NasBertSpace, vocab_size: int, cfg: Config) -> NasBertSupernet:
    """The chain of elastic sublayers (seeded by the caller); with `nasbert.init=teacher` its widest MHA and FFN
    ops start as the teacher's layers (NasBertSupernet.init_from_teacher)."""
    net = NasBertSupernet(space)
    if cfg.nasbert.init == "teacher":
        from mosnas.bert.teacher import load_teacher

        teacher = load_teacher(cfg.bert.teacher)
        head_dim = teacher.config.hidden_size // teacher.config.num_attention_heads
        net.init_from_teacher(teacher.model, head_dim)
    return net
