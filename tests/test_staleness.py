"""A stage's output is valid only for the inputs that made it: `mosnas run` (and the stage commands) redo an
output whose recorded inputs changed, say why in one line, and trust nothing a failed stage left."""

import json
from pathlib import Path

import pytest

from mosnas.cli.main import main
from mosnas.engine.train import train
from mosnas.errors import DataError
from mosnas.pipeline.run import run
from mosnas.workspace.records import read_json

DERIVED = ("latency", "search", "export", "finetune")


def _outputs(run_dir: Path) -> dict[str, int]:
    """mtime (ns) of every stage output (not the report, which every call rebuilds)."""
    return {
        str(p.relative_to(run_dir)): p.stat().st_mtime_ns
        for d in DERIVED
        for p in sorted((run_dir / d).rglob("*"))
        if p.is_file()
    }


def _rows(results: dict) -> dict[str, dict]:
    return {r["name"]: r for r in results["results"]}


@pytest.mark.slow
def test_changed_inputs_redo_exactly_what_read_them(tiny_cfg, capsys):
    cfg = tiny_cfg()
    run_dir = cfg.run_dir
    first = run(cfg, progress=False)
    searched = next(r for r in first["results"] if r["kind"] == "search")
    budget = searched["name"]

    # A plain re-run redoes nothing.
    before = _outputs(run_dir)
    capsys.readouterr()
    again = run(cfg, progress=False)
    assert _outputs(run_dir) == before and "redone" not in capsys.readouterr().err
    assert [r["bleu"] for r in again["results"]] == [r["bleu"] for r in first["results"]]
    split = first["stage_s_this_call"]  # where the wall time went: every stage of this call, booked once
    assert {"train", "reference", "search"} <= set(split) and sum(split.values()) <= first["wall_s_this_call"] + 0.5
    assert "train" not in again["stage_s_this_call"]
    # eval.note is words for summary.md, not an input of any stage
    noted = run(tiny_cfg("eval.note=Longer training gives more BLEU."), progress=False)
    assert _outputs(run_dir) == before and noted["note"] == "Longer training gives more BLEU."
    assert "Longer training gives more BLEU." in (run_dir / "summary.md").read_text()

    # A tighter parameter budget than the old winner: searched again under the same budget name, and the
    # winner respects it (the old code returned the old winner, its JSON still saying max_params: 0).
    smallest = _rows(first)["smallest"]["parameters"]
    limit = (smallest + searched["parameters"]) // 2
    assert smallest < limit < searched["parameters"]
    tight = run(tiny_cfg(f"search.max_params={limit}"), progress=False)
    err = capsys.readouterr().err
    assert f"search {budget}: redone (search.max_params changed 0 -> {limit})" in err
    found = read_json(run_dir / "search" / f"{budget}.json")
    assert found["max_params"] == limit and found["made_from"]["search"]["max_params"] == limit
    row = _rows(tight)[budget]
    assert row["parameters"] <= limit and row["max_params"] == limit
    assert read_json(run_dir / "export" / budget / "arch.json") == found["evolution"]["arch"]
    # the reference subnets did not depend on the search budget: not redone
    assert (run_dir / "export" / "largest" / "export.json").stat().st_mtime_ns == before["export/largest/export.json"]

    # Changed decode and eval settings re-score every subnet (and nothing upstream of the scores).
    before = _outputs(run_dir)
    scored = run(
        tiny_cfg(f"search.max_params={limit}", "decode.beam=1", "eval.limit=5", "eval.bleu_tokenize=char"),
        progress=False,
    )
    assert "evaluation of largest on test_2016_flickr: redone (decode.beam changed 2 -> 1" in capsys.readouterr().err
    for r in scored["results"]:
        assert r["beam"] == 1 and r["sentences"] == 5 and "tok:char" in r["bleu_signature"], r["name"]
        ev = read_json(run_dir / r["model_dir"] / "eval.test_2016_flickr.json")  # a fallback's own folder
        assert ev["made_from"]["eval"] == {"limit": 5, "bleu_tokenize": "char"}
    unchanged = [k for k in before if "eval." not in k and "hyp." not in k]
    assert all(_outputs(run_dir)[k] == before[k] for k in unchanged)


