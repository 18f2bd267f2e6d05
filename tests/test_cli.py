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
def test_bad_input_gives_one_line_error(tmp_path, capsys, args, fragment):
    """In this process (the CLI's `main`, as the `mosnas` script calls it): the same exit code and stderr as a
    subprocess, without paying torch's import for every row; the commands below run as subprocesses."""
    from mosnas.cli.main import main

    code = main([*args, f"out_dir={tmp_path}"] if args[0] == "train" else list(args))
    _one_line_error(subprocess.CompletedProcess(args, code, "", capsys.readouterr().err), fragment)


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

    from mosnas.cli.model import _set_threads
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


@pytest.mark.parametrize("command", [["autodistil"], []], ids=["mosnas autodistil", "python -m mosnas.autodistil"])
def test_autodistil_and_its_deprecated_alias_refuse_bad_input_in_one_line(command):
    """`mosnas autodistil` checks its config before any work; the 0.1 spelling `python -m mosnas.autodistil`
    runs the same command after one warning line."""
    space = "configs/spaces/bert_autodistil_tiny.yaml"
    module = ["-m", "mosnas"] if command else ["-m", "mosnas.autodistil"]
    result = subprocess.run(
        [sys.executable, *module, *command, "missing.yaml", space], cwd=ROOT, capture_output=True, text=True
    )
    lines = result.stderr.strip().splitlines()
    if not command:
        assert (
            lines[0]
            == "mosnas: warning: python -m mosnas.autodistil is deprecated; use `mosnas autodistil` (same arguments)"
        )
        lines = lines[1:]
    assert result.returncode == 2 and lines == ["mosnas: error: config file not found: missing.yaml"], result.stderr
    no_space = subprocess.run(
        [sys.executable, *module, *command, "configs/bert_autodistil.yaml"], cwd=ROOT, capture_output=True, text=True
    )
    assert no_space.returncode == 2 and "SPACE" in no_space.stderr.strip().splitlines()[-1]


def test_the_old_autodistil_module_forwards_its_python_names_with_a_warning():
    import mosnas.autodistil as old
    from mosnas.pipeline.autodistil import run_autodistil

    with pytest.warns(DeprecationWarning, match="moved to mosnas.pipeline.autodistil.run_autodistil"):
        assert old.run_autodistil is run_autodistil


@pytest.mark.parametrize(
    "config, budget, fragment",
    [
        ("configs/tiny.yaml", "search.max_params=100", "satisfies params <= 100 (smallest arch: 15,344)"),
        (
            "configs/bert_tiny.yaml",
            "search.params_budgets=[1000]",
            "satisfies params <= 1,000 (smallest arch: 499,104)",
        ),
    ],
)
def test_a_budget_below_the_smallest_arch_is_refused_before_training(tmp_path, capsys, config, budget, fragment):
    from mosnas.cli.main import main

    code = main(
        [
            "run",
            config,
            budget,
            f"out_dir={tmp_path}",
            f"data.dir={DATA}" if "bert" not in config else "name=b",
            "--quiet",
        ]
    )
    _one_line_error(subprocess.CompletedProcess([], code, "", capsys.readouterr().err), fragment)
    assert not list(tmp_path.rglob("checkpoints")) and not list(tmp_path.rglob("train_log.jsonl"))


def test_a_missing_argument_message_names_only_what_is_required(capsys):
    """Every command run with nothing: the error lists required arguments only (argparse also lists an optional
    positional such as `mosnas run`'s overrides when an earlier one is missing)."""
    import argparse

    from mosnas.cli.main import _parser, main

    (sub,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    for command, parser in sub.choices.items():
        optional = {a.metavar or a.dest for a in parser._actions if a.nargs in ("*", "?") or not a.required}
        required = {a.metavar or a.dest for a in parser._actions if a.required and a.nargs not in ("*", "?")}
        required |= {o for a in parser._actions if a.required and a.option_strings for o in a.option_strings}
        code = main([command])
        err = capsys.readouterr().err.strip()
        if code == 0:  # nothing is required (mosnas config lists every key)
            assert not required, command
            continue
        assert code == 2, (command, code)
        assert err.startswith("mosnas: error:") and err.count("\n") == 0, (command, err)
        if "are required:" in err:
            named = {n.strip() for n in err.split("required:")[1].split("(see")[0].split(",")}
            assert named <= required and not named & (optional - required), (command, named)
