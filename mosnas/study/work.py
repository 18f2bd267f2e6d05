"""The study's folders and the work of its training and evaluation pieces: the shared vocabulary, the fixed
arch set, one supernet per variant and seed (trained in process or through `launch`, e.g. torchrun), one
model per arch and seed trained alone from scratch (mosnas.pipeline.finetune), and one evaluation per variant, seed
and arch (the supernet's inherited weights: validation loss and BLEU)."""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mosnas.config import Config, SearchConfig
from mosnas.core.space import Arch
from mosnas.engine.checkpoint import list_checkpoints
from mosnas.engine.load import LoadedRun, load_run
from mosnas.engine.run_folder import needs_training
from mosnas.engine.train import train
from mosnas.errors import TrainingError
from mosnas.family import family_of
from mosnas.hardware import resolve_precision
from mosnas.pipeline.export import ensure_export
from mosnas.pipeline.finetune import finetune
from mosnas.study.archs import arch_key
from mosnas.study.config import StudyConfig, run_config, run_overrides
from mosnas.study.pieces import Records
from mosnas.study.stats import summarize_series
from mosnas.workspace.model_dir import ModelDir
from mosnas.workspace.records import read_json
from mosnas.workspace.run_dir import RunDir, read_log

BOOKKEEPING = ("log_every", "valid_every", "ckpt_every", "keep_last", "threads", "tensorboard")
RECIPE = ("space", "prenorm", "dropout", "attention_dropout", "activation_dropout", "share_embeddings")


@dataclass(frozen=True)
class StudyDir:
    """Every folder of a study's work dir."""

    root: Path

    vocab = property(lambda self: self.root / "vocab")  # spm.model: one vocabulary for every run
    archs = property(lambda self: self.root / "archs.json")  # the fixed arch set
    pieces = property(lambda self: self.root / "pieces")  # one record per finished piece
    commands = property(lambda self: self.root / "commands.jsonl")  # every invocation

    def supernet(self, variant: str, seed: int) -> Path:
        return self.root / "supernets" / f"{variant}-s{seed}"

    def scratch(self, seed: int) -> Path:
        return self.root / "scratch" / f"s{seed}"

    def template(self, key: str) -> Path:
        return self.root / "templates" / key  # a model folder of the arch: its config, for a fresh init

    def retrain(self, variant: str, seed: int) -> Path:
        return self.root / "retrain" / f"{variant}-s{seed}"


def trained_state(run_dir: Path) -> dict[str, Any]:
    """Step, training seconds (the loop's clock), checkpoint hash and precision of a trained run folder."""
    state = read_json(list_checkpoints(run_dir)[-1] / "state.json")
    env = RunDir(run_dir).environment
    return {
        "run": str(run_dir),
        "steps": state["step"],
        "train_s": round(state["elapsed"], 3),
        "checkpoint": {"step": state["step"], "model_sha256": state["sha256"]["model.safetensors"]},
        "precision": (read_json(env).get("precision") or {}).get("precision") if env.is_file() else None,
        "world_size": state.get("world_size", 1),
    }


