"""Unlabeled text for task-agnostic distillation, as fixed-length WordPiece sequences.

Input: plain-text files (`.txt` or `.txt.gz`), one paragraph a line, a blank line between documents (the
BERT `create_pretraining_data` layout of ../shared/data/wikipedia-en-20190720-plain). WikiText files have no
blank lines; there a top-level heading line (` = Title = `) starts a new document.

Packing: the paragraphs of a document are tokenized with the teacher's WordPiece tokenizer (no special tokens)
and concatenated; the stream is cut into pieces of `max_len - 2` tokens and each piece becomes
`[CLS] piece [SEP]`, padded with [PAD] to `max_len`. A document's last, shorter piece is kept when it holds at
least `MIN_TOKENS` tokens. Sequences never cross documents, and a document never crosses a file (shard) boundary.

Held-out samples (validation, the search's fitness and rerank, the final evaluation) are `sample_sequences`: a
seeded random choice among the packed sequences of every document of the split, in corpus order, drawn with
one fixed seed (HELDOUT_SEED) whatever the run's seed, so supernets of different seeds are scored on the same
text, and nested (the first N of one seeded order: a larger sample holds every smaller one)."""

from __future__ import annotations

import gzip
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from mosnas.errors import ConfigError

MIN_TOKENS = 8  # a document's last piece shorter than this is dropped
HELDOUT_SEED = 1  # every held-out sample of a split is drawn with this seed (the same text for every run)
_HEADING = re.compile(r"^\s*= [^=].* =\s*$")  # a WikiText article title: ` = Robert Boulter = `


def text_files(folder: str | Path, split: str) -> list[Path]:
    """The files of `split` in `folder`: `split.txt[.gz]` or its shards `split-*.txt[.gz]`, sorted.

    Raises ConfigError when there are none."""
    root = Path(folder)
    found = sorted(
        p for pat in (f"{split}.txt", f"{split}.txt.gz", f"{split}-*.txt", f"{split}-*.txt.gz") for p in root.glob(pat)
    )
    if not found:
        raise ConfigError(f"no text files for split {split!r} in {root} (expected {split}.txt[.gz] or shards)")
    return found


def read_documents(paths: list[Path]) -> list[list[str]]:
    """Documents (lists of non-blank lines) of text files, in file order; a file's end ends its last document."""
    docs: list[list[str]] = [[]]
    for path in paths:
        if docs[-1]:
            docs.append([])  # shards: a document never continues into the next file
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8-sig") as f:
            for line in f.read().split("\n"):
                line = line.strip()
                if not line or _HEADING.match(line):
                    if docs[-1]:
                        docs.append([])
                    if not line:
                        continue
                docs[-1].append(line)
    return [d for d in docs if d]


def sample_documents(docs: list[list[str]], limit: int, seed: int) -> list[list[str]]:
    """Documents drawn at random (seeded) until they hold `limit` lines (0: all documents, in order)."""
    if not limit:
        return docs
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    chosen, lines = [], 0
    for i in order:
        if lines >= limit:
            break
        chosen.append(docs[i])
        lines += len(docs[i])
    return chosen


def sample_sequences(total: int, limit: int, seed: int = HELDOUT_SEED) -> list[int]:
    """Indices of `limit` of `total` packed sequences, a seeded random choice in corpus order (0 or more than
    `total`: all of them); the first `limit` of one seeded order, so a larger sample holds every smaller one."""
    if not limit or limit >= total:
        return list(range(total))
    order = list(range(total))
    random.Random(seed).shuffle(order)
    return sorted(order[:limit])


def pack(docs: list[list[str]], tokenizer, max_len: int) -> Tensor:
    """Token ids (N, max_len), int64, of the documents packed as the module docstring says."""
    if max_len < MIN_TOKENS + 2:
        raise ConfigError(f"bert.max_seq_len must be at least {MIN_TOKENS + 2}, got {max_len}")
    lines = [line for doc in docs for line in doc]
    ids = tokenizer(lines, add_special_tokens=False, verbose=False)["input_ids"] if lines else []
    cls, sep, pad, size = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id, max_len - 2
    rows, at = [], 0
    for doc in docs:
        stream = [t for piece in ids[at : at + len(doc)] for t in piece]
        at += len(doc)
        for start in range(0, len(stream), size):
            piece = stream[start : start + size]
            if len(piece) >= MIN_TOKENS:
                rows.append([cls, *piece, sep] + [pad] * (size - len(piece)))
    return torch.tensor(rows, dtype=torch.long).reshape(-1, max_len)


@dataclass
class Batch:
    input_ids: Tensor  # (B, T) int64
    attention_mask: Tensor  # (B, T) int64, 1 for real tokens

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


class TextData:
    """Packed sequences and their batches: `batch_size` sequences each, shuffled per (seed, epoch)."""

    def __init__(self, ids: Tensor, pad_id: int, batch_size: int, seed: int = 1):
        if len(ids) == 0:
            raise ConfigError("no text: every document packed to nothing (too few lines? see data.train_limit)")
        self.ids, self.pad_id, self.batch_size, self.seed = ids, pad_id, batch_size, seed

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, epoch: int, shuffle: bool = True) -> list[list[int]]:
        """Lists of sequence indices; the order depends only on (seed, epoch): exact resume."""
        order = list(range(len(self.ids)))
        if shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def collate(self, indices: list[int]) -> Batch:
        """The sequences `indices`, trimmed to the longest one (padding columns are dropped)."""
        ids = self.ids[indices]
        mask = ids.ne(self.pad_id).long()
        width = int(mask.sum(1).max())
        return Batch(ids[:, :width].contiguous(), mask[:, :width].contiguous())


def load_text(
    files: list[Path],
    tokenizer,
    max_len: int,
    batch_size: int,
    limit_lines: int = 0,
    limit_seqs: int = 0,
    seed: int = 1,
) -> TextData:
    """Text of `files`: a seeded sample of documents holding `limit_lines` lines (0: all), packed; then a held-out
    sample of `limit_seqs` sequences across all of them (0: all; `sample_sequences`, seeded by HELDOUT_SEED).
    `seed` seeds the document sample and the batches' order."""
    docs = sample_documents(read_documents(files), limit_lines, seed)
    ids = pack(docs, tokenizer, max_len)
    if limit_seqs:
        ids = ids[sample_sequences(len(ids), limit_seqs)]
    return TextData(ids, tokenizer.pad_token_id, batch_size, seed)
