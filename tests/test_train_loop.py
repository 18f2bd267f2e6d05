"""The training loop's schedule, gradient accumulation and stop decisions (single process and torchrun)."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from mosnas.config import load_config
from mosnas.engine.checkpoint import checkpoint_step, list_checkpoints, read_checkpoint
from mosnas.engine.train import lr_lambda, train
from tests.conftest import DATA, ROOT, TINY_SPACE, torchrun_train

TINY = ROOT / "configs" / "tiny.yaml"


def _lrs(n: int, *args) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(*args))
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])  # the rate this update runs at
        opt.step()
        sched.step()
    return out


def test_warmup_gives_every_update_its_own_rate():
    lrs = _lrs(8, 4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # the first two updates no longer share a rate
    assert lrs[4:] == pytest.approx([math.sqrt(4 / n) for n in (5, 6, 7, 8)])  # inverse sqrt of the update count


def test_cosine_schedule_reaches_min_lr_at_max_steps():
    lrs = _lrs(12, 2, "cosine", 10, 0.1)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert all(a > b for a, b in zip(lrs[1:9], lrs[2:10]))  # decays after the peak
    assert lrs[9] == pytest.approx(0.1) and lrs[10:] == pytest.approx([0.1, 0.1])  # update 10 = max_steps: floor


def _cfg(out, *extra):
    return load_config(
        TINY,
        [f"out_dir={out}", f"data.dir={DATA}", f"supernet.space={TINY_SPACE}", "supernet.dropout=0", *extra],
    )


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    train(_cfg(out, "train.max_steps=1", "train.log_every=1", "train.update_freq=1"), show_progress=False)


def _first_step(run_dir) -> dict:
    return next(json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines() if '"grad_norm"' in x)


@pytest.mark.slow  # ~25 s: two spawned ranks and two single-process runs
def test_update_freq_accumulates_the_same_global_batch_as_two_ranks(tmp_path):
    # update_freq=2 in one process and 2 ranks x update_freq=1 both train on batches 0 and 1 of an epoch
    # as one update: same losses and the same gradient (its norm, before any optimizer noise).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank, args=(port, str(tmp_path / "ddp")), nprocs=2, join=True)
    single = train(_cfg(tmp_path / "acc", "train.max_steps=1", "train.log_every=1", "train.update_freq=2"), False)
    one = train(_cfg(tmp_path / "one", "train.max_steps=1", "train.log_every=1"), False)
    ddp, acc, plain = _first_step(tmp_path / "ddp" / "tiny"), _first_step(single), _first_step(one)
    for key in ("loss_largest", "loss_smallest", "loss_random", "grad_norm"):
        assert acc[key] == pytest.approx(ddp[key], rel=1e-5), key
    assert acc["loss_largest"] != pytest.approx(plain["loss_largest"], rel=1e-5)  # really a different batch
    meta, _, _ = read_checkpoint(list_checkpoints(single)[-1])
    assert meta["position"] == 2  # two batches consumed by one update


@pytest.mark.slow
def test_torchrun_time_budget_stops_every_rank_together(tmp_path):
    # Rank 0 validates after every step while rank 1 waits in the next collective: with per-rank clocks
    # rank 1 reached the budget first and left rank 0 alone in a collective, a hang (no progress for 55 s).
    result = torchrun_train(
        tmp_path, "train.max_steps=100000", "train.max_minutes=0.04", "train.valid_every=1", "train.ckpt_every=1000"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("trained supernet saved") == 2  # both ranks left the loop and finished
    ckpts = list_checkpoints(tmp_path / "tiny")
    meta, _, _ = read_checkpoint(ckpts[-1])
    assert meta["elapsed"] >= 0.04 * 60 and meta["world_size"] == 2
    log = [json.loads(x) for x in (tmp_path / "tiny" / "train_log.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in log) == checkpoint_step(ckpts[-1])  # the final step was checkpointed


@pytest.mark.slow
def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    cmd = [sys.executable, "-m", "mosnas", "train", str(TINY), f"out_dir={tmp_path}", f"data.dir={DATA}"]
    cmd += ["train.max_steps=100000", "train.log_every=1", "train.valid_every=1000", "train.ckpt_every=1000"]
    proc = subprocess.Popen([*cmd, "--quiet"], cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    log = tmp_path / "tiny" / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("grad_norm") >= 2):
        assert proc.poll() is None, proc.communicate()[1]  # still training
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143  # 128 + SIGTERM, as a shell reports it; Ctrl-C gives 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mosnas: stopped by SIGTERM at step "), err
    step = int(lines[0].split("at step ")[1].split(";")[0])
    assert step >= 2 and checkpoint_step(list_checkpoints(tmp_path / "tiny")[-1]) == step
    again = subprocess.run(
        [*cmd, f"train.max_steps={step + 1}", "--resume", "--quiet"], cwd=ROOT, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr  # and the run continues from there
    assert checkpoint_step(list_checkpoints(tmp_path / "tiny")[-1]) == step + 1


def test_wmt14_config_is_hats_recipe():
    cfg = load_config(ROOT / "configs" / "wmt14_ende_hat.yaml")
    tc = cfg.train
    assert (tc.schedule, tc.warmup, tc.max_steps, tc.lr, tc.min_lr) == ("cosine", 10000, 40000, 1e-3, 1e-7)
    assert 8 * cfg.data.max_tokens * tc.update_freq == 524_288  # ~0.5M tokens per update on 8 GPUs
    assert (tc.betas, tc.clip_norm, tc.weight_decay) == ((0.9, 0.98), 0.0, 0.0)


def test_a_run_that_spent_its_wall_budget_is_finished(tmp_path):
    # The step that crosses max_minutes is rarely a logged one (log_every): the checkpoint's own clock decides.
    from mosnas.engine.run_folder import needs_training

    cfg = _cfg(tmp_path, "train.max_steps=100000", "train.max_minutes=0.01", "train.log_every=1000")
    train(cfg, show_progress=False)
    assert not any('"elapsed_s"' in x for x in (tmp_path / "tiny" / "train_log.jsonl").read_text().splitlines())
    assert not needs_training(cfg)  # a re-run of `mosnas run` does not reopen it
