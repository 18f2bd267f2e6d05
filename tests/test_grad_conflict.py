"""Gradient conflict logging: each arch's own gradient is captured without changing the update, and the
cosines land in train_log.jsonl as the study harness reads them."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from mosnas import bert
from mosnas.config import SupernetConfig, load_config
from mosnas.core.supernet import Supernet
from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.grad_conflict import ArchGradients, due, labels, overlap_cosine
from mosnas.engine.train import train
from mosnas.errors import ConfigError, TrainingError
from tests.conftest import ROOT, make_supernet


def _sandwich(space, num_random=1, seed=0):
    rng = random.Random(seed)
    return [("largest", space.largest()), ("smallest", space.smallest())] + [
        ("random", space.sample(rng)) for _ in range(num_random)
    ]


def _step(net, archs, src, prev):
    """What the tasks do: one forward and one backward per arch, in the step's order."""
    for _, arch in archs:
        net(src, prev, arch).logsumexp(-1).mean().backward()


def test_labels_number_repeated_kinds_and_pairs_follow_the_step():
    archs = [("largest", 0), ("smallest", 1), ("random", 2), ("random", 3)]
    assert labels(archs) == ["largest", "smallest", "random1", "random2"]
    assert labels(archs[:3]) == ["largest", "smallest", "random"]
    grads = ArchGradients(torch.nn.Linear(2, 2), archs, on=True)
    assert list(grads.cosines()) == [
        "largest-smallest",
        "largest-random1",
        "largest-random2",
        "smallest-random1",
        "smallest-random2",
        "random1-random2",
    ]


def test_cosine_is_over_the_entries_both_archs_touched():
    a = {0: torch.tensor([[1.0, 2.0], [0.0, 0.0]]), 1: torch.tensor([3.0])}
    b = {0: torch.tensor([[2.0, 4.0], [5.0, 0.0]])}  # entry (1, 0) and tensor 1: one arch only
    assert overlap_cosine(a, b) == pytest.approx(1.0)
    assert overlap_cosine({0: torch.tensor([1.0, -2.0])}, {0: torch.tensor([-1.0, 2.0])}) == pytest.approx(-1.0)
    assert overlap_cosine({0: torch.tensor([1.0, 1.0])}, {0: torch.tensor([1.0, -1.0])}) == pytest.approx(0.0)
    assert overlap_cosine({0: torch.tensor([1.0, 0.0])}, {0: torch.tensor([0.0, 1.0])}) is None  # nothing shared


@pytest.mark.parametrize("generator", ["neuron", "kshot"])
def test_each_arch_gets_its_own_gradient_and_grad_is_unchanged(space, generator):
    net = make_supernet(space, generator, num_experts=2)
    archs = _sandwich(space, num_random=2)
    src, prev = torch.randint(4, 100, (2, 6)), torch.randint(4, 100, (2, 5))
    params = list(net.parameters())
    alone = []
    for _, arch in archs:  # the reference: each arch's gradient from a backward of its own
        net.zero_grad(set_to_none=True)
        _step(net, [(None, arch)], src, prev)
        alone.append([p.grad.clone() if p.grad is not None else None for p in params])
    net.zero_grad(set_to_none=True)
    _step(net, archs, src, prev)
    plain = [p.grad.clone() for p in params]
    net.zero_grad(set_to_none=True)
    with ArchGradients(net, archs) as grads:
        _step(net, archs, src, prev)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, plain))  # the optimizer sees the same sum
    assert not net._forward_pre_hooks and all(not p._backward_hooks for p in params)  # hooks removed
    for i in range(len(archs)):
        for j, ref in enumerate(alone[i]):
            got = grads.grads[i].get(j)
            assert (got is None) == (ref is None)
            assert got is None or torch.allclose(got, ref, atol=1e-7)
    assert set(grads.grads[1]) < set(grads.grads[0])  # the smallest arch touches fewer tensors (one layer)
    cos = grads.record(7)
    assert cos["step"] == 7 and set(cos["grad_conflict"]) == {f"{a}-{b}" for a, b in _pairs()}
    assert cos["grad_conflict"]["largest-smallest"] == overlap_cosine(grads.grads[0], grads.grads[1])
    assert all(-1 <= c <= 1 for c in cos["grad_conflict"].values())


def _pairs():
    names = ["largest", "smallest", "random1", "random2"]
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]


def test_off_is_nothing_and_a_task_out_of_order_is_refused(space):
    net = make_supernet(space, "layer")
    archs = _sandwich(space)
    with ArchGradients(net, archs, on=False) as grads:
        assert not net._forward_pre_hooks and all(not p._backward_hooks for p in net.parameters())
    assert grads.record(3) is None
    assert [s for s in range(10) if due(4, s)] == [0, 4, 8] and not any(due(0, s) for s in range(10))
    src, prev = torch.randint(4, 100, (2, 6)), torch.randint(4, 100, (2, 5))
    with pytest.raises(TrainingError, match="ran another arch than the step's largest arch"):
        with ArchGradients(net, archs):
            net(src, prev, space.smallest())
    assert not net._forward_pre_hooks  # removed on the way out


def test_bert_forwards_are_attributed_too():
    space = bert.load_space(ROOT / "configs" / "spaces" / "bert_tiny.yaml")
    net = Supernet(space, 120, SupernetConfig(generator="layer", router_hidden=8, dropout=0.0), bert)
    ids, mask = torch.randint(5, 120, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    archs = _sandwich(space)
    with ArchGradients(net, archs) as grads:
        for _, arch in archs:  # as DistillTask.step calls the supernet
            net(ids, mask, arch)["hidden"].square().mean().backward()
    cos = grads.record(1)["grad_conflict"]
    assert list(cos) == ["largest-smallest", "largest-random", "smallest-random"]
    assert all(c is not None and -1 <= c <= 1 for c in cos.values())


def test_logging_leaves_training_bit_identical_and_writes_the_records(tiny_cfg):
    """Two updates of two micro-batches each, sandwich with two random archs: the same weights with and
    without logging, and one record per logged update in train_log.jsonl."""
    base = ["train.max_steps=2", "train.update_freq=2", "train.num_random=2", "supernet.generator=kshot"]
    runs = {}
    for every in (0, 1):
        run = train(tiny_cfg(*base, f"name=gc{every}", f"train.grad_conflict_every={every}"), show_progress=False)
        runs[every] = run
    weights = [load_file(str(list_checkpoints(runs[e])[-1] / "model.safetensors")) for e in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    records = [json.loads(line) for line in (runs[1] / "train_log.jsonl").read_text().splitlines()]
    conflict = [r for r in records if "grad_conflict" in r]
    assert [r["step"] for r in conflict] == [1, 2] and all(set(r) == {"step", "grad_conflict"} for r in conflict)
    assert set(conflict[0]["grad_conflict"]) == {f"{a}-{b}" for a, b in _pairs()}
    assert all(-1 <= c <= 1 for r in conflict for c in r["grad_conflict"].values())
    assert not any("grad_conflict" in json.loads(line) for line in (runs[0] / "train_log.jsonl").open())


def test_the_setting_is_checked():
    assert load_config(None, ["train.grad_conflict_every=50"]).train.grad_conflict_every == 50
    with pytest.raises(ConfigError, match="train.grad_conflict_every must be >= 0"):
        load_config(None, ["train.grad_conflict_every=-1"])
    with pytest.raises(ConfigError, match="needs train.sampling=sandwich"):
        load_config(None, ["train.grad_conflict_every=5", "train.sampling=uniform"])
