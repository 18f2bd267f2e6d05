"""NAS-BERT on the engine (issue 27): `mosnas train` of the nasbert family distils every block from the real
teacher's hidden states on real text with its own sampled path, writes the per-op latency table, fills the
buckets, shrinks them at an epoch start (at most half of each bucket, none emptied, the record in the log) and
keeps the pools in the checkpoint, so a stopped and resumed run equals a straight one."""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mosnas.cli.main import main
from mosnas.config import load_config
from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.train import train
from mosnas.errors import ConfigError
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "nasbert_tiny.yaml"


def _cfg(out, *overrides):
    return load_config(CONFIG, [f"out_dir={out}", *overrides])


def _net(run_dir):
    from mosnas.engine.load import load_run

    return load_run(run_dir).net.parameters()


def _log(run_dir):
    return [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """24 steps in one go: one warm-up epoch of 18 steps, then a shrink at the start of epoch 1."""
    return train(_cfg(tmp_path_factory.mktemp("straight")), show_progress=False)


def test_blocks_train_and_buckets_shrink_by_at_most_half(straight):
    log = _log(straight)
    start = log[0]
    assert start["teacher_layers_at_block_ends"] == [2, 4, 6] and len(start["bucket_paths"]) == 3
    assert start["generator"] == "nasbert" and start["parameters"] == sum(p.numel() for p in _net(straight))
    steps = [r for r in log if "loss_block1" in r]
    assert len(steps) == 12 and all(f"loss_block{b}" in r for r in steps for b in (1, 2, 3))
    table = json.loads((straight / "latency_table.json").read_text())
    assert set(table["ops"]) == {"mha32", "ffn32", "conv3_32", "mha64", "ffn64", "conv3_64", "identity"}
    shrinks = [s for r in log for s in r.get("shrinks", [])]
    assert [s["epoch"] for s in shrinks] == [1]  # after the one warm-up epoch, not before
    keep = 2
    for block in shrinks[0]["blocks"]:
        for before, after in zip(block["before"], block["after"]):
            assert after >= before - before // 2  # at most half of a bucket goes in one shrink
            assert after >= min(before, keep)  # never below the floor, never emptied
            assert before > keep or after == before
    assert sum(block["after"][-1] for block in shrinks[0]["blocks"]) < sum(
        block["before"][-1] for block in shrinks[0]["blocks"]
    )
    # the validation's largest path got closer to the teacher
    valid = [r for r in log if "valid_loss_block1_largest" in r]
    assert all(valid[-1][f"valid_loss_block{b}_largest"] < valid[0][f"valid_loss_block{b}_largest"] for b in (1, 2, 3))
    # the pools are in the checkpoint: the living paths it holds are those the log reports
    extra = load_file(str(list_checkpoints(straight)[-1] / "optimizer.safetensors"))
    alive = extra["task.alive"]
    assert alive.shape[0] == 3 and alive.sum(dim=(1, 2)).tolist() == valid[-1]["living_paths"]


@pytest.mark.slow
def test_a_stopped_and_resumed_run_equals_the_straight_one(straight, tmp_path):
    """The straight run as if killed after its step-16 checkpoint (before the shrink; its latency table, which
    the buckets come from, kept), resumed to 24: the same losses, pools and weights."""
    import shutil

    copy = tmp_path / straight.name
    shutil.copytree(straight, copy)
    saved = yaml.safe_load((copy / "config.yaml").read_text())
    (copy / "config.yaml").write_text(yaml.safe_dump({**saved, "out_dir": str(tmp_path)}))  # the folder moved
    last = list_checkpoints(copy)[-1]
    shutil.rmtree(last)
    assert list_checkpoints(copy)[-1].name != last.name
    resumed = train(_cfg(tmp_path), resume=True, show_progress=False)
    losses = lambda run: [(r["step"], r["loss_block1"], r["loss_block3"]) for r in _log(run) if "loss_block1" in r]
    assert losses(resumed) == losses(straight) and len(losses(resumed)) == 12
    a = load_file(str(list_checkpoints(straight)[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(resumed)[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pa = load_file(str(list_checkpoints(straight)[-1] / "optimizer.safetensors"))
    pb = load_file(str(list_checkpoints(resumed)[-1] / "optimizer.safetensors"))
    assert torch.equal(pa["task.alive"], pb["task.alive"]) and torch.equal(pa["task.codes"], pb["task.codes"])


def test_a_space_that_does_not_fit_the_teacher_is_refused_before_a_folder(tmp_path, capsys):
    space = tmp_path / "wide.yaml"
    space.write_text("name: wide\nwidth: 512\nsublayers: 6\nblocks: 3\nhidden_sizes: [64]\nkernels: [3]\n")
    code = main(["train", str(CONFIG), f"out_dir={tmp_path}", f"supernet.space={space}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "width 512 must be the teacher's hidden size 384" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "nasbert_tiny").exists()
    with pytest.raises(ConfigError, match="NAS-BERT trains one sampled path per block"):
        from mosnas.engine.run_folder import check_inputs

        check_inputs(_cfg(tmp_path, "train.sampling=sandwich"))


def test_mosnas_run_picks_within_each_budget_from_the_table_and_exports_a_standalone_encoder(straight, capsys):
    """`mosnas run` of the trained run: the lookup table of the surviving paths, one pick per budget (the table's
    top archs run whole, the best kept), a standalone encoder equal to the supernet and to its ONNX export."""
    from mosnas.bert.nasbert.model import load_model
    from mosnas.bert.nasbert.select import heldout
    from mosnas.engine.load import load_run
    from mosnas.pipeline.run import run

    cfg = _cfg(straight.parent)
    results = run(cfg, progress=False)
    rows = {r["name"]: r for r in results["results"]}
    assert set(rows) == {"params-0.06M", "latency-3ms"}
    tables = json.loads((straight / "search" / "nasbert_table.json").read_text())["blocks"]
    losses = [{tuple(r["path"]): r["loss"] for r in block} for block in tables]
    loaded = load_run(straight)
    assert [len(t) for t in tables] == [int(loaded.task_state["alive"][b].sum()) for b in range(3)]
    for name, row in rows.items():
        arch = tuple(row["arch"])
        paths = loaded.space.split(arch)
        assert row["table_loss"] == pytest.approx(sum(losses[b][p] for b, p in enumerate(paths)), abs=1e-5)
        assert row["parameters_nonembedding"] == loaded.net.num_parameters(arch)
        if row["max_params"]:
            assert row["parameters_nonembedding"] <= row["max_params"]
        if row["budget_ms"]:
            assert row["table_latency_ms"] <= row["budget_ms"]
        picked = json.loads((straight / "search" / f"{name}.json").read_text())
        cands = picked["candidates"]
        assert 1 <= len(cands) <= 5 and [c["table_loss"] for c in cands] == sorted(c["table_loss"] for c in cands)
        assert row["whole_loss"] == min(c["whole_loss"] for c in cands)
        assert row["onnx_max_abs_diff"] < 1e-4 and row["measured_latency_ms"] > 0
        # the folder runs without the supernet and computes what the supernet does from the teacher's embeddings
        model = load_model(straight / row["model_dir"])
        assert len(model.layers) == sum(op != "identity" for op in arch)
        data = heldout(cfg, loaded.space, 8)
        mask, states = data.batches[0]
        ids = torch.randint(1, 1000, mask.shape, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            emb = model.embeddings(ids, torch.zeros_like(ids))
            assert torch.allclose(model(ids, mask).last_hidden_state, loaded.net(emb, mask, arch), atol=1e-5)
    assert "| params-0.06M |" in (straight / "summary.md").read_text()


def test_mosnas_run_distils_each_pick_end_to_end_before_its_export(straight, tmp_path):
    """With nasbert.distill_steps, each pick is distilled from the teacher end to end (the paper's first KD stage)
    before its export: it starts from the supernet's slices (its held-out loss is the row's whole loss), the
    exported folder holds the distilled weights, and its ONNX export still equals PyTorch."""
    import shutil

    from mosnas.bert.nasbert.model import load_model
    from mosnas.pipeline.run import run

    shutil.copytree(straight / "export", tmp_path / "export")  # the exports without KD (the test above's)
    cfg = _cfg(straight.parent, "nasbert.distill_steps=3", "nasbert.distill_lr=1e-3")  # the same trained run
    rows = run(cfg, progress=False)["results"]
    for row in rows:
        kd = row["distill"]
        assert kd["steps"] == 3 and kd["whole_loss_before"] == pytest.approx(row["whole_loss"], rel=1e-4)
        assert kd["whole_loss_after"] != kd["whole_loss_before"] and row["onnx_max_abs_diff"] < 1e-4
        exported = dict(load_model(cfg.run_dir / row["model_dir"]).named_parameters())
        plain = dict(load_model(tmp_path / row["model_dir"]).named_parameters())
        assert any(not torch.equal(v, plain[k]) for k, v in exported.items())
    assert "KD steps)" in (cfg.run_dir / "summary.md").read_text()


def test_mosnas_run_fine_tunes_each_pick_and_the_teacher_on_glue(straight):
    """With glue.tasks, every exported pick is fine-tuned with the run's recipe (official metric, the seeded
    subsets) and the teacher once beside it; the rows carry the scores and summary.md the BERT family's table."""
    from mosnas.pipeline.run import run

    glue = ["glue.tasks=[RTE]", "glue.train_limit=32", "glue.dev_limit=24", "glue.epochs=1", "glue.max_seq_len=32"]
    cfg = _cfg(straight.parent, *glue)
    rows = run(cfg, progress=False)["results"]
    assert len(rows) == 2
    for row in rows:
        rte = row["glue"]["RTE"]
        assert (rte["train_examples"], rte["dev_examples"]) == (32, 24) and rte["steps"] == 1
        assert set(rte["metrics"]) == {"accuracy"} and 0.0 <= rte["score"] <= 100.0
        assert rte["teacher"]["score"] == rows[0]["glue"]["RTE"]["teacher"]["score"]  # one teacher run for all
        result = json.loads((cfg.run_dir / row["model_dir"] / "glue" / "RTE" / "result.json").read_text())
        assert result["score"] == rte["score"]
    assert (cfg.run_dir / "teacher_glue" / "glue" / "RTE" / "result.json").is_file()
    summary = (cfg.run_dir / "summary.md").read_text()
    assert "RTE accuracy" in summary and "| teacher |" in summary


def test_a_glue_task_that_is_not_there_is_refused_before_a_folder(tmp_path, capsys):
    code = main(["run", str(CONFIG), f"out_dir={tmp_path}", "glue.tasks=[RTE,NOPE]"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no GLUE task 'NOPE'" in err.splitlines()[-1]
