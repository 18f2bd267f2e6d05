"""A researcher's frictions: one writer per run folder, a failed start that leaves nothing in the way, help
that suggests the right spelling, numbers as reports print them, the config reference, quiet pipes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mosnas.cli.main import main
from mosnas.config import Config, load_config, parse_setting
from mosnas.config.reference import markdown, rows
from mosnas.engine.run_folder import prepare_run_dir
from mosnas.errors import ConfigError
from mosnas.workspace.lock import LOCK_NAME, holder, lock_run
from tests.conftest import DATA, ROOT

TINY = ROOT / "configs" / "tiny.yaml"


def _hold_lock(folder):
    """Another process holding the folder's lock (it sleeps until killed)."""
    code = (
        f"from mosnas.workspace.lock import lock_run; lock_run({str(folder)!r}); print('locked', flush=True); input()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"locked"
    return proc


def test_second_writer_of_a_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    folder = tmp_path / "tiny"
    folder.mkdir()
    proc = _hold_lock(folder)
    try:
        rc = main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert f"pid {proc.pid}" in err[0] and "in use by" in err[0]
        assert not (folder / "config.yaml").exists()  # nothing read or written by the refused writer
        for command in (["latency", str(folder)], ["search", str(folder), "--latency-ms", "5"]):
            assert main(command) == 2
            assert "in use by" in capsys.readouterr().err
    finally:
        proc.kill()
        proc.wait()
    assert lock_run(folder)  # the kernel released the killed holder's lock: no stale lock
    assert f"pid {__import__('os').getpid()}" in holder(folder)


def test_a_refused_start_leaves_no_folder_behind(tmp_path, capsys):
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "notes.txt").write_text("mine")  # a folder that is not a run
    other = tmp_path / "other"
    rc = main(["train", str(TINY), f"out_dir={tmp_path}", "name=tiny", f"data.dir={DATA}", "--quiet"])
    assert rc == 2 and "is not a mosnas run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == [LOCK_NAME, "notes.txt"]
    assert not other.exists()


def test_a_start_that_failed_before_training_does_not_block_the_corrected_command(tmp_path):
    first = load_config(TINY, [f"out_dir={tmp_path}", f"data.dir={DATA}", "train.lr=1e-3"])
    prepare_run_dir(first, resume=False, force=False)  # the folder, config and space written; no training
    corrected = load_config(TINY, [f"out_dir={tmp_path}", f"data.dir={DATA}", "train.lr=2e-3"])
    prepare_run_dir(corrected, resume=False, force=False)  # not "a different run": nothing was trained
    assert "lr: 0.002" in (tmp_path / "tiny" / "config.yaml").read_text()
    (tmp_path / "tiny" / "train_log.jsonl").write_text('{"step": 1}\n')  # once training began, it is a run
    with pytest.raises(ConfigError, match="holds a different run"):
        prepare_run_dir(first, resume=False, force=False)


@pytest.mark.parametrize(
    "argv, suggestion",
    [
        (["trian", "x"], "did you mean train?"),
        (["train", str(TINY), "--froce"], "did you mean --force?"),
        (["train", str(TINY), "train.lrr=1e-3"], "did you mean train.lr?"),
        (["train", str(TINY), "supernet.generator=nueron"], "did you mean neuron?"),
        (["config", "sarch"], "did you mean search?"),
        (["train", str(TINY), "--max-steps", "4"], "as a config setting: train.max_steps=VALUE"),
        (["evaluate", "MODEL", "--bem", "3"], "did you mean --beam?"),  # this command's options, not another's
    ],
)
def test_typos_get_a_suggestion(argv, suggestion, capsys, tmp_path):
    assert main([*argv, f"out_dir={tmp_path}"] if argv[0] == "train" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and suggestion in err[0], err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("search.max_params", "30k", 30_000),
        ("search.max_params", "0.5M", 500_000),
        ("search.max_flops", "1.2G", 1_200_000_000),
        ("search.max_params", "1,500,000", 1_500_000),
        ("search.latency_ms", "80", 80.0),
        ("train.lr", "5e-4", 5e-4),
    ],
)
def test_budgets_accept_the_forms_reports_print(key, text, value):
    assert parse_setting(key, text) == value


def test_a_fraction_of_a_unit_is_still_refused_for_a_count():
    with pytest.raises(ConfigError, match="expected int"):
        parse_setting("search.max_params", "2.5")


