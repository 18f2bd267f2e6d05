"""A model knows what it is: an exported En->Fr model carries its provenance, and evaluate, translate and
finetune default to it (and refuse a contradicting option) from any working directory."""

import json
import shutil

import pytest

from mosnas.cli.main import main
from mosnas.config import DataConfig, load_config
from mosnas.engine.load import load_run
from mosnas.engine.train import train
from mosnas.mt.data import read_lines, read_parallel
from mosnas.mt.evaluate import score
from mosnas.pipeline.export import export_arch
from mosnas.workspace.paths import file_sha256
from tests.conftest import DATA, ROOT


@pytest.fixture(scope="module")
def fr_model(tmp_path_factory):
    """A tiny En->Fr supernet trained 4 steps on real Multi30k, its largest subnet exported."""
    out = tmp_path_factory.mktemp("fr")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}", "data.tgt_lang=fr", "train.max_steps=4"])
    run = load_run(train(cfg, show_progress=False))
    return export_arch(run, run.space.largest(), out / "model"), run


def _record(model):
    return json.loads((model / "export.json").read_text(encoding="utf-8"))["provenance"]


def test_export_records_provenance(fr_model):
    model, run = fr_model
    p = _record(model)
    assert (p["family"], p["pair"], p["data"]["src_lang"], p["data"]["tgt_lang"]) == ("mt", "en-fr", "en", "fr")
    assert p["data"]["dir"] == str(DATA) and (p["data"]["train"], p["data"]["valid"]) == ("train", "val")
    assert p["run"] == str(run.run_dir.resolve()) and p["checkpoint"] == run.checkpoint and p["checkpoint"]["step"] == 4
    assert p["arch"] == run.space.largest().to_dict()
    assert p["tokenizer"] == {"file": "spm.model", "sha256": file_sha256(model / "spm.model")}
    assert p["files"]["model.safetensors"] == file_sha256(model / "model.safetensors")
    assert p["precision"]["weights"] == "float32" and p["precision"]["trained"]["precision"] in ("fp32", "bf16")
    assert p["metric"]["decode"]["beam"] == 2 and p["metric"]["eval"]["split"] == "test_2016_flickr"


def test_evaluate_from_another_directory_scores_the_record_pair(fr_model, tmp_path, monkeypatch, capsys):
    model, _ = fr_model
    monkeypatch.chdir(tmp_path)  # nothing may depend on the working directory
    assert main(["evaluate", str(model), "--quiet"]) == 0
    result = json.loads((model / "eval.test_2016_flickr.json").read_text(encoding="utf-8"))
    assert result["pair"] == "en-fr" and result["references"].startswith(str(DATA / "test_2016_flickr.fr"))
    assert {
        k: result["settings"][k]["from"] for k in ("src_lang", "tgt_lang", "dir", "split", "beam")
    } == dict.fromkeys(("src_lang", "tgt_lang", "dir", "split", "beam"), "model record")
    assert result["sentences"] == 8 and result["model"]["provenance"]["pair"] == "en-fr"
    hyps = read_lines(model / "hyp.test_2016_flickr.fr")
    _, french = read_parallel(DataConfig(dir=str(DATA), tgt_lang="fr"), "test_2016_flickr", limit=8)
    assert score(hyps, french, "fr")["chrf"] == result["chrf"]  # scored against the French references
    assert "en-fr" in capsys.readouterr().out


def test_translate_uses_the_record(fr_model, tmp_path, monkeypatch, capsys):
    model, _ = fr_model
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(model), "--quiet", "--limit", "3", "--split", "val"]) == 0
    source, _ = read_parallel(DataConfig(dir=str(DATA), tgt_lang="fr"), "val", limit=3)
    (tmp_path / "in.en").write_text("".join(s + "\n" for s in source), encoding="utf-8")
    capsys.readouterr()
    assert main(["translate", str(model), "--input", "in.en"]) == 0
    out = capsys.readouterr()
    assert "translating en->fr" in out.err and "tgt_lang fr (model record)" in out.err
    # the record's beam and batch size: the same lines evaluate wrote
    assert out.out.splitlines() == read_lines(model / "hyp.val.fr")


