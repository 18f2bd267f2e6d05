import json

import pytest
import torch
from safetensors.torch import load_file

from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.load import load_run
from mosnas.engine.schedule import step_archs
from mosnas.engine.train import train
from mosnas.errors import CheckpointError, ConfigError


def _log(run_dir, key):
    return [r[key] for r in map(json.loads, (run_dir / "train_log.jsonl").read_text().splitlines()) if key in r]


def test_sandwich_samples_largest_smallest_and_random(space):
    archs = step_archs(space, "sandwich", 2, seed=1, step=5)
    assert [k for k, _ in archs] == ["largest", "smallest", "random", "random"]
    assert archs[0][1] == space.largest() and archs[1][1] == space.smallest()
    assert step_archs(space, "sandwich", 2, 1, 5) == archs  # a function of the step: ranks and resumes agree
    assert step_archs(space, "sandwich", 2, 1, 6) != archs
    assert [k for k, _ in step_archs(space, "uniform", 1, 1, 5)] == ["random"]


def test_alternate_sampling_gives_smallest_and_random_turns(space):
    kinds = [[k for k, _ in step_archs(space, "alternate", 0, 1, step)] for step in range(4)]
    assert kinds == [["largest", "smallest"], ["largest", "random"]] * 2
    assert step_archs(space, "alternate", 0, 1, 3) == step_archs(space, "alternate", 0, 1, 3)


def test_late_sandwich_adds_random_archs_from_a_step_on(space):
    kinds = [[k for k, _ in step_archs(space, "sandwich", 1, 1, step, random_from=2)] for step in range(4)]
    assert kinds == [["largest", "smallest"]] * 2 + [["largest", "smallest", "random"]] * 2
    assert step_archs(space, "sandwich", 1, 1, 3, random_from=2) == step_archs(space, "sandwich", 1, 1, 3)


def test_sandwich_random_every_k_steps(space):
    kinds = [[k for k, _ in step_archs(space, "sandwich", 1, 1, step, random_every=3)] for step in range(6)]
    assert kinds == [["largest", "smallest", "random"]] + [["largest", "smallest"]] * 2 + kinds[:3]
    # the random arch of a step that has one is the same as with random_every=1: one seeded draw per step
    assert step_archs(space, "sandwich", 1, 1, 3, random_every=3) == step_archs(space, "sandwich", 1, 1, 3)


@pytest.mark.parametrize(
    "generator",
    [pytest.param("shared", marks=pytest.mark.slow), pytest.param("layer", marks=pytest.mark.slow), "neuron"],
)
def test_training_lowers_the_loss(tiny_cfg, generator):
    cfg = tiny_cfg(
        f"supernet.generator={generator}",
        "train.max_steps=30",
        "train.lr=3e-3",
        "train.warmup=5",
        "train.log_every=5",
        "train.valid_every=30",
        "supernet.dropout=0",
    )
    run_dir = train(cfg, show_progress=False)
    losses = _log(run_dir, "loss_largest")
    assert losses[-1] < losses[0] - 0.5, losses
    assert len(list_checkpoints(run_dir)) <= cfg.train.keep_last
    for name in ("config.yaml", "space.yaml", "environment.json", "spm.model"):
        assert (run_dir / name).is_file()


def test_resume_continues_exactly(tiny_cfg):
    common = ["train.log_every=1", "train.ckpt_every=3", "train.valid_every=100", "train.precision=fp32"]
    straight = train(tiny_cfg("name=straight", "train.max_steps=6", *common), show_progress=False)
    train(tiny_cfg("name=resumed", "train.max_steps=3", *common), show_progress=False)
    resumed = train(tiny_cfg("name=resumed", "train.max_steps=6", *common), resume=True, show_progress=False)
    assert _log(straight, "loss_largest") == _log(resumed, "loss_largest")
    assert _log(straight, "loss_random") == _log(resumed, "loss_random")
    a = load_file(str(list_checkpoints(straight)[-1] / "model.safetensors"))
    b = load_file(str(list_checkpoints(resumed)[-1] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_in_place_distillation_and_fixed_arch(tiny_cfg):
    run_dir = train(tiny_cfg("name=kd", "train.distill=0.5", "train.max_steps=3"), show_progress=False)
    assert len(_log(run_dir, "loss_smallest")) > 0
    run_dir = train(
        tiny_cfg("name=fixed", "train.sampling=fixed", "train.fixed_arch=smallest", "train.max_steps=3"),
        show_progress=False,
    )
    assert _log(run_dir, "loss_fixed") and not _log(run_dir, "loss_largest")


def test_run_folder_guards(tiny_cfg):
    cfg = tiny_cfg("train.max_steps=2")
    train(cfg, show_progress=False)
    with pytest.raises(ConfigError, match="already holds a trained run; pass --resume"):
        train(cfg, show_progress=False)
    with pytest.raises(ConfigError, match=r"holds a different run \(changed: train.lr\)"):
        train(tiny_cfg("train.max_steps=2", "train.lr=0.5"), show_progress=False)
    train(tiny_cfg("train.max_steps=2", "train.lr=0.5"), force=True, show_progress=False)


def test_corrupted_and_foreign_checkpoints_are_refused(tiny_cfg):
    run_dir = train(tiny_cfg("train.max_steps=2"), show_progress=False)
    assert load_run(run_dir).step == 2
    space_file = run_dir / "space.yaml"
    original = space_file.read_text()
    space_file.write_text(original.replace("name: tiny", "name: other"))
    with pytest.raises(CheckpointError, match="trained on another search space"):
        load_run(run_dir)
    space_file.write_text(original)
    model = list_checkpoints(run_dir)[-1] / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_run(run_dir)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.max_steps=2", "train.max_steps=2 is below step 4 of .* newest checkpoint"),
        ("train.max_minutes=0.0001", r"train.max_minutes=0.0001 is already spent by .* \(0.0 min trained\)"),
        ("data.vocab_size=150", r"holds a different run \(changed: data.vocab_size\)"),
        ("supernet.space=configs/spaces/multi30k.yaml", r"holds a different run \(changed: supernet.space\)"),
    ],
)
def test_a_resume_the_checkpoints_cannot_honour_is_refused_and_the_config_kept(tiny_cfg, override, fragment):
    """Issue 33, kind 1: `--resume` with a step or wall budget already passed, or another data or space key: one
    line, and config.yaml still describes the checkpoints."""
    import re

    from mosnas.errors import ConfigError

    cfg = tiny_cfg("name=resumed", "train.max_steps=4", "train.max_minutes=0")
    run_dir = train(cfg, show_progress=False)
    saved = (run_dir / "config.yaml").read_text()
    with pytest.raises(ConfigError) as e:
        train(tiny_cfg("name=resumed", "train.max_steps=8", override), resume=True, show_progress=False)
    assert re.search(fragment, str(e.value)) and "\n" not in str(e.value), str(e.value)
    assert (run_dir / "config.yaml").read_text() == saved