def test_version_and_help_list_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("mosnas ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "train", "latency", "search", "export", "finetune", "translate", "evaluate", "config"):
        assert f"    {command} " in out or f"    {command}\n" in out, command


def test_the_config_reference_lists_every_key_with_its_default():
    keys = {r["key"]: r for r in rows()}
    flat = Config().to_dict()
    for section, values in flat.items():
        if isinstance(values, dict):
            for key in values:
                assert f"{section}.{key}" in keys, f"{section}.{key}"
        else:
            assert section in keys
    assert keys["train.lr"]["default"] == "0.001" and keys["train.lr"]["valid"] == "> 0"
    assert "neuron" in keys["supernet.generator"]["valid"]
    assert keys["train.update_freq"]["meaning"].startswith("batches accumulated")
    page = markdown()
    assert page.count("\n| `") == len(keys)
    assert (ROOT / "docs" / "config.md").read_text() == page, "docs/config.md is stale: mosnas config --markdown"


def test_output_piped_into_head_ends_quietly():
    shell = f"{sys.executable} -m mosnas config | head -n 1"
    out = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.count("\n") == 1 and out.stderr == "", out.stderr


def test_report_rebuilds_the_summary_with_work_done_by_hand(tmp_path, capsys):
    args = [f"out_dir={tmp_path}", f"data.dir={DATA}"]
    assert main(["train", str(TINY), *args, "--quiet"]) == 0
    run = tmp_path / "tiny"
    assert main(["export", str(run), "--arch", "smallest"]) == 0  # by hand, outside `mosnas run`
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    summary = (run / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| smallest |"))
    assert row.endswith("| - | - |")  # not scored yet: no BLEU made up
    assert "rebuilt" in out and (run / "train_curve.png").stat().st_size > 1000
    assert main(["report", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_translate_streams_each_stdin_line_as_soon_as_it_is_translated(tmp_path):
    assert main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet"]) == 0
    assert main(["export", str(tmp_path / "tiny"), "--arch", "smallest"]) == 0
    cmd = [sys.executable, "-m", "mosnas", "translate", str(tmp_path / "tiny" / "export" / "smallest"), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"A man is walking.\r\n")
        proc.stdin.flush()  # stdin stays open: the answer must come before the input ends
        first = proc.stdout.readline()
        assert first.endswith(b"\n") and b"\r" not in first
        proc.stdin.write("Two dogs \u2028play.\n".encode())  # a line separator stays inside its line
        proc.stdin.close()
        rest = proc.stdout.read()
        assert rest.count(b"\n") == 1, rest
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_latency_budgets_are_easy_to_choose(tmp_path, capsys):
    assert main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet"]) == 0
    run = tmp_path / "tiny"
    assert main(["latency", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "search accepts latency budgets from" in out and "--latency-fraction" in out
    assert "warning: only" in out  # tiny.yaml holds out 2-3 archs: their tau means little, and it says so
    assert main(["search", str(run), "--latency-fraction", "0.5", "--quiet"]) == 0
    assert (run / "export" / "latency-frac0.5" / "export.json").is_file()
    capsys.readouterr()
    assert main(["search", str(run), "--quiet"]) == 0  # no budget option: the config's (latency_fractions [0.5])
    assert "== search latency-frac0.5 (from the run's config)" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "search").glob("*.json")) == ["latency-frac0.5.json"]  # the same folder


def test_exports_by_hand_never_replace_another_arch(tmp_path, capsys):
    assert main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}", "--quiet"]) == 0
    run = tmp_path / "tiny"
    import random

    from mosnas.engine.load import load_run

    space = load_run(run).space
    small = space.smallest().to_json()
    other = next(a.to_json() for a in (space.sample(random.Random(i)) for i in range(50)) if a.to_json() != small)
    assert main(["export", str(run), "--arch", small]) == 0
    assert main(["export", str(run), "--arch", other]) == 0  # another arch: another folder
    assert len(list((run / "export").glob("arch-*"))) == 2
    assert main(["export", str(run), "--arch", small]) == 0  # the same arch again: its own folder, reused
    assert len(list((run / "export").glob("arch-*"))) == 2
    target = next((run / "export").glob("arch-*"))
    capsys.readouterr()
    assert main(["export", str(run), "--arch", "largest", "--out", str(target)]) == 2
    assert "holds another arch's export" in capsys.readouterr().err


def test_a_finished_run_keeps_the_budget_it_trained_to(tmp_path):
    from mosnas.engine.run_folder import adopt_config

    assert main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}", "train.max_steps=8", "--quiet"]) == 0
    shorter = load_config(TINY, [f"out_dir={tmp_path}", f"data.dir={DATA}", "decode.beam=3"])  # max_steps 6
    adopt_config(shorter)  # what `mosnas run` does on a trained run: the stage settings are adopted
    saved = (tmp_path / "tiny" / "config.yaml").read_text()
    assert "max_steps: 8" in saved and "beam: 3" in saved


@pytest.mark.slow
def test_a_moved_corpus_is_given_with_data_to_search_and_finetune(tmp_path, capsys):
    """The commands that read a run's corpus after training (search: validation pairs; finetune: training pairs)
    take --data like train and run; without it the error names the folder looked in and the option, one line;
    a --data that is not a folder is refused before any work."""
    corpus = tmp_path / "corpus"
    corpus.symlink_to(DATA, target_is_directory=True)
    assert main(["train", str(TINY), f"out_dir={tmp_path}", f"data.dir={corpus}", "--quiet"]) == 0
    run = tmp_path / "tiny"
    corpus.unlink()  # the corpus moved
    capsys.readouterr()
    search = ["search", str(run), "--max-params", "10M", "--quiet"]
    assert main(search) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(corpus) in err and "--data" in err, err
    assert not (run / "export" / "params-10M").exists()
    assert main([*search, "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nowhere (--data)" in err, err
    assert main([*search, "--data", str(DATA)]) == 0
    model = run / "export" / "params-10M"
    assert (model / "export.json").is_file()
    tune = ["finetune", str(model), "--steps", "2", "--valid-bleu", "0", "--quiet"]
    assert main(tune) == 2 and "--data" in capsys.readouterr().err
    assert main([*tune, "--data", str(DATA)]) == 0
    assert (run / "finetune" / "params-10M-ft" / "export" / "export.json").is_file()
