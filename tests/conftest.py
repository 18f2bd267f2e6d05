from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mosnas import mt
from mosnas.config import SupernetConfig, load_config
from mosnas.core.supernet import Supernet
from mosnas.mt.space import load_space

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
TINY_SPACE = ROOT / "configs" / "spaces" / "tiny.yaml"

torch.set_num_threads(1)  # tiny models: one thread is fastest and never oversubscribes a busy machine


@pytest.fixture(autouse=True)
def _chdir_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name paths relative to the repository root
    torch.manual_seed(0)


@pytest.fixture
def space():
    return load_space(TINY_SPACE)


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(*overrides: str):
        return load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={tmp_path}", f"data.dir={DATA}", *overrides])

    return make


def make_supernet(space, generator="neuron", vocab=100, **kw) -> Supernet:
    kw.setdefault("router_hidden", 16)
    kw.setdefault("dropout", 0.0)
    return Supernet(space, vocab, SupernetConfig(generator=generator, **kw), mt)


class SpmModel:
    def __init__(self, path: Path):
        from mosnas.mt.data import load_tokenizer

        self.path = path
        self.processor = load_tokenizer(path)
        self.vocab = self.processor.get_piece_size()


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> SpmModel:
    """A real sentencepiece model trained on the first 500 Multi30k training pairs."""
    from mosnas.config import DataConfig
    from mosnas.mt.data import read_parallel, train_tokenizer

    src, tgt = read_parallel(DataConfig(dir=str(DATA)), "train", limit=500)
    path = tmp_path_factory.mktemp("spm") / "spm.model"
    train_tokenizer(src + tgt, 200, path)
    return SpmModel(path)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory) -> Path:
    """A tiny supernet trained for 8 steps, shared by tests that read (never damage) a trained run."""
    from mosnas.engine.train import train

    out = tmp_path_factory.mktemp("runs")
    cfg = load_config(
        ROOT / "configs" / "tiny.yaml",
        [f"out_dir={out}", f"data.dir={DATA}", f"supernet.space={TINY_SPACE}", "train.max_steps=8"],
    )
    return train(cfg, show_progress=False)


def torchrun_train(out_dir, *overrides: str, timeout: int = 600):
    """`torchrun --standalone --nproc_per_node=2 -m mosnas train configs/tiny.yaml` (gloo, 1 thread each)."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mosnas"]
    cmd += ["train", str(ROOT / "configs" / "tiny.yaml"), f"out_dir={out_dir}", f"data.dir={DATA}", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
