"""No default path depends on the working directory: a config file's paths are relative to its folder, a
command line's to the working directory, the defaults to the project; a run saved with relative paths (before
this rule) still loads; a missing corpus says where mosnas looked. And the package states the torch range."""

import json
import re
import shutil

import yaml

from mosnas.cli.main import main
from mosnas.config import config_from_dict, load_config
from mosnas.engine.load import load_run
from mosnas.workspace.paths import PROJECT
from tests.conftest import DATA, ROOT, TINY_SPACE


def test_the_project_is_the_checkout():
    assert PROJECT == ROOT and (PROJECT / "mosnas" / "workspace" / "paths.py").is_file()


def test_a_shipped_config_loads_the_same_from_any_directory(tmp_path, monkeypatch):
    here = load_config(ROOT / "configs" / "tiny.yaml")
    monkeypatch.chdir(tmp_path)
    there = load_config(ROOT / "configs" / "tiny.yaml")
    assert here == there
    assert there.data.dir == str(DATA) and there.supernet.space == str(TINY_SPACE)


def test_config_file_paths_are_relative_to_the_file_and_overrides_to_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "exp").mkdir()
    shutil.copy(TINY_SPACE, tmp_path / "exp" / "space.yaml")
    (tmp_path / "exp" / "c.yaml").write_text("data:\n  dir: corpus\nsupernet:\n  space: space.yaml\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("exp/c.yaml", ["data.tokenizer=spm.model", "train.fixed_arch=largest"])
    assert cfg.data.dir == str(tmp_path / "exp" / "corpus") and cfg.supernet.space == str(tmp_path / "exp/space.yaml")
    assert cfg.data.tokenizer == str(tmp_path / "spm.model")  # a command-line path: the working directory's
    assert cfg.train.fixed_arch == "largest"  # not a path


def test_defaults_are_relative_to_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, [])
    assert cfg.data.dir == str(DATA) and cfg.supernet.space == str(ROOT / "configs/spaces/multi30k.yaml")


def test_a_config_written_for_the_old_rule_still_loads_with_a_warning(tmp_path, monkeypatch, capsys):
    """A path relative to the repository root (the old rule) is taken from there when the config's folder
    does not hold it, and the warning says how to write it."""
    (tmp_path / "old.yaml").write_text("supernet:\n  space: configs/spaces/tiny.yaml\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_config(tmp_path / "old.yaml").supernet.space == str(TINY_SPACE)
    err = capsys.readouterr().err
    assert "supernet.space: configs/spaces/tiny.yaml is not in" in err and "write it relative to the config" in err


def test_a_run_saved_with_relative_paths_still_loads_from_anywhere(tiny_run_dir, tmp_path, monkeypatch, capsys):
    """A run folder of mosnas 0.1.0 holds its config's paths as written (relative to the repository root,
    where it was run); it loads, exports and evaluates from another directory."""
    old = shutil.copytree(tiny_run_dir, tmp_path / "old-run")
    saved = yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))
    saved["data"]["dir"], saved["supernet"]["space"] = "../shared/data/multi30k", "configs/spaces/tiny.yaml"
    (old / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    assert config_from_dict(saved).data.dir == str(DATA)
    monkeypatch.chdir(tmp_path / "old-run")
    assert load_run(old).cfg.data.dir == str(DATA)
    assert main(["export", str(old), "--arch", "smallest"]) == 0
    record = json.loads((old / "export" / "smallest" / "export.json").read_text(encoding="utf-8"))["provenance"]
    assert record["data"]["dir"] == str(DATA) and record["pair"] == "en-de"
    capsys.readouterr()
    assert main(["evaluate", str(old / "export" / "smallest"), "--limit", "2", "--quiet"]) == 0
    assert "(2 of 1,000 sentences, test_2016_flickr, en-de, references " + str(DATA) in capsys.readouterr().out


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mosnas: error: "), err
    return err[0]


def test_a_missing_corpus_says_where_mosnas_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", str(ROOT / "configs" / "tiny.yaml"), f"out_dir={tmp_path / 'runs'}", "--quiet"]
    assert main([*args, "--data", "nowhere"]) == 2
    line = _one_error_line(capsys)
    assert f"data directory not found: looked in {tmp_path / 'nowhere'} (data.dir)" in line
    assert "--data DIR or data.dir=DIR" in line
    (tmp_path / "c.yaml").write_text("data:\n  dir: corpus\n", encoding="utf-8")
    assert main(["train", "c.yaml", f"out_dir={tmp_path / 'runs'}", "--quiet"]) == 2
    assert f"looked in {tmp_path / 'corpus'} (data.dir)" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_evaluate_names_the_folder_it_looked_in(tiny_run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m"
    assert main(["export", str(tiny_run_dir), "--arch", "smallest", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", "elsewhere"]) == 2
    assert f"looked in {tmp_path / 'elsewhere'} (from --data)" in _one_error_line(capsys)
    assert not list(model.glob("eval.*"))


def test_pyproject_states_a_torch_range_that_holds_the_installed_torch():
    """torch is a range in the package (a user keeps the torch they have); the exact CPU build is pinned
    only in constraints.txt, for the bundled setup."""
    import torch
    from packaging.requirements import Requirement

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    torch_req = next(Requirement(r) for r in re.findall(r'"(torch[^"]*)"', text) if Requirement(r).name == "torch")
    assert str(torch_req.specifier) in (">=2.1,<3", "<3,>=2.1")
    assert torch_req.specifier.contains(torch.__version__.split("+")[0])
    assert not torch_req.specifier.contains("2.0.1") and not torch_req.specifier.contains("3.0.0")
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text(encoding="utf-8").split()


def test_a_run_saved_with_relative_paths_is_the_same_run(tiny_run_dir, tmp_path, monkeypatch, capsys):
    """Continuing a run of mosnas 0.1.0 with the same config is not refused as a different run: its saved
    relative paths and the config file's own resolve to the same files."""
    old = shutil.copytree(tiny_run_dir, tmp_path / "tiny")
    saved = yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))
    saved["data"]["dir"], saved["supernet"]["space"] = "../shared/data/multi30k", "configs/spaces/tiny.yaml"
    saved["out_dir"] = str(tmp_path)  # where it is now (out_dir is where runs go, relative to the cwd as before)
    (old / "config.yaml").write_text(yaml.safe_dump(saved), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    args = ["train", str(ROOT / "configs" / "tiny.yaml"), f"out_dir={tmp_path}", "train.max_steps=8", "--quiet"]
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert yaml.safe_load((old / "config.yaml").read_text(encoding="utf-8"))["data"]["dir"] == str(DATA)
    assert main([*args, "--resume", "train.lr=5e-3"]) == 2  # another run is still told apart
    assert "holds a different run (changed: train.lr)" in capsys.readouterr().err
