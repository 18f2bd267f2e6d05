import gzip

import pytest

from mosnas.config import DataConfig
from mosnas.errors import DataError
from mosnas.mt.data import BOS, EOS, PAD, ParallelData, encode, load_parallel, read_lines, read_parallel
from tests.conftest import DATA


def test_reads_real_multi30k():
    src, tgt = read_parallel(DataConfig(dir=str(DATA)), "val")
    assert len(src) == len(tgt) == 1014
    assert src[0].startswith("A group of men") and tgt[0].startswith("Eine Gruppe von Männern")


def test_plain_and_gzip_files_read_the_same(tmp_path):
    lines = ["ein Hund läuft", "", "zwei Katzen"]
    (tmp_path / "a.de").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "b.de.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    assert read_lines(tmp_path / "a.de") == read_lines(tmp_path / "b.de.gz") == lines


def test_parallel_files_of_different_length(tmp_path):
    (tmp_path / "train.en").write_text("a\nb\nc\n")
    (tmp_path / "train.de").write_text("a\nb\n")
    with pytest.raises(DataError, match="differ in length: .*train.en has 3 lines, .*train.de has 2"):
        read_parallel(DataConfig(dir=str(tmp_path)), "train")


def test_invalid_utf8_names_the_line(tmp_path):
    (tmp_path / "x.en").write_bytes(b"fine\nalso fine\nbad \xff byte\n")
    with pytest.raises(DataError, match="invalid UTF-8 on line 3"):
        read_lines(tmp_path / "x.en")


def test_missing_split_and_directory(tmp_path):
    with pytest.raises(DataError, match="missing corpus file"):
        read_parallel(DataConfig(dir=str(tmp_path)), "train")
    with pytest.raises(DataError, match="data directory not found"):
        read_parallel(DataConfig(dir=str(tmp_path / "nope")), "train")


def test_empty_lines_are_dropped_from_training_pairs(tmp_path, spm_model):
    (tmp_path / "train.en").write_text("a dog runs\n\nthe cat\n")
    (tmp_path / "train.de").write_text("ein Hund rennt\nLeer\n\n")
    data, dropped = load_parallel(DataConfig(dir=str(tmp_path)), "train", spm_model.processor)
    assert len(data) == 1 and dropped == 2


def test_token_bucketed_batches(spm_model):
    src, tgt = read_parallel(DataConfig(dir=str(DATA)), "val")
    data = ParallelData(encode(spm_model.processor, src), encode(spm_model.processor, tgt), max_tokens=600, seed=3)
    batches = data.batches(0)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))  # every pair once
    for b in batches:
        width = max(max(len(data.src[i]), len(data.tgt[i]) + 1) for i in b)
        assert width * len(b) <= 600 or len(b) == 1
    assert data.batches(0) == batches and data.batches(1) != batches  # deterministic per epoch
    batch = data.collate(batches[0])
    assert (batch.prev[:, 0] == BOS).all()
    i = batch.indices[0]
    n = len(data.tgt[i])
    assert batch.target[0, n - 1] == EOS and (batch.target[0, n:] == PAD).all()
    assert batch.prev[0, 1:n].tolist() == data.tgt[i][:-1]  # teacher forcing: target shifted right
    assert batch.num_tokens == sum(len(data.tgt[j]) for j in batch.indices)


def test_tokenizer_round_trips_raw_text(spm_model):
    line = "Ein Mann mit einem orangefarbenen Hut starrt auf etwas."
    ids = spm_model.processor.encode(line)
    assert spm_model.processor.decode(ids) == line


def test_limited_splits_are_seeded_samples_not_the_first_lines(spm_model):
    cfg = DataConfig(dir=str(DATA))
    src_all, tgt_all = read_parallel(cfg, "val")
    src, tgt = read_parallel(cfg, "val", limit=50, seed=1)
    assert len(src) == 50 and src != src_all[:50]  # not the head of the file ...
    assert all(tgt_all[src_all.index(s)] == t for s, t in zip(src, tgt))  # ... still aligned pairs ...
    assert [src_all.index(s) for s in src] == sorted(src_all.index(s) for s in src)  # ... in corpus order
    assert read_parallel(cfg, "val", limit=50, seed=1) == (src, tgt)  # the same sample for the same seed
    assert read_parallel(cfg, "val", limit=50, seed=2)[0] != src
    sp_data, _ = load_parallel(cfg, "val", spm_model.processor, limit=50, seed=1)
    assert len(sp_data) == 50  # what validation and search fitness use
    assert read_parallel(cfg, "val", limit=5000)[0] == src_all  # a limit beyond the split takes it all


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    (tmp_path / "bom.en").write_bytes("\ufeffA man rides.\nTwo dogs.\n".encode())
    assert read_lines(tmp_path / "bom.en") == ["A man rides.", "Two dogs."]
