"""`mosnas run` for NAS-BERT (family nasbert; Xu et al., KDD 2021): train the block-wise supernet with progressive
shrinking (the engine) -> the lookup table of every surviving path (held-out block loss, parameters, table
latency) -> one pick per budget (`search.params_budgets`: non-embedding parameters; `search.latency_ms`: table
latency with the embeddings), the table's top `nasbert.top` run whole and the best kept -> the standalone encoder
(model.safetensors + config.json, and model.onnx checked against PyTorch with onnxruntime), its latency measured
whole beside the table's sum -> results.json and summary.md.

With `nasbert.distill_steps` / `distill_minutes`, each pick is distilled end to end before its export (the paper's
task-agnostic KD stage; mosnas.bert.nasbert.distill). With `glue.tasks`, each export is then fine-tuned on them with
the run's `glue` recipe, the same harness and recipe as the BERT family's students (mosnas.bert.glue.stage), and the
teacher once beside them (`RUN/teacher_glue/`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mosnas.bert.glue.stage import glue_scores, glue_table
from mosnas.bert.nasbert import select
from mosnas.bert.nasbert.distill import distill_whole
from mosnas.bert.nasbert.latency import check_table
from mosnas.bert.nasbert.model import export_onnx, save_model
from mosnas.bert.nasbert.task import LATENCY_TABLE
from mosnas.config import Config
from mosnas.engine.load import load_run
from mosnas.engine.run_folder import adopt_config, needs_training
from mosnas.engine.train import train
from mosnas.workspace.records import made_from, read_json, write_json, write_text
from mosnas.workspace.run_dir import RunDir


def budgets(cfg: Config) -> dict[str, tuple[float | None, float | None]]:
    """Budget name -> (max non-embedding parameters, max table latency in ms)."""
    out: dict[str, tuple[float | None, float | None]] = {}
    out |= {f"params-{p / 1e6:g}M": (float(p), None) for p in cfg.search.params_budgets}
    out |= {f"latency-{ms:g}ms": (None, float(ms)) for ms in cfg.search.latency_ms}
    return out


def _onnx_check(model: Any, out: Path, vocab_size: int) -> float:
    """model.onnx in `out`, and its largest absolute difference from PyTorch on seeded padded batches."""
    import onnxruntime

    path = export_onnx(model, out / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for seed, (b, t) in enumerate([(1, 7), (3, 16), (2, 33)]):
        ids = torch.randint(1, vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))
        mask = torch.ones_like(ids)
        mask[-1, t // 2 :] = 0
        with torch.no_grad():
            ref = model(ids, mask).last_hidden_state.numpy()
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        names = [i.name for i in session.get_inputs()]  # an arch of FFNs only never reads the mask: ONNX drops it
        got = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def _distill_inputs(cfg: Config) -> tuple[Any, Any, Any] | None:
    """(teacher, training text of `data.train`, the selection's held-out sequences: `search.valid_sentences` of
    `data.valid`) for the end-to-end distillation of the picks, loaded once per run; None when it is off."""
    if not (cfg.nasbert.distill_steps or cfg.nasbert.distill_minutes):
        return None
    from mosnas.bert.data import load_text, text_files
    from mosnas.bert.teacher import load_teacher

    teacher = load_teacher(cfg.bert.teacher)
    tok, size, n = teacher.tokenizer, max(1, cfg.data.max_tokens // cfg.bert.max_seq_len), cfg.bert.max_seq_len
    files = text_files(cfg.data.dir, cfg.data.train)
    train_text = load_text(files, tok, n, size, cfg.data.train_limit, 0, cfg.train.seed)
    held = load_text(text_files(cfg.data.dir, cfg.data.valid), tok, n, size, 0, cfg.search.valid_sentences,
                     cfg.search.seed)  # fmt: skip
    return teacher, train_text, held


def _export_pick(cfg: Config, run: Any, name: str, got: dict[str, Any], data: Any, table: dict[str, Any],
                 vocab: int, kd_inputs: tuple[Any, Any, Any] | None, progress: bool) -> dict[str, Any]:  # fmt: skip
    """The pick `got` (select.pick) of budget `name` as a standalone encoder, distilled end to end when
    `kd_inputs`, exported to `export/<name>/` (safetensors, ONNX checked against PyTorch) and measured whole: the
    budget's results row without its budget."""
    arch, nb = tuple(got["arch"]), cfg.nasbert
    model = select.standalone(run.net, arch, data, vocab)
    kd = None
    if kd_inputs:  # the paper's first KD stage (mosnas.bert.nasbert.distill), before the export
        kd = distill_whole(model, *kd_inputs, nb.distill_steps, nb.distill_minutes, nb.distill_lr, cfg.train.seed,
                           progress)  # fmt: skip
    out = RunDir(cfg.run_dir).export(name)
    save_model(model, out, arch, run.tokenizer)
    row = {
        "name": name,
        "kind": "search",
        **{k: v for k, v in got.items() if k != "candidates"},
        "candidates_run_whole": len(got["candidates"]),
        "layers_kept": len(model.layers),
        "measured_latency_ms": check_table(run.space, [arch], table, vocab)["archs"][0]["measured_ms"],
        "onnx_max_abs_diff": _onnx_check(model, out, vocab),
        "model_dir": f"export/{name}",
    }
    if kd:
        row["distill"] = {k: v for k, v in kd.items() if k != "losses"} | {"last_loss": kd["losses"][-1]}
    return row