class Study:
    """A study being run: its config, folders, piece records, and what its pieces share (loaded runs)."""

    def __init__(self, cfg: StudyConfig, force: bool = False, progress: bool = True):
        self.cfg, self.force, self.progress = cfg, force, progress
        self.dir = StudyDir(Path(cfg.work_dir))
        self.records = Records(self.dir.pieces, force)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._runs: dict[Path, LoadedRun] = {}
        self._fitness: dict[Path, Any] = {}
        self._configs: dict[tuple, Config] = {}

    # -- configs ----------------------------------------------------------------------------------------
    def tokenizer_override(self) -> str:
        return f"data.tokenizer={self.dir.vocab / 'spm.model'}"

    def supernet_config(self, variant: str, seed: int, *extra: str) -> Config:
        key = (variant, seed, *extra)
        if key not in self._configs:  # built once: a plan asks for them per piece
            out = self.dir.supernet(variant, seed)
            self._configs[key] = run_config(
                self.cfg, variant, seed, out.name, out.parent, self.tokenizer_override(), *extra
            )
        return self._configs[key]

    def dense_config(self, seed: int, *extra: str) -> Config:
        """The recipe of an arch trained alone (no variant): data, dropout, lr, batches of the supernets."""
        key = (None, seed, *extra)
        if key not in self._configs:
            cfg = run_config(self.cfg, None, seed, "dense", self.dir.root, self.tokenizer_override(), *extra)
            if self.cfg.dense_update_freq:  # as many tokens per update as a supernet update on `launch`'s GPUs
                cfg = replace(cfg, train=replace(cfg.train, update_freq=self.cfg.dense_update_freq))
            self._configs[key] = cfg
        return self._configs[key]

    def supernet_inputs(self, variant: str, seed: int) -> dict[str, Any]:
        """What a supernet is made from: the family, data, supernet and training settings (bookkeeping aside)."""
        d = self.supernet_config(variant, seed).to_dict()
        train_settings = {k: v for k, v in d["train"].items() if k not in BOOKKEEPING}
        return {"family": d["family"], "data": d["data"], "supernet": d["supernet"], "train": train_settings}

    def dense_inputs(self, seed: int, steps: int) -> dict[str, Any]:
        d = self.dense_config(seed).to_dict()
        train_settings = {k: v for k, v in d["train"].items() if k not in BOOKKEEPING + ("max_steps",)}
        recipe = {k: d["supernet"][k] for k in RECIPE}
        return {"data": d["data"], "supernet": recipe, "train": train_settings, "steps": steps}

    # -- shared pieces ----------------------------------------------------------------------------------
    def make_vocab(self) -> dict[str, Any]:
        """The subword model every run of the study uses (trained once, like a run's own)."""
        cfg = run_config(self.cfg, None, self.cfg.seeds[0], "vocab", self.dir.root)
        family = family_of(cfg.family)
        self.dir.vocab.mkdir(parents=True, exist_ok=True)
        (self.dir.vocab / "spm.model").unlink(missing_ok=True)  # redone: prepare would keep an old one
        family.prepare(cfg, self.dir.vocab)
        return {"spm": str(self.dir.vocab / "spm.model"), "vocab_size": family.vocab(self.dir.vocab)[1]}

    # -- runs -------------------------------------------------------------------------------------------
    def loaded(self, run_dir: Path) -> LoadedRun:
        """The trained run of a folder, loaded once (on the GPU when there is one)."""
        run_dir = Path(run_dir)
        if run_dir not in self._runs:  # one run held at a time: pieces of one run come together
            self._runs.clear()
            self._fitness.clear()
            self._runs[run_dir] = load_run(run_dir, self.device)
        return self._runs[run_dir]

    def select_loss(self, run: LoadedRun, arch: Arch) -> float:
        """Validation loss (NLL per target token) of `arch` with the run's weights, on the study's seeded
        sample of the selection split: the search's fitness (the family's `fitness`)."""
        if run.run_dir not in self._fitness:
            ev = self.cfg.eval
            sc: SearchConfig = replace(run.cfg.search, valid_sentences=ev.select_sentences, seed=ev.seed)
            precision = resolve_precision(sc.precision, self.device, "search.precision")
            self._fitness[run.run_dir] = run.family.fitness(run, sc, self.device, precision.bf16)[0]
        return round(float(self._fitness[run.run_dir](arch)), 5)

    def score(self, run: LoadedRun, model_dir: Path, cfg: Config) -> dict[str, Any]:
        """BLEU and chrF of an exported model on the study's BLEU split (the family's `evaluate`, reused while
        the model and the settings hold)."""
        upstream = ModelDir(model_dir).made_from()
        scores = run.family.evaluate(model_dir, cfg, self.progress, upstream)
        return {k: scores[k] for k in ("bleu", "chrf", "sentences", "split", "bleu_signature") if k in scores}

    # -- pieces -----------------------------------------------------------------------------------------
    def train_supernet(self, variant: str, seed: int, redo: bool) -> dict[str, Any]:
        """Train one supernet (continuing a stopped one); `redo` starts a run made from other inputs over."""
        cfg = self.supernet_config(variant, seed)
        overrides = [*run_overrides(self.cfg, variant, seed), f"name={cfg.name}", f"out_dir={cfg.out_dir}"]
        overrides.append(self.tokenizer_override())
        command = ["-m", "mosnas", "train", self.cfg.base, *overrides, "--resume", "--quiet"]
        if redo or needs_training(cfg):
            if self.cfg.launch:  # e.g. torchrun: the GPUs are the launched processes' (this one lets go of its own)
                self._runs.clear()
                self._fitness.clear()
                torch.cuda.empty_cache()
                launch = [*shlex.split(self.cfg.launch), *command, *(["--force"] if redo else [])]
                log = cfg.run_dir.with_suffix(".log")  # the launched processes' stdout; errors stay on stderr
                log.parent.mkdir(parents=True, exist_ok=True)
                with open(log, "a", encoding="utf-8") as out:
                    done = subprocess.run(launch, check=False, stdout=out)
                if done.returncode != 0:
                    raise TrainingError(f"supernet {variant}/s{seed}: {shlex.join(launch)} exited {done.returncode}")
            else:
                train(cfg, resume=not redo, force=redo, show_progress=self.progress)
        log = read_log(cfg.run_dir)
        conflicts = [r["grad_conflict"] for r in log if isinstance(r.get("grad_conflict"), dict)]
        return {
            **trained_state(cfg.run_dir),
            "command": shlex.join([*shlex.split(self.cfg.launch or "python"), *command]),
            "grad_conflict": summarize_series(conflicts) if conflicts else None,
        }

    def template(self, arch: Arch, seed: int) -> Path:
        """A model folder of `arch` (config, tokenizer; its weights unused): what a from-scratch run starts
        from (mosnas.pipeline.finetune draws a fresh init of the arch's own shape)."""
        out = self.dir.template(arch_key(arch))
        if ModelDir(out).read_arch() == arch.to_dict():
            return out
        cfg = self.dense_config(seed)
        family = family_of(cfg.family)
        space = family.load_space(cfg.supernet.space)
        vocab_size = family.vocab(self.dir.vocab)[1]
        model = family.dense_model(family.dense_config(arch, space, vocab_size, family.supernet_config(cfg)))
        family.save_model(model, out, self.dir.vocab, arch, {"study_template": True})
        return out

    def train_scratch(self, arch: Arch, seed: int) -> dict[str, Any]:
        """The arch trained alone from a fresh init for the study's scratch steps with the supernets' recipe (lr,
        warm-up, batches); its final validation BLEU (the retraining target), validation loss and BLEU."""
        cfg, steps, checks = self.dense_config(seed), self.cfg.steps_scratch, self.cfg.retrain.valid_bleu
        tc = cfg.train
        model_dir, curve = finetune(
            cfg, self.template(arch, seed), self.dir.scratch(seed), arch_key(arch), steps, tc.lr, tc.warmup, steps,
            checks, scratch=True, progress=self.progress,
        )  # fmt: skip
        run = self.loaded(model_dir.parent)
        final = max(curve, key=lambda r: r["step"]) if curve else {}
        return {
            **trained_state(model_dir.parent),
            "arch": arch.to_dict(),
            "valid_bleu": final.get("valid_bleu"),
            "select_loss": self.select_loss(run, arch),
            **self.score(run, model_dir, cfg),
        }

    def evaluate(self, variant: str, seed: int, arch: Arch) -> dict[str, Any]:
        """One arch with the supernet's inherited weights: validation loss and BLEU of its export."""
        cfg = self.supernet_config(variant, seed)
        run = self.loaded(cfg.run_dir)
        out = run.dir.export(arch_key(arch))
        ensure_export(run, arch, out)
        costs = run.family.costs(arch, run.space, run.net.vocab_size, run.cfg.supernet, cfg.latency)
        return {
            "arch": arch.to_dict(),
            "parameters": costs["parameters"],
            "select_loss": self.select_loss(run, arch),
            **self.score(run, out, cfg),
            "checkpoint": run.checkpoint,
        }
