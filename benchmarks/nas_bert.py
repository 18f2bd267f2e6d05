"""NAS-BERT (Xu et al., KDD 2021) beside MoS and AutoDistil at the same size and the same distillation wall time,
every student fine-tuned on GLUE with one recipe, beside the teacher (all-MiniLM-L6-v2).

    python benchmarks/nas_bert.py [--minutes 12] [--kd-minutes 1] [--budgets 8e6 15e6]
        [--tasks CoLA SST-2 MRPC STS-B RTE] [--train-limit 1000] [--dev-limit 0] [--epochs 3] [--lr 1e-4]

1. MoS: `mosnas run configs/bert_quickstart.yaml` (neuron-wise, sandwich distillation from the teacher) for
   --minutes of distillation, searched under each parameter budget (--budgets: parameters with the embeddings);
2. AutoDistil: `mosnas autodistil configs/bert_autodistil.yaml` with its three sub-spaces, --minutes / 3 each;
3. NAS-BERT: `mosnas run configs/bert_nasbert.yaml` at budgets = the MoS students' non-embedding parameters
   (NAS-BERT's residual stream is the teacher's width, so its embeddings alone are 11.9M parameters: the sizes match
   on what is searched, the Transformer layers; at least --nasbert-floor, its space's smallest arch), block-wise
   distillation for --minutes minus the end-to-end KD of
   its picks (--kd-minutes each), so the three methods get the same distillation wall time on this machine;
4. benchmarks/glue_students.py on every exported student and the teacher (same tasks, subsets, epochs, lr, seed).

Compute is matched by wall time of distillation (one run at a time, 2 threads each), not by FLOPs: NAS-BERT's
block-wise steps run one sampled path per block, MoS's sandwich steps three whole archs. The searches themselves
(MoS's evolution, NAS-BERT's lookup table and whole-arch runs) are timed apart. Runs go to benchmarks/work/nas_bert
(ignored by git); a finished run is skipped when the script runs again. Writes benchmarks/results/nas_bert.{md,json}
(and nas_bert_glue.{md,json}, the fine-tuning table)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bert_students  # noqa: E402
from _common import RESULTS, ROOT, machine, relative, write  # noqa: E402

WORK = ROOT / "benchmarks" / "work" / "nas_bert"
SUBSPACES = [f"configs/spaces/bert_autodistil_{k}.yaml" for k in ("tiny", "small", "base")]


def counts(folder: Path) -> tuple[int, int]:
    """(all parameters, non-embedding parameters: the Transformer layers, without the embeddings and pooler) of an
    exported student, from its safetensors header."""
    from safetensors import safe_open

    total = layers = 0
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        for key in f.keys():
            n = math.prod(f.get_slice(key).get_shape())
            total += n
            layers += 0 if ("embeddings." in key or "pooler." in key) else n
    return total, layers


def distill(args: argparse.Namespace) -> dict[str, float]:
    """Steps 1-3, one run at a time (finished ones skipped); wall seconds of each command."""
    mosnas = [sys.executable, "-m", "mosnas"]
    common = [f"out_dir={WORK}", f"train.threads={args.threads}", "train.max_steps=100000", "glue.tasks=[]"]
    common += [f"train.seed={args.seed}"]
    budgets = "search.params_budgets=[" + ",".join(str(int(b)) for b in args.budgets) + "]"
    walls: dict[str, float] = {}
    if not (WORK / "mos-neuron" / "results.json").is_file():
        cmd = mosnas + ["run", "configs/bert_quickstart.yaml", "name=mos-neuron", "supernet.generator=neuron"]
        cmd += ["--quiet", *common, budgets, f"train.max_minutes={args.minutes}"]
        walls |= bert_students.run_jobs({"mos-neuron": cmd}, 1)
    if not (WORK / "bert_autodistil" / "results.json").is_file():
        cmd = mosnas + ["autodistil", "configs/bert_autodistil.yaml", *SUBSPACES, *common, budgets]
        walls |= bert_students.run_jobs({"bert_autodistil": cmd + [f"train.max_minutes={args.minutes / 3:g}"]}, 1)
    if not (WORK / "nas-bert" / "results.json").is_file():
        # no NAS-BERT arch is below its space's smallest (1.79M non-embedding parameters in nasbert_minilm)
        sizes = [max(counts(folder)[1], int(args.nasbert_floor)) for folder in mos_students(args).values()]
        train_minutes = args.minutes - args.kd_minutes * len(sizes)
        cmd = mosnas + ["run", "configs/bert_nasbert.yaml", "name=nas-bert", "--quiet", *common]
        cmd += ["search.params_budgets=[" + ",".join(map(str, sizes)) + "]", f"train.max_minutes={train_minutes:g}"]
        cmd += [f"nasbert.distill_minutes={args.kd_minutes:g}", "nasbert.distill_steps=0"]
        walls |= bert_students.run_jobs({"nas-bert": cmd}, 1)
    return walls


def mos_students(args: argparse.Namespace) -> dict[str, Path]:
    return {f"mos-neuron-{b / 1e6:g}M": WORK / "mos-neuron" / "export" / f"params-{b / 1e6:g}M" for b in args.budgets}


def students(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Row name -> {"system", "budget" (the MoS budget it is matched to), "folder", ...} for every student."""
    out: dict[str, dict[str, Any]] = {}
    for (name, folder), b in zip(mos_students(args).items(), args.budgets):
        out[name] = {"system": "mos-neuron", "budget": f"{b / 1e6:g}M", "folder": folder}
    ad = json.loads((WORK / "bert_autodistil" / "results.json").read_text())
    for r in (r for r in ad["results"] if r.get("kind") == "search"):
        base = r["name"].split(" (")[0]
        folder = Path(ad["subspaces"][r["subspace"]]["run"]) / "export" / base
        out[f"autodistil-{base[7:]}"] = {"system": "autodistil", "budget": base[7:], "folder": folder}
    nb = json.loads((WORK / "nas-bert" / "results.json").read_text())
    for r, b in zip(nb["results"], args.budgets):
        row = {k: r[k] for k in ("arch", "table_loss", "whole_loss", "table_latency_ms", "measured_latency_ms")}
        row |= {"onnx_max_abs_diff": r["onnx_max_abs_diff"], "distill": r.get("distill")}
        out[f"nas-bert-{b / 1e6:g}M"] = {"system": "nas-bert", "budget": f"{b / 1e6:g}M", **row}
        out[f"nas-bert-{b / 1e6:g}M"]["folder"] = WORK / "nas-bert" / r["model_dir"]
    for row in out.values():
        row["parameters"], row["parameters_nonembedding"] = counts(row["folder"])
    return out