@pytest.mark.parametrize("command", [["evaluate"], ["translate", "--input", "in.en"]])
def test_a_contradicting_language_is_refused(fr_model, tmp_path, monkeypatch, capsys, command):
    model, _ = fr_model
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.en").write_text("A dog runs.\n", encoding="utf-8")
    before = sorted(p.name for p in model.iterdir())
    assert main([command[0], str(model), *command[1:], "--tgt-lang", "de"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosnas: error: --tgt-lang de contradicts"), captured.err
    assert "(fr," in lines[0] and "--override-record" in lines[0] and captured.out == ""
    assert sorted(p.name for p in model.iterdir()) == before  # nothing written


def test_override_record_is_explicit_and_recorded(fr_model, tmp_path, monkeypatch):
    model, _ = fr_model
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", str(model), "--tgt-lang", "de", "--override-record", "--split", "val", "--limit", "2"]
    assert main([*args, "--quiet"]) == 0
    result = json.loads((model / "eval.val.json").read_text(encoding="utf-8"))
    assert result["pair"] == "en-de" and result["override_record"] is True
    assert result["settings"]["tgt_lang"] == {"value": "de", "from": "option (overriding the record)"}
    assert result["references"].startswith(str(DATA / "val.de"))


def test_an_export_without_provenance_still_loads(fr_model, tmp_path, monkeypatch, capsys):
    """An export of mosnas 0.1.0 (no provenance): its run's config when the run is there, else the defaults
    (en-de, the bundled Multi30k, test_2016_flickr), each with a one-line warning."""
    model, run = fr_model
    monkeypatch.chdir(tmp_path)
    inside = run.run_dir / "export" / "old"  # where `mosnas export` puts it: the run is two levels up
    shutil.copytree(model, inside)
    info = json.loads((inside / "export.json").read_text(encoding="utf-8"))
    del info["provenance"]
    (inside / "export.json").write_text(json.dumps(info), encoding="utf-8")
    assert main(["evaluate", str(inside), "--quiet", "--split", "val", "--limit", "2"]) == 0
    assert "no provenance record (an older export); using its run's config" in capsys.readouterr().err
    assert json.loads((inside / "eval.val.json").read_text(encoding="utf-8"))["pair"] == "en-fr"
    gone = shutil.copytree(inside, tmp_path / "moved")
    (gone / "export.json").write_text(json.dumps({**info, "run": "no/such/run"}), encoding="utf-8")
    assert main(["evaluate", str(gone), "--quiet", "--split", "val", "--limit", "2"]) == 0
    assert "its run is gone; using the defaults" in capsys.readouterr().err
    result = json.loads((gone / "eval.val.json").read_text(encoding="utf-8"))
    assert result["pair"] == "en-de" and result["settings"]["dir"] == {
        "value": str(DATA),
        "from": "default",
    }


def test_finetune_takes_its_run_from_the_record(fr_model, tiny_run_dir, tmp_path, monkeypatch, capsys):
    model, run = fr_model
    monkeypatch.chdir(tmp_path)
    refused = main(["finetune", str(model), "--run", str(tiny_run_dir), "--steps", "2", "--quiet"])  # an en-de run
    err = capsys.readouterr().err.strip()
    assert refused == 2 and "en-de contradicts the model's record (en-fr" in err and len(err.splitlines()) == 1
    assert not (tiny_run_dir / "finetune").exists()
    assert main(["finetune", str(model), "--steps", "2", "--valid-bleu", "0", "--quiet"]) == 0  # no --run
    export = run.run_dir / "finetune" / "model-ft" / "export"
    p = _record(export)
    assert p["pair"] == "en-fr" and p["run"] == str((run.run_dir / "finetune" / "model-ft").resolve())
    assert p["finetuned_from"]["dir"] == str(model.resolve()) and p["finetuned_from"]["provenance"] == _record(model)
    assert p["data"]["tokenizer"] == str(model.resolve() / "spm.model")


def test_a_model_of_another_family_is_refused(fr_model, tmp_path, capsys):
    model, _ = fr_model
    other = shutil.copytree(model, tmp_path / "other", ignore=shutil.ignore_patterns("eval.*", "hyp.*"))
    info = json.loads((other / "export.json").read_text(encoding="utf-8"))
    info["provenance"]["family"] = "bert"
    (other / "export.json").write_text(json.dumps(info), encoding="utf-8")
    for command in ("evaluate", "translate"):
        assert main([command, str(other)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"mosnas: error: {other} holds a bert model (its export.json), not a mt model"], err
    assert main(["finetune", str(other), "--steps", "2"]) == 2  # its run (from the record) is an mt run
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the run's family mt contradicts the model's record (bert" in err[0], err
    assert not list(other.glob("eval.*")) and not list(other.glob("hyp.*"))
    assert not (fr_model[1].run_dir / "finetune" / "other-ft").exists()


def test_the_issue_command_scores_french_on_another_test_set(fr_model, tmp_path, monkeypatch, capsys):
    """Issue 13's command: `mosnas evaluate RUN/export/largest --split test_2017_flickr` on an En->Fr model
    scored French output against the German references; now the pair comes from the model."""
    model, _ = fr_model
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", str(model), "--split", "test_2017_flickr", "--limit", "4", "--quiet"]) == 0
    result = json.loads((model / "eval.test_2017_flickr.json").read_text(encoding="utf-8"))
    assert result["pair"] == "en-fr" and result["references"] == str(DATA / "test_2017_flickr.fr.gz")
    assert (model / "hyp.test_2017_flickr.fr").is_file() and not (model / "hyp.test_2017_flickr.de").exists()
    assert "test_2017_flickr, en-fr" in capsys.readouterr().out


def test_a_model_with_another_runs_vocabulary_is_refused(tiny_cfg, tmp_path, capsys):
    """Issue 33, kind 2: a model of run A fine-tuned `--run B` whose subword model differs: one line, nothing
    trained; --override-record for those who mean it."""
    from mosnas.engine.train import train

    a = train(tiny_cfg("name=A", "train.max_steps=2"), show_progress=False)
    b = train(tiny_cfg("name=B", "train.max_steps=2", "data.vocab_size=180"), show_progress=False)
    model = tmp_path / "model"
    assert main(["export", str(a), "--arch", "smallest", "--out", str(model), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["finetune", str(model), "--run", str(b), "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        "the run's spm.model (sha256)" in err and "contradicts the model's record" in err and len(err.splitlines()) == 1
    )
    assert not (b / "finetune").exists()
    assert main(["finetune", str(model), "--run", str(a), "--steps", "1", "--valid-bleu", "0", "--quiet"]) == 0
