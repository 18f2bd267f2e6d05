"""DDP: 2 ranks x batch B make the same update as 1 process with batch 2B (gloo, CPU)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from mosnas import mt
from mosnas.config import DataConfig, SupernetConfig
from mosnas.core.supernet import Supernet
from mosnas.engine.distributed import Distributed, sum_gradients
from mosnas.engine.schedule import step_archs
from mosnas.mt.data import load_parallel, load_tokenizer
from mosnas.mt.space import load_space
from mosnas.mt.task import train_step
from tests.conftest import DATA, TINY_SPACE, torchrun_train


def _setup(spm_path):
    torch.manual_seed(0)
    space = load_space(TINY_SPACE)
    sp = load_tokenizer(spm_path)
    data, _ = load_parallel(DataConfig(dir=str(DATA), max_tokens=300), "val", sp, limit=120)
    net = Supernet(space, sp.get_piece_size(), SupernetConfig(generator="neuron", router_hidden=16, dropout=0.0), mt)
    # SGD: the update is the gradient itself. (Adam would blow up float noise in gradients that are
    # exactly zero in math, such as the key-projection biases, into full-size steps of random sign.)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    shares = data.batches(0)[:2]
    return space, data, net, opt, shares


def _update(space, net, opt, batch, tokens, ddp):
    archs = step_archs(space, "sandwich", 1, seed=1, step=0)
    train_step(net, batch, archs, 0.1, 0.0, torch.device("cpu"), False, tokens)
    sum_gradients(list(net.parameters()), ddp)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def _rank(rank, world, init_file, spm_path, out_dir):
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    space, data, net, opt, shares = _setup(spm_path)
    ddp = Distributed()
    batch = data.collate(shares[rank])
    tokens = ddp.sum(torch.tensor(float(batch.num_tokens)))
    _update(space, net, opt, batch, tokens, ddp)
    save_file(net.state_dict(), os.path.join(out_dir, f"rank{rank}.safetensors"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_double_batch(tmp_path, spm_model):
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(spm_model.path), str(tmp_path)), nprocs=2, join=True)
    space, data, net, opt, shares = _setup(spm_model.path)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    combined = data.collate(shares[0] + shares[1])  # one process, both ranks' sentences in one batch
    assert combined.num_tokens == sum(data.collate(s).num_tokens for s in shares)
    _update(space, net, opt, combined, None, Distributed())
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    moved = 0
    for name, single in net.state_dict().items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # ranks stay in lockstep
        torch.testing.assert_close(ranks[0][name], single, rtol=1e-5, atol=1e-6, msg=name)
        moved += int("experts" in name and not torch.equal(single, before[name]))
    assert moved == sum("experts" in n for n in before)  # the step really changed every expert


@pytest.mark.slow
def test_torchrun_two_processes_train(tmp_path):
    result = torchrun_train(tmp_path, "train.max_steps=4")
    assert result.returncode == 0, result.stderr[-2000:]
    import json

    log = [json.loads(x) for x in (tmp_path / "tiny" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2
    assert [r["step"] for r in log if "loss_largest" in r] == [2, 4]  # one writer: no duplicate records
    ckpts = sorted(p.name for p in (tmp_path / "tiny" / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000003", "ckpt-00000004"]