def glue(args: argparse.Namespace, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Step 4: benchmarks/glue_students.py (results reused when it runs again); its JSON rows by model name."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "glue_students.py"), "--teacher", "--name", "nas_bert_glue"]
    cmd += [f"{k}={v['folder']}" for k, v in rows.items()] + ["--tasks", *args.tasks, "--out", str(WORK / "glue")]
    cmd += ["--train-limit", args.train_limit, "--dev-limit", args.dev_limit, "--epochs", args.epochs]
    cmd += ["--max-seq-len", "64", "--lr", *args.lr, "--seeds", "1", "--threads", str(args.threads)]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return {r["model"]: r for r in json.loads((RESULTS / "nas_bert_glue.json").read_text())["rows"]}


def report(args: argparse.Namespace, rows: dict[str, dict[str, Any]], scores: dict[str, Any], walls) -> None:
    first = next(iter(scores.values()))["tasks"]
    heads = [f"{t} {'/'.join(m.split('_')[0] for m in first[t]['metrics'])}" for t in args.tasks]
    lines = [
        "# NAS-BERT beside MoS and AutoDistil at equal size and distillation wall time",
        "",
        f"Distillation: {args.minutes:g} min of wall time per method on this machine ({args.threads} threads, one run "
        f"at a time): MoS neuron-wise (configs/bert_quickstart.yaml) {args.minutes:g} min; AutoDistil "
        f"(configs/bert_autodistil.yaml) {args.minutes / 3:g} min per sub-space; NAS-BERT (configs/bert_nasbert.yaml) "
        f"{args.minutes - args.kd_minutes * len(args.budgets):g} min block-wise + {args.kd_minutes:g} min end-to-end "
        "KD per pick. Sizes: MoS and AutoDistil searched under the same budgets (parameters with the embeddings); "
        "NAS-BERT under each MoS student's non-embedding parameters (its embeddings are the teacher's, 11.9M). "
        f"GLUE: {', '.join(args.tasks)}, {args.train_limit} training examples per task (seeded, 0 = all), dev "
        f"{args.dev_limit} (0 = all), {args.epochs} epochs, lr {' '.join(args.lr)}, batch 32, 64 tokens, seed 1, "
        "the same for every row. Scores in percent.",
        "",
        "| student | system | budget | params (all / non-emb.) | " + " | ".join(heads) + " | mean |",
        "|---|---|---|---|" + "---:|" * (len(heads) + 1),
    ]
    for name, row in [*rows.items(), ("teacher", {"system": "teacher", "budget": "-"})]:
        s = scores[name]
        row.setdefault("parameters", s["parameters"])
        size = f"{row['parameters'] / 1e6:.2f}M / " + (
            f"{row['parameters_nonembedding'] / 1e6:.2f}M" if "parameters_nonembedding" in row else "-"
        )
        cells = [" / ".join(f"{v:.1f}" for v in s["tasks"][t]["metrics"].values()) for t in args.tasks]
        lead = f"| {name} | {row['system']} | {row['budget']} | {size} | "
        lines.append(lead + " | ".join(cells) + f" | {s['score']:.1f} |")
        row["glue"] = {t: s["tasks"][t]["metrics"] for t in args.tasks} | {"mean": s["score"]}
    head = "| student | arch (non-identity ops) | table loss | whole loss (after KD) | latency table / measured (ms) "
    lines += ["", "## NAS-BERT picks", "", head + "| ONNX max diff |", "|---|---|---:|---:|---:|---:|"]
    for name, row in rows.items():
        if row["system"] == "nas-bert":
            ops = " ".join(op for op in row["arch"] if op != "identity")
            after = f" ({row['distill']['whole_loss_after']:.4f})" if row.get("distill") else ""
            lines.append(f"| {name} | {ops} | {row['table_loss']:.4f} | {row['whole_loss']:.4f}{after} | "
                         f"{row['table_latency_ms']:.2f} / {row['measured_latency_ms']:.2f} | "
                         f"{row['onnx_max_abs_diff']:.1e} |")  # fmt: skip
    lines += ["", "Runs (wall minutes of each command, search and export included): "
              + ", ".join(f"{k} {v / 60:.1f}" for k, v in walls.items()) + "."]  # fmt: skip
    lines += ["", f"Command: `python benchmarks/nas_bert.py {' '.join(sys.argv[1:])}`"]
    out = [{"model": k, **{a: (relative(b) if a == "folder" else b) for a, b in v.items()}} for k, v in rows.items()]
    meta = {**machine(), "command": " ".join(["python", "benchmarks/nas_bert.py", *sys.argv[1:]]), "walls_s": walls}
    meta |= {"minutes": args.minutes, "kd_minutes": args.kd_minutes, "compute_matched_by": "distillation wall time"}
    write("nas_bert", meta, out, lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=12.0, help="distillation wall minutes of each method")
    ap.add_argument("--kd-minutes", type=float, default=1.0, help="NAS-BERT's end-to-end KD per pick (minutes)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[8e6, 15e6], help="parameters with the embeddings")
    ap.add_argument("--nasbert-floor", type=float, default=1.8e6, help="NAS-BERT's smallest budget (non-emb.)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tasks", nargs="+", default=["CoLA", "SST-2", "MRPC", "STS-B", "RTE"])
    ap.add_argument("--train-limit", default="1000")
    ap.add_argument("--dev-limit", default="0")
    ap.add_argument("--epochs", default="3")
    ap.add_argument("--lr", nargs="+", default=["1e-4"])
    args = ap.parse_args()
    if args.minutes - args.kd_minutes * len(args.budgets) <= 0:
        ap.error("--minutes must exceed --kd-minutes times the number of budgets (NAS-BERT's block-wise time)")
    bert_students.WORK = WORK  # its run_jobs logs to WORK/logs
    walls_path = WORK / "walls.json"
    walls = json.loads(walls_path.read_text()) if walls_path.is_file() else {}
    walls.update(distill(args))
    walls_path.write_text(json.dumps(walls, indent=1))
    rows = students(args)
    report(args, rows, glue(args, rows), walls)


if __name__ == "__main__":
    main()
