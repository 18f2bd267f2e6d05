"""`mosnas run`: train -> export -> evaluate -> report, each stage skipped when its output exists."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mosnas.checkpoint import list_checkpoints
from mosnas.config import Config
from mosnas.evaluate import evaluate_model
from mosnas.export import export_arch, load_model
from mosnas.train import load_run, train


def _trained_steps(run_dir: Path) -> int:
    ckpts = list_checkpoints(run_dir)
    return int(ckpts[-1].name.split("-")[1]) if ckpts else 0


def run(cfg: Config, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline for `cfg`; a stopped run continues where it stopped."""
    t0 = time.perf_counter()
    run_dir = cfg.run_dir
    log = (
        json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[-1])
        if (not force and (run_dir / "train_log.jsonl").is_file())
        else {}
    )
    budget_spent = bool(cfg.train.max_minutes) and log.get("elapsed_s", 0) >= cfg.train.max_minutes * 60
    if force or (_trained_steps(run_dir) < cfg.train.max_steps and not budget_spent):
        train(cfg, resume=not force, force=force, show_progress=progress)
    loaded = load_run(run_dir)
    split = cfg.eval.split or cfg.data.test
    rows = []
    for name in cfg.eval.archs:
        arch = loaded.space.parse_arch(name)
        out = run_dir / "export" / (name if name in ("largest", "smallest") else Path(name).stem)
        result_file = out / f"eval.{split}.json"
        if force or not result_file.is_file() or _exported_step(out) != loaded.step:
            export_arch(loaded, arch, out)
            model, tok = load_model(out)
            evaluate_model(model, tok, cfg.data, split, cfg.decode, cfg.eval.limit, out, progress)
        result = json.loads(result_file.read_text(encoding="utf-8"))
        info = json.loads((out / "export.json").read_text(encoding="utf-8"))
        rows.append({"arch_name": name, "arch": arch.to_dict(), "parameters": info["parameters"], **result})
    results = {
        "name": cfg.name,
        "generator": cfg.supernet.generator,
        "steps": loaded.step,
        "train_log_last": log or _last_log(run_dir),
        "results": rows,
        "wall_s_this_call": round(time.perf_counter() - t0, 1),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    (run_dir / "summary.md").write_text(summary_markdown(results), encoding="utf-8")
    return results


def _exported_step(out: Path) -> int | None:
    info = out / "export.json"
    return json.loads(info.read_text(encoding="utf-8")).get("step") if info.is_file() else None


def _last_log(run_dir: Path) -> dict[str, Any]:
    lines = (run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines()
    train_lines = [json.loads(x) for x in lines if '"loss_' in x]
    return train_lines[-1] if train_lines else {}


def summary_markdown(results: dict[str, Any]) -> str:
    rows = results["results"]
    lines = [
        f"# {results['name']}: generator `{results['generator']}`, {results['steps']} steps",
        "",
        "| arch | parameters | BLEU | chrF | split |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['arch_name']} | {r['parameters']:,} | {r['bleu']:.2f} | {r['chrf']:.2f} | {r['split']} |")
    if rows:
        lines += [
            "",
            f"BLEU signature: `{rows[0]['bleu_signature']}`",
            "",
            f"chrF signature: `{rows[0]['chrf_signature']}`",
        ]
    return "\n".join(lines) + "\n"
