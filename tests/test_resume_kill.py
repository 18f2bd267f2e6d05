"""Exact resume: SIGKILL training at random moments, resume, and get the uninterrupted run's losses."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from mosnas.engine.checkpoint import list_checkpoints
from tests.conftest import DATA, ROOT

ARGS = [
    "configs/tiny.yaml",
    f"data.dir={DATA}",
    "train.max_steps=30",
    "train.log_every=1",
    "train.ckpt_every=1",
    "train.valid_every=4",
    "train.keep_last=2",
    "train.precision=fp32",
    "train.threads=1",
    "--quiet",
]


def _train(out_dir, *extra):
    return [sys.executable, "-m", "mosnas", "train", *ARGS, f"out_dir={out_dir}", *extra]


def _records(run_dir):
    return [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_and_resume_gives_identical_losses(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    straight = tmp_path / "a"
    subprocess.run(_train(straight), cwd=ROOT, check=True, env=env, capture_output=True, timeout=600)
    killed = tmp_path / "b"
    rng = random.Random(7)
    log = killed / "tiny" / "train_log.jsonl"
    done_steps = lambda: sum('"loss_largest"' in x for x in log.read_text().splitlines()) if log.is_file() else 0
    for kill in range(3):  # kill a few steps into each attempt, at a random moment within a step
        proc = subprocess.Popen(
            _train(killed, "--resume"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        target, deadline = done_steps() + rng.randint(1, 4), time.time() + 300
        while done_steps() < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next step (or its checkpoint write)
        assert proc.poll() is None, f"attempt {kill} ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done_steps() < 30
    subprocess.run(_train(killed, "--resume"), cwd=ROOT, check=True, env=env, capture_output=True, timeout=600)
    a, b = _losses(_records(straight / "tiny")), _losses(_records(killed / "tiny"))
    assert len([x for x in a if x[1][0] is not None]) == 30  # one training record per step
    assert a == b
    assert not list((killed / "tiny" / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint left
    wa = load_file(str(list_checkpoints(straight / "tiny")[-1] / "model.safetensors"))
    wb = load_file(str(list_checkpoints(killed / "tiny")[-1] / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _losses(records):
    """Losses, validation NLLs and learning rate per step: everything but timings must match."""
    keys = ("loss_largest", "loss_smallest", "loss_random", "lr", "valid_nll_largest", "valid_nll_smallest")
    return [(r["step"], tuple(r.get(k) for k in keys)) for r in records if any(k in r for k in keys)]