@pytest.mark.slow
def test_latency_command_measures_the_samples_it_is_asked_for(tiny_cfg, capsys):
    cfg = tiny_cfg()
    run(cfg, progress=False)
    samples_file = cfg.run_dir / "latency" / "samples.jsonl"
    old = samples_file.read_text().splitlines()
    assert main(["search", str(cfg.run_dir), "--latency-ms", "1000", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["latency", str(cfg.run_dir), "--samples", "14", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "latency predictor: redone (latency.num_samples changed 12 -> 14)" in out.err
    report = read_json(cfg.run_dir / "latency" / "report.json")
    assert report["train_samples"] + report["heldout_samples"] == 14
    assert "mlp    held-out (3 archs; 11 measurements)" in out.out and "noise floor" in out.out
    new = samples_file.read_text().splitlines()
    archs = [x for x in new if '"reference": true' not in x]  # each group of archs is followed by the reference
    assert len(archs) == 14 and new[: len(old)] == old  # the arch list is seeded: only the missing 2 were measured
    # A search under a latency budget reads the predictor: refitted, its old result is stale.
    assert main(["search", str(cfg.run_dir), "--latency-ms", "1000", "--quiet"]) == 0
    assert "search latency-1000ms: redone (predictor.latency.num_samples changed 12 -> 14)" in capsys.readouterr().err
    # Fewer samples: a prefix of those measured, nothing measured again.
    assert main(["latency", str(cfg.run_dir), "--samples", "10", "--quiet"]) == 0
    assert read_json(cfg.run_dir / "latency" / "report.json")["heldout_samples"] == 2
    assert samples_file.read_text().splitlines() == new
    # A timing setting makes every sample stale: all measured again.
    run(tiny_cfg("latency.repeats=3"), progress=False)
    assert "latency samples: redone (latency.repeats changed 2 -> 3)" in capsys.readouterr().err
    remeasured = [json.loads(x) for x in samples_file.read_text().splitlines()]
    assert sum(not s.get("reference") for s in remeasured) == 12
    assert all(s["settings"]["repeats"] == 3 for s in remeasured)


@pytest.mark.slow
def test_force_with_another_generator_leaves_nothing_of_the_old_supernet(tiny_cfg):
    cfg = tiny_cfg()
    run(cfg, progress=False)
    old = _outputs(cfg.run_dir)
    shared = tiny_cfg("supernet.generator=shared")
    results = run(shared, force=True, progress=False)
    new = _outputs(cfg.run_dir)
    assert all(new.get(k, 0) > t for k, t in old.items() if k in new)  # everything there was made again
    checkpoint = json.loads(sorted((cfg.run_dir / "checkpoints").glob("ckpt-*/state.json"))[-1].read_text())
    assert results["generator"] == "shared"
    for r in results["results"]:
        made = read_json(cfg.run_dir / r["model_dir"] / "export.json")
        assert made["generator"] == "shared" and made["made_from"]["checkpoint"] == {
            "step": checkpoint["step"],
            "model_sha256": checkpoint["sha256"]["model.safetensors"],
        }
    assert read_json(cfg.run_dir / "latency" / "report.json")["made_from"]["checkpoint"]["step"] == checkpoint["step"]


@pytest.mark.slow
def test_a_failed_evaluation_leaves_nothing_trusted(tiny_cfg):
    cfg = tiny_cfg()
    run(cfg, progress=False)
    with pytest.raises(DataError):
        run(tiny_cfg("eval.split=test_missing"), progress=False)
    assert not (cfg.run_dir / "results.json").exists() and not (cfg.run_dir / "summary.md").exists()
    assert not list((cfg.run_dir / "export").rglob("eval.test_missing.json"))
    fixed = run(tiny_cfg("eval.split=val"), progress=False)
    assert {r["split"] for r in fixed["results"]} == {"val"}
    assert (cfg.run_dir / "results.json").is_file()


@pytest.mark.slow
def test_more_training_makes_every_derived_output_stale(tiny_cfg, capsys):
    cfg = tiny_cfg()
    run(cfg, progress=False)
    train(tiny_cfg("train.max_steps=8"), resume=True, show_progress=False)
    capsys.readouterr()
    # a stage command refuses the predictor of the old checkpoint (one line) rather than searching with it
    assert main(["search", str(cfg.run_dir), "--latency-ms", "1000", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mosnas: error: the latency predictor is stale (checkpoint step changed 6 -> 8)")
    assert len(err.splitlines()) == 1
    results = run(tiny_cfg("train.max_steps=8"), progress=False)
    assert results["steps"] == 8
    for r in results["results"]:
        assert read_json(cfg.run_dir / r["model_dir"] / "export.json")["made_from"]["checkpoint"]["step"] == 8
    assert read_json(cfg.run_dir / "latency" / "report.json")["made_from"]["checkpoint"]["step"] == 8
    assert "latency predictor: redone (checkpoint.step changed 6 -> 8" in capsys.readouterr().err


@pytest.mark.slow
def test_finetune_folders_follow_their_inputs(tiny_cfg, capsys):
    settings = ("finetune.steps=2", "finetune.valid_every=1", "finetune.valid_bleu=4")
    cfg = tiny_cfg(*settings)
    first = run(cfg, progress=False)
    tuned = next(r for r in first["results"] if r["kind"] == "finetuned")
    budget = tuned["name"].split(" ")[0]
    log = cfg.run_dir / "finetune" / budget / "train_log.jsonl"
    trained_at, before = log.stat().st_mtime_ns, _outputs(cfg.run_dir)
    run(cfg, progress=False)  # a plain re-run touches nothing, fine-tuning included
    assert _outputs(cfg.run_dir) == before
    capsys.readouterr()
    # decode settings re-score the fine-tuned model, not fine-tune it again
    rescored = run(tiny_cfg(*settings, "decode.beam=1"), progress=False)
    assert log.stat().st_mtime_ns == trained_at and "finetune" not in capsys.readouterr().err
    assert all(r["beam"] == 1 for r in rescored["results"])
    # bookkeeping (how often to log, threads) changes no result: nothing is fine-tuned again
    run(tiny_cfg(*settings, "decode.beam=1", "train.log_every=1", "train.threads=2"), progress=False)
    assert log.stat().st_mtime_ns == trained_at and "finetune" not in capsys.readouterr().err
    # another recipe: the folder is redone, not refused as "a different run"
    again = run(tiny_cfg(*settings, "decode.beam=1", "finetune.lr=0.001"), progress=False)
    assert f"finetune {budget}: redone (config.train.lr changed 0.0005 -> 0.001)" in capsys.readouterr().err
    assert log.stat().st_mtime_ns > trained_at
    assert len([r for r in again["results"] if r["kind"] == "finetuned"]) == 1
