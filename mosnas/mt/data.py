"""Parallel corpora, the shared subword vocabulary and token-bucketed batches."""

from __future__ import annotations

import gzip
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from torch import Tensor

from mosnas.config import DataConfig
from mosnas.errors import DataError

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def find_split(data_dir: str | Path, split: str, lang: str) -> Path:
    """`{dir}/{split}.{lang}` or its `.gz`."""
    base = Path(data_dir) / f"{split}.{lang}"
    for path in (base, base.with_name(base.name + ".gz")):
        if path.is_file():
            return path
    if not Path(data_dir).is_dir():
        raise DataError(f"data directory not found: {data_dir} (set data.dir or --data)")
    raise DataError(f"missing corpus file {base}[.gz] in {data_dir}")


def count_lines(path: str | Path) -> int:
    """Lines of a text file (gzip if .gz) by `read_lines`' rule (a last line without "\\n" counts), read in
    1 MiB blocks: cheap enough to check a corpus before training. Raises DataError when it cannot be read."""
    count, last = 0, b"\n"
    try:
        with (gzip.open if Path(path).suffix == ".gz" else open)(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                count, last = count + block.count(b"\n"), block[-1:]
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return count + (last != b"\n")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (gzip if it ends in .gz) or, for "-", of standard input.

    One rule on every path and machine: a line ends at "\\n" and nowhere else. A last line without
    "\\n" counts, the "\\r" of a "\\r\\n" ending is dropped, and \\f, \\v, \\x1c-\\x1e, \\x85, \\u2028,
    \\u2029 or a lone \\r stay inside their line (str.splitlines() and text-mode stdin would split there).
    Raises DataError when the input cannot be read or is not UTF-8."""
    name = "standard input" if str(path) == "-" else str(path)
    try:
        if str(path) == "-":
            raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8")
        else:
            with (gzip.open if Path(path).suffix == ".gz" else open)(path, "rb") as f:
                raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {name}: {e}") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not part of the first line
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{name}: invalid UTF-8 on line {line}") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln.rstrip("\r") for ln in lines]


def one_line(text: str) -> str:
    """`text` as one line: the pieces str.splitlines() cuts it into (at \\n, \\r, \\v, \\f, \\x1c-\\x1e,
    \\x85, \\u2028, \\u2029), joined by spaces."""
    return " ".join(text.splitlines())


def stream_lines(stream: Any = None) -> Iterator[str]:
    """The lines of standard input (or a binary `stream`) one at a time, as each arrives, by `read_lines`'
    rule (a line ends at "\\n" only; a "\\r\\n" ending loses its "\\r"; a leading byte-order mark is dropped).
    Raises DataError on invalid UTF-8, naming the line."""
    stream = stream if stream is not None else sys.stdin.buffer
    for number, raw in enumerate(iter(stream.readline, b""), 1):  # readline: nothing waits for a full buffer
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"standard input: invalid UTF-8 on line {number}") from None
        yield text[:-1].rstrip("\r") if text.endswith("\n") else text.rstrip("\r")


def write_lines(path: str | Path, lines: list[str]) -> None:
    """Write each item as exactly one "\\n"-terminated UTF-8 line (see `one_line`) to a file or, for "-",
    to standard output: `read_lines` reads as many lines back. Raises OSError as writing does."""
    data = "".join(one_line(x) + "\n" for x in lines).encode("utf-8")
    if str(path) != "-":
        Path(path).write_bytes(data)
    elif hasattr(sys.stdout, "buffer"):  # bytes: no locale encoding, no "\r\n" translation
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data.decode("utf-8"))


def subset(n: int, limit: int, seed: int) -> list[int]:
    """Indices of a seeded random sample of `limit` of `n` items, in their original order (all when
    `limit` is 0 or >= n). Every "use N sentences" setting means this sample, never the first N: the
    first lines of a corpus are often not typical of it (sorted, one document, one domain)."""
    if not limit or limit >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), limit))


def read_parallel(cfg: DataConfig, split: str, limit: int = 0, seed: int = 1) -> tuple[list[str], list[str]]:
    """Source and target lines of a split (a seeded random sample of `limit` pairs when `limit` > 0);
    their line counts must match."""
    src_path, tgt_path = find_split(cfg.dir, split, cfg.src_lang), find_split(cfg.dir, split, cfg.tgt_lang)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(f"parallel files differ in length: {src_path} has {len(src)} lines, {tgt_path} has {len(tgt)}")
    if not src:
        raise DataError(f"corpus split '{split}' is empty: {src_path}")
    keep = subset(len(src), limit, seed)
    return [src[i] for i in keep], [tgt[i] for i in keep]


def train_tokenizer(lines: list[str], vocab_size: int, out_path: Path) -> spm.SentencePieceProcessor:
    """Train one joint unigram sentencepiece model on both sides of the training split."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "train.txt"
        text.write_text("\n".join(ln for ln in lines if ln.strip()) + "\n", encoding="utf-8")
        try:
            spm.SentencePieceTrainer.train(
                input=str(text),
                model_prefix=str(Path(tmp) / "spm"),
                vocab_size=vocab_size,
                model_type="unigram",
                character_coverage=1.0,
                hard_vocab_limit=False,
                pad_id=PAD,
                unk_id=UNK,
                bos_id=BOS,
                eos_id=EOS,
                num_threads=1,
                input_sentence_size=2_000_000,
                shuffle_input_sentence=True,
                seed_sentencepiece_size=200_000,
                minloglevel=2,
            )
        except RuntimeError as e:
            raise DataError(f"sentencepiece training failed: {e}") from None
        partial = out_path.with_name(out_path.name + ".tmp")
        shutil.copyfile(Path(tmp) / "spm.model", partial)
        partial.replace(out_path)  # atomic: a killed run never leaves half a model behind
    return load_tokenizer(out_path)


def load_tokenizer(path: str | Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"subword model not found: {path}")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as e:  # sentencepiece: a RuntimeError for a damaged or foreign file
        raise DataError(f"{path} is not a readable sentencepiece model ({str(e).splitlines()[0][:80]})") from None


def encode(sp: spm.SentencePieceProcessor, lines: list[str]) -> list[list[int]]:
    """Subword ids of each line, ending with EOS."""
    return [ids + [EOS] for ids in sp.encode(lines)]


@dataclass
class Batch:
    src: Tensor  # (B, S), padded with PAD
    prev: Tensor  # (B, T): BOS + target[:-1]
    target: Tensor  # (B, T): target ids ending with EOS, padded with PAD
    indices: list[int]

    @property
    def num_tokens(self) -> int:
        return int(self.target.ne(PAD).sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.src.to(device), self.prev.to(device), self.target.to(device), self.indices)


def pad_batch(seqs: list[list[int]], first: int | None = None) -> Tensor:
    width = max(len(s) for s in seqs) + (first is not None)
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for i, s in enumerate(seqs):
        row = ([first] if first is not None else []) + s
        out[i, : len(row)] = torch.tensor(row)
    return out


class ParallelData:
    """Encoded sentence pairs with deterministic token-bucketed batches per epoch."""

    def __init__(self, src: list[list[int]], tgt: list[list[int]], max_tokens: int, seed: int = 1):
        self.src, self.tgt, self.max_tokens, self.seed = src, tgt, max_tokens, seed

    def __len__(self) -> int:
        return len(self.src)

    def batches(self, epoch: int, shuffle: bool = True) -> list[list[int]]:
        """Index batches of similar length, each at most `max_tokens` padded tokens; the order
        depends only on (seed, epoch), so a resumed run sees exactly the same batches."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.src)))
        if shuffle:
            rng.shuffle(order)  # random tie-break among equal lengths
        order.sort(key=lambda i: (len(self.tgt[i]), len(self.src[i])))
        batches, current, width = [], [], 0
        for i in order:
            w = max(width, len(self.src[i]), len(self.tgt[i]) + 1)
            if current and w * (len(current) + 1) > self.max_tokens:
                batches.append(current)
                current, w = [], max(len(self.src[i]), len(self.tgt[i]) + 1)
            current.append(i)
            width = w
        if current:
            batches.append(current)
        if shuffle:
            rng.shuffle(batches)
        return batches

    def collate(self, indices: list[int]) -> Batch:
        tgt = [self.tgt[i] for i in indices]
        return Batch(
            pad_batch([self.src[i] for i in indices]),
            pad_batch([t[:-1] for t in tgt], first=BOS),
            pad_batch(tgt),
            indices,
        )


def load_parallel(
    cfg: DataConfig, split: str, sp: spm.SentencePieceProcessor, limit: int = 0, max_len: int = 0, seed: int = 1
) -> tuple[ParallelData, int]:
    """Encode a split (a `seed`ed sample of `limit` pairs when `limit` > 0); with `max_len`, drop pairs
    longer than it. Also returns how many were dropped
    (empty lines are always dropped from training data)."""
    src_lines, tgt_lines = read_parallel(cfg, split, limit, seed)
    src_ids, tgt_ids = encode(sp, src_lines), encode(sp, tgt_lines)
    keep = [
        i
        for i in range(len(src_ids))
        if src_lines[i].strip()
        and tgt_lines[i].strip()
        and (not max_len or (len(src_ids[i]) <= max_len and len(tgt_ids[i]) <= max_len))
    ]
    if not keep:
        raise DataError(f"no usable sentence pairs in split '{split}' of {cfg.dir}")
    data = ParallelData([src_ids[i] for i in keep], [tgt_ids[i] for i in keep], cfg.max_tokens, seed)
    return data, len(src_ids) - len(keep)
