"""Fine-tuning and its from-scratch control, on a tiny trained run."""

import pytest
import torch
from safetensors.torch import load_file

from mosnas.engine.load import load_run
from mosnas.mt.export import load_model
from mosnas.mt.transformer import Transformer
from mosnas.pipeline.export import export_arch
from mosnas.pipeline.finetune import finetune


def test_scratch_control_starts_from_the_standard_init_of_its_own_shape(tiny_run_dir, tmp_path):
    """It used to start from a slice of the max-size init: xavier std of the larger shape (fc1 0.144 here
    instead of 0.204). One step at lr 1e-12 leaves the init in place, so the export shows where it started.
    Tolerance 10%: each tensor has >= 512 values (std within ~2-3%); a 1/sqrt(2) shrink is 29% off."""
    run = load_run(tiny_run_dir)
    arch = run.space.smallest()
    model_dir = export_arch(run, arch, tmp_path / "subnet")
    export, _ = finetune(
        run.cfg, model_dir, tmp_path / "ft", "scratch", steps=1, lr=1e-12, valid_every=1, valid_bleu=0, scratch=True
    )
    init = load_file(str(tmp_path / "ft" / "scratch.scratch-init.safetensors"))
    model, _ = load_model(export)
    references = []
    for seed in range(4):  # fresh standard inits of the arch's own shape
        torch.manual_seed(100 + seed)
        references.append(dict(Transformer(model.cfg).named_parameters()))
    for name, p in model.named_parameters():
        assert torch.allclose(p, init[name], atol=1e-9), name  # the run started from the written init
        ref = torch.stack([r[name].detach().std() for r in references]).mean().item()
        if ref == 0.0 or name.endswith("norm.weight"):  # zero biases, LayerNorm ones
            assert torch.equal(init[name], references[0][name]), name
        else:
            assert p.std().item() == pytest.approx(ref, rel=0.10), name


def test_finetuning_runs_at_the_finetune_precision(tiny_run_dir, tmp_path):
    from dataclasses import replace

    from mosnas.pipeline.finetune import finetune_config

    run = load_run(tiny_run_dir)
    model_dir = export_arch(run, run.space.smallest(), tmp_path / "subnet")
    for precision in ("fp32", "bf16", "auto"):
        cfg = replace(run.cfg, finetune=replace(run.cfg.finetune, precision=precision))
        ft = finetune_config(cfg, model_dir, tmp_path / "ft", "x", 2, 1e-4, 1, 1, 0, False)
        assert ft.train.precision == precision  # not the supernet's train.precision


def test_finetuning_a_run_that_logged_gradient_conflict(tiny_run_dir, tmp_path):
    """A supernet trained with train.grad_conflict_every (sandwich only) fine-tunes one fixed arch: the setting
    is off there instead of refusing the fine-tuning config."""
    from dataclasses import replace

    from mosnas.pipeline.finetune import finetune_config

    run = load_run(tiny_run_dir)
    model_dir = export_arch(run, run.space.smallest(), tmp_path / "subnet")
    cfg = replace(run.cfg, train=replace(run.cfg.train, grad_conflict_every=5))
    ft = finetune_config(cfg, model_dir, tmp_path / "ft", "x", 2, 1e-4, 1, 1, 0, False)
    assert ft.train.sampling == "fixed" and ft.train.grad_conflict_every == 0


def test_a_fine_tuning_log_counts_the_models_own_parameters(tiny_cfg, tmp_path):
    """Issue 33, kind 3: the log of a fixed-arch run (fine-tuning, from scratch) names the model's parameters,
    not the supernet's that holds it; a supernet run names the supernet's."""
    import json

    from mosnas.cli.main import main
    from mosnas.engine.load import load_run
    from mosnas.engine.train import train

    tiny_run_dir = train(tiny_cfg("name=own", "train.max_steps=2"), show_progress=False)  # its own: it writes
    model = tmp_path / "smallest"
    assert main(["export", str(tiny_run_dir), "--arch", "smallest", "--out", str(model), "--quiet"]) == 0
    own = json.loads((model / "export.json").read_text())["parameters"]
    assert main(["finetune", str(model), "--steps", "1", "--valid-bleu", "0", "--name", "own-params", "--quiet"]) == 0
    start = json.loads((tiny_run_dir / "finetune" / "own-params" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["parameters"] == own == 15_344 and start["supernet_parameters"] > own
    first = json.loads((tiny_run_dir / "train_log.jsonl").read_text().splitlines()[0])
    assert first["parameters"] == sum(p.numel() for p in load_run(tiny_run_dir).net.parameters())
    assert "supernet_parameters" not in first
