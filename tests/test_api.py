"""The Python API of the README (`import mosnas`): the same functions the CLI calls, on the tiny config."""

import pytest

import mosnas
from mosnas.workspace.model_dir import ModelDir
from tests.conftest import DATA, ROOT


@pytest.mark.slow
def test_the_readme_python_example_trains_searches_and_exports(tmp_path):
    cfg = mosnas.load_config(
        ROOT / "configs" / "tiny.yaml",
        [f"out_dir={tmp_path}", f"data.dir={DATA}", "name=api-demo", "search.max_params=30000"],
    )
    assert isinstance(cfg, mosnas.Config)
    assert mosnas.train(cfg, show_progress=False) == cfg.run_dir
    run = mosnas.load_run(cfg.run_dir)
    assert run.step == cfg.train.max_steps and isinstance(run.net, mosnas.Supernet)
    found = mosnas.search_stage(run, cfg.search, "params-30k", None, cfg.latency, progress=False)
    arch = run.space.arch_from_dict(found["evolution"]["arch"])
    assert run.space.validate(arch) == arch and found["evolution"]["fitness"] > 0
    out = mosnas.export_arch(run, arch, cfg.run_dir / "export" / "mine")
    size = run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, cfg.latency)["parameters"]
    assert size <= 30000 and (out / "model.safetensors").is_file()
    folder = ModelDir(out)  # the one owner of a model folder's file names
    assert folder.read_arch() == arch.to_dict() and folder.made_from()["checkpoint"] == run.checkpoint
    assert folder.info()["provenance"]["arch"] == arch.to_dict() and ModelDir(tmp_path / "none").info() == {}
    model, _ = run.family.load_model(out)  # the exported dense model alone equals the supernet for that arch
    assert sum(p.numel() for p in model.parameters()) == size


def test_load_space_reads_a_family_space():
    space = mosnas.load_space(ROOT / "configs" / "spaces" / "tiny.yaml", "mt")
    assert isinstance(space, mosnas.Space) and space.validate(space.largest()) == space.largest()
    bert = mosnas.load_space(ROOT / "configs" / "spaces" / "bert_tiny.yaml", "bert")
    assert (
        type(bert.largest()).__module__ == "mosnas.bert.space" and type(space.largest()).__module__ == "mosnas.mt.space"
    )