def run_nasbert(cfg: Config, force: bool = False, progress: bool = True) -> dict[str, Any]:
    """The whole NAS-BERT pipeline for `cfg` (a stopped training continues where it stopped)."""
    t0 = time.perf_counter()
    say = (lambda text: print(f"== {text}", file=sys.stderr, flush=True)) if progress else (lambda text: None)
    if force or needs_training(cfg):
        say(f"train: NAS-BERT block-wise supernet -> {cfg.run_dir}")
        train(cfg, resume=not force, force=force, show_progress=progress)
    else:
        adopt_config(cfg)
    run = load_run(cfg.run_dir)
    rd, space = RunDir(cfg.run_dir), run.space
    table = read_json(rd.root / LATENCY_TABLE)
    say(f"lookup table: the surviving paths of {space.blocks} blocks on {cfg.search.valid_sentences} held-out seq.")
    data = select.heldout(cfg, space, cfg.search.valid_sentences, cfg.search.seed)
    paths = select.living_paths(space, run.task_state)
    tables = select.block_tables(run.net, space, paths, data, table)
    record = made_from(checkpoint=run.checkpoint, heldout={"sequences": data.sequences, "seed": cfg.search.seed})
    write_json(rd.root / "search" / "nasbert_table.json", {"blocks": [t.to_rows() for t in tables], **record})
    vocab = run.tokenizer.vocab_size if hasattr(run.tokenizer, "vocab_size") else len(run.tokenizer)
    rows, kd_inputs = [], _distill_inputs(cfg)
    for name, (max_params, max_ms) in budgets(cfg).items():
        say(f"select {name}: top {cfg.nasbert.top} by the table, run whole, export")
        got = select.pick(run.net, tables, data, table, max_params, max_ms, cfg.nasbert.top)
        write_json(rd.search(name), {**got, "max_params": max_params, "budget_ms": max_ms, **record})
        row = _export_pick(cfg, run, name, got, data, table, vocab, kd_inputs, progress)
        row |= {"max_params": max_params, "budget_ms": max_ms}
        where = {"family": "nasbert", "run": str(rd.root.resolve())}
        write_json(rd.export(name) / "export.json", {**row, **where, **record})
        if cfg.glue.tasks:
            say(f"GLUE {name}: {', '.join(cfg.glue.tasks)} with the run's recipe (and the teacher's, once)")
            row["glue"] = glue_scores(rd.export(name), cfg, progress, None)
        rows.append(row)
    results = {"name": cfg.name, "family": "nasbert", "steps": run.step, "latency_table": table, "results": rows}
    results["wall_s_this_call"] = round(time.perf_counter() - t0, 1)
    write_json(rd.results, results)
    write_text(rd.summary, summary(cfg, results))
    return results


def summary(cfg: Config, results: dict[str, Any]) -> str:
    """summary.md: one row per budget."""
    head = "| budget | arch (non-identity ops) | params (non-emb.) | table loss | whole loss "
    head += "| latency table / measured ms | ONNX max diff |"
    lines = [f"# {cfg.name}: NAS-BERT, {results['steps']} steps", "", head, "|---|---|---|---|---|---|---|"]
    for r in results["results"]:
        ops = " ".join(op for op in r["arch"] if op != "identity") or "(embeddings only)"
        kd = r.get("distill")
        whole = f"{r['whole_loss']:.4f}" + (f" -> {kd['whole_loss_after']:.4f} ({kd['steps']} KD steps)" if kd else "")
        lines.append(
            f"| {r['name']} | {ops} | {r['parameters_nonembedding']:,} | {r['table_loss']:.4f} | {whole} "
            f"| {r['table_latency_ms']:.2f} / {r['measured_latency_ms']:.2f} | {r['onnx_max_abs_diff']:.1e} |"
        )
    p = results["latency_table"]["protocol"]
    lines += [
        "",
        "Table loss: the sum of the arch's held-out block-wise losses (each block on the teacher's hidden state); "
        "whole loss: the arch run whole from the teacher's embeddings against its last hidden state (MSE per token and "
        "channel; '-> x (n KD steps)': the held-out whole loss of the export after its end-to-end distillation). "
        f"Latency: batch {p['batch']}, {p['seq_len']} tokens, {p['threads']} thread(s), the table's sum "
        "of per-op medians beside the exported encoder measured whole.",
    ]
    glue = glue_table(results["results"])  # the same table (and teacher row) as the BERT family's summary
    return "\n".join(lines + (["", *glue] if glue else [])) + "\n"
