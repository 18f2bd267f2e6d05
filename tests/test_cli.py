"""The command line as a user meets it: one-line errors, non-zero exits, and the whole job."""

import json
import subprocess
import sys

import pytest

from tests.conftest import DATA, ROOT


def mosnas(*args, cwd=ROOT, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "mosnas", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=600,
    )


def _one_line_error(result, fragment):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosnas: error:") and fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "missing.yaml"], "config file not found: missing.yaml"),
        (["train", "configs/tiny.yaml", "train.nope=1"], "unknown config key in section 'train': train.nope"),
        (["train", "configs/tiny.yaml", "supernet.generator=moe"], "unknown value 'moe'"),
        (
            ["train", "configs/tiny.yaml", "supernet.space=nope.yaml"],
            f"search-space file not found: {ROOT / 'nope.yaml'}",
        ),
        (["train", "configs/tiny.yaml", "--data", "/nonexistent/corpus"], "data directory not found"),
        (["export", "/nonexistent/run", "--arch", "largest"], "is not a mosnas run folder"),
        (["evaluate", "/nonexistent/model"], "is not an exported model folder"),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, args, fragment):
    _one_line_error(mosnas(*args, f"out_dir={tmp_path}") if args[0] == "train" else mosnas(*args), fragment)


@pytest.mark.slow
def test_train_export_translate_evaluate(tmp_path):
    run = mosnas("run", "configs/tiny.yaml", f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet")
    assert run.returncode == 0, run.stderr
    assert "| largest |" in run.stdout and "BLEU signature: `nrefs:1" in run.stdout
    run_dir = tmp_path / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert [r["name"] for r in results["results"]][:2] == ["largest", "smallest"]
    assert results["results"][2]["kind"] == "search" and (run_dir / "pareto.png").stat().st_size > 1000
    searched = results["results"][2]
    assert searched["predicted_latency_ms"] <= searched["budget_ms"]  # the winner fits the budget it was given

    arch = run_dir / "arch.json"
    arch.write_text(json.dumps({**results["results"][1]["arch"], "decoder_ffn_dims": [48]}))
    out = mosnas("export", run_dir, "--arch", arch, "--out", tmp_path / "m")
    assert out.returncode == 0, out.stderr
    tr = mosnas("translate", tmp_path / "m", "--beam", "2", "--threads", "1", stdin="A dog runs.\nTwo men.\n")
    assert tr.returncode == 0 and len(tr.stdout.splitlines()) == 2, tr.stderr
    ev = mosnas("evaluate", tmp_path / "m", "--data", DATA, "--split", "val", "--limit", "5", "--beam", "2")
    assert ev.returncode == 0 and "BLEU signature: nrefs:1" in ev.stdout, ev.stderr
    assert json.loads((tmp_path / "m" / "eval.val.json").read_text())["sentences"] == 5

    bad = run_dir / "bad.json"
    bad.write_text(json.dumps({**results["results"][1]["arch"], "decoder_ffn_dims": [50]}))
    _one_line_error(mosnas("export", run_dir, "--arch", bad), "decoder_ffn_dims[0] = 50 is outside space 'tiny'")
    # Running again continues (nothing to do) and keeps the results; a different config is refused.
    again = mosnas("run", "configs/tiny.yaml", f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet")
    assert again.returncode == 0, again.stderr
    _one_line_error(
        mosnas("train", "configs/tiny.yaml", f"out_dir={tmp_path}", f"data.dir={DATA}", "train.lr=1"),
        "holds a different run",
    )


def test_decoding_threads_are_set_and_checked():
    """translate/evaluate --threads N sets torch's intra-op threads (0 leaves them); a negative count is refused."""
    import torch

    from mosnas.commands import _set_threads
    from mosnas.errors import ConfigError

    before = torch.get_num_threads()
    try:
        _set_threads(0)
        assert torch.get_num_threads() == before
        _set_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ConfigError, match="--threads must be >= 0, got -2"):
            _set_threads(-2)
    finally:
        torch.set_num_threads(before)
